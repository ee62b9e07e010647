package cluster

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/idle-worker/idle-worker/member"
)

// fakeWorker owns what it was told to acquire.
type fakeWorker struct {
	mu       sync.Mutex
	owned    []int
	calls    []string
	verified []int
	failNext error
}

func (w *fakeWorker) Acquire(_ context.Context, parts []int) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls = append(w.calls, "acquire")
	if err := w.failNext; err != nil {
		w.failNext = nil
		return err
	}
	w.owned = sortedUnion(w.owned, parts)
	return nil
}

func (w *fakeWorker) Release(_ context.Context, parts []int) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls = append(w.calls, "release")
	w.owned = slices.DeleteFunc(w.owned, func(p int) bool { return slices.Contains(parts, p) })
	return nil
}

func (w *fakeWorker) ReleaseAll(context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls = append(w.calls, "release all")
	w.owned = nil
	return nil
}

func (w *fakeWorker) Verify(_ context.Context, parts []int) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls = append(w.calls, "verify")
	w.verified = append(w.verified, parts...)
	// The other member's claim is the latest: the contested ones are lost.
	w.owned = slices.DeleteFunc(w.owned, func(p int) bool { return slices.Contains(parts, p) })
	return nil
}

func (w *fakeWorker) Owned() []int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.owned)
}

func sortedUnion(a, b []int) []int {
	out := slices.Clone(a)
	for _, p := range b {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// fakeMembers is a fixed view: the members named, each reporting the
// partitions given; Self's report follows SetOwned.
type fakeMembers struct {
	mu       sync.Mutex
	self     string
	others   map[string][]int
	reported []int
	left     bool
	changes  chan struct{}
	conflict chan error
	leftAt   []string // the worker's calls when Leave came
	w        *fakeWorker
}

func (m *fakeMembers) Name() string { return m.self }
func (m *fakeMembers) View() member.View {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := member.View{Self: m.self, Partitions: 8}
	v.Members = append(v.Members, member.Member{Name: m.self, Partitions: slices.Clone(m.reported)})
	for name, parts := range m.others {
		v.Members = append(v.Members, member.Member{Name: name, Partitions: parts})
	}
	slices.SortFunc(v.Members, func(a, b member.Member) int {
		if a.Name < b.Name {
			return -1
		}
		return 1
	})
	return v
}
func (m *fakeMembers) Changes() <-chan struct{} { return m.changes }
func (m *fakeMembers) Conflict() <-chan error   { return m.conflict }
func (m *fakeMembers) SetOwned(parts []int) {
	m.mu.Lock()
	m.reported = slices.Clone(parts)
	m.mu.Unlock()
}
func (m *fakeMembers) Leave(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.left = true
	m.w.mu.Lock()
	m.leftAt = slices.Clone(m.w.calls)
	m.w.mu.Unlock()
	return nil
}

func newFakes(others map[string][]int) (*fakeWorker, *fakeMembers) {
	w := &fakeWorker{}
	return w, &fakeMembers{self: "me", others: others, changes: make(chan struct{}, 1), conflict: make(chan error, 1), w: w}
}

// waitUntil polls cond until it holds or 5 s pass.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5 s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestAloneClaimsAllThenReleasesBeforeLeaving: a lone member claims every
// partition, is settled, reports them; on stop it releases all and only
// then leaves.
func TestAloneClaimsAllThenReleasesBeforeLeaving(t *testing.T) {
	w, m := newFakes(nil)
	c, err := New(w, m, Config{Partitions: 8, Interval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, time.Second) }()
	select {
	case <-c.Settled():
	case <-time.After(5 * time.Second):
		t.Fatal("not settled")
	}
	if got := w.Owned(); len(got) != 8 {
		t.Fatalf("owned %v; want all 8", got)
	}
	waitUntil(t, "owned partitions reported", func() bool { return len(m.View().Members[0].Partitions) == 8 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !m.left || len(m.leftAt) == 0 || m.leftAt[len(m.leftAt)-1] != "release all" {
		t.Fatalf("left %v after %v; want a release of all first", m.left, m.leftAt)
	}
}

// TestSharesWithAnotherMember: with a second live member owning nothing,
// the controller claims only what rendezvous assigns to it, and hands over
// what it holds of the other's share.
func TestSharesWithAnotherMember(t *testing.T) {
	w, m := newFakes(map[string][]int{"other": nil})
	w.owned = []int{0, 1, 2, 3, 4, 5, 6, 7} // it held everything before "other" joined
	c, err := New(w, m, Config{Partitions: 8, Interval: 5 * time.Millisecond, MaxMoves: 8})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, time.Second) }()
	assigned := member.Assign([]string{"me", "other"}, 8)
	var mine []int
	for p, owner := range assigned {
		if owner == "me" {
			mine = append(mine, p)
		}
	}
	waitUntil(t, "the other's share released", func() bool { return slices.Equal(w.Owned(), mine) })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestConflictStops: a name conflict stops the controller with the error,
// after releasing everything.
func TestConflictStops(t *testing.T) {
	w, m := newFakes(nil)
	c, err := New(w, m, Config{Partitions: 4, Interval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background(), time.Second) }()
	<-c.Settled()
	m.conflict <- member.ErrNameTaken
	if err := <-done; !errors.Is(err, member.ErrNameTaken) {
		t.Fatalf("Run: %v; want ErrNameTaken", err)
	}
	if len(w.Owned()) != 0 || !m.left {
		t.Fatalf("after a conflict: owned %v, left %v; want nothing, left", w.Owned(), m.left)
	}
}

// TestFailedClaimRetried: a claim the store refuses (another member's won)
// is planned again at the next round.
func TestFailedClaimRetried(t *testing.T) {
	w, m := newFakes(nil)
	w.failNext = errors.New("claim lost")
	c, err := New(w, m, Config{Partitions: 4, Interval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = c.Run(ctx, time.Second) }()
	<-c.Settled()
	if got := w.Owned(); len(got) != 4 {
		t.Fatalf("owned %v after a failed claim; want all 4 claimed at the next round", got)
	}
}

// TestContestedVerified: when another live member reports owning
// partitions this one owns too (both claimed: their views differed), the
// controller asks the store, and drops those it lost.
func TestContestedVerified(t *testing.T) {
	w, m := newFakes(map[string][]int{"other": {0, 1, 2, 3}})
	w.owned = []int{0, 1, 2, 3}
	c, err := New(w, m, Config{Partitions: 4, Interval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, time.Second) }()
	waitUntil(t, "contested partitions verified", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.verified) >= 4
	})
	cancel()
	<-done
	w.mu.Lock()
	defer w.mu.Unlock()
	if got := w.verified[:4]; !slices.Equal(got, []int{0, 1, 2, 3}) {
		t.Errorf("verified %v; want [0 1 2 3]", got)
	}
}
