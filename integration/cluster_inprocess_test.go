package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/internal/natstest"
	"github.com/idle-worker/idle-worker/partition"
)

// clusterParts is the partition count of the in-process cluster tests.
const clusterParts = 4

// startClustered starts a clustered worker (it owns no partition until
// Acquire) with a store of its own on url's JetStream, on a connection of
// its own, which the test may close to kill it.
func startClustered(t *testing.T, url string, timeout time.Duration) (*testWorker, *nats.Conn) {
	t.Helper()
	nc := connect(t, url)
	st := relOpenStore(t, nc, clusterParts)
	p := coordinator.DefaultPolicy()
	p.DefaultIdleTimeout = timeout
	return startWorkerOn(t, nc, bus.WorkerConfig{Policy: p, Store: st, Cluster: true, MaxTimeout: time.Hour}), nc
}

func allClusterParts() []int {
	ps := make([]int, clusterParts)
	for i := range ps {
		ps[i] = i
	}
	return ps
}

// TestTakeoverFromWarmState: worker B, a standby receiving every heartbeat,
// takes the partitions of worker A over when A dies. A backend silent since
// before A died is drained at its own deadline (the last heartbeat B saw
// plus its timeout), not a whole timeout after the takeover, and never
// before that deadline; one A had drained keeps its id.
func TestTakeoverFromWarmState(t *testing.T) {
	s := startServer(t, natstest.JetStream())
	url := s.ClientURL()
	const timeout = 2 * time.Second
	a, anc := startClustered(t, url, timeout)
	b, _ := startClustered(t, url, timeout)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Acquire(ctx, allClusterParts()); err != nil {
		t.Fatal(err)
	}
	nc := connect(t, url)
	sub := subscribe(t, nc, bus.MustSubjects(prefix).Quiesce(">"))

	// "early" is drained by A before the takeover; "silent" goes quiet
	// now; "late" keeps heartbeating until A dies.
	heartbeat(t, nc, "warm.early", timeoutBody(300*time.Millisecond))
	ev := nextEventPrefix(t, sub, prefix, 5*time.Second)
	silentAt, _ := heartbeat(t, nc, "warm.silent", "")
	var lateAt time.Time
	for range 5 {
		lateAt, _ = heartbeat(t, nc, "warm.late", "")
		time.Sleep(200 * time.Millisecond) // the heartbeats' own pace
	}

	// A dies (its connection closes: Run ends with an error, expected);
	// B takes its partitions over.
	anc.Close()
	a.once.Do(func() { <-a.done })
	takeover := time.Now()
	if err := b.Acquire(ctx, allClusterParts()); err != nil {
		t.Fatal(err)
	}
	got := map[string]event{}
	deadline := time.Now().Add(3 * timeout)
	for len(got) < 2 && time.Now().Before(deadline) {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			break
		}
		e := checkEvent(t, m, prefix, time.Now())
		if e.Key == "warm.early" {
			if e.ID != ev.ID {
				t.Errorf("warm.early re-sent with id %s; want its id %s", e.ID, ev.ID)
			}
			continue
		}
		if _, dup := got[e.Key]; dup {
			t.Errorf("%s quiesced twice: %s", e.Key, e.ID)
		}
		got[e.Key] = e
		due := silentAt.Add(timeout)
		if e.Key == "warm.late" {
			due = lateAt.Add(timeout)
		}
		if e.arrived.Before(due) {
			t.Errorf("%s quiesced %v before its deadline", e.Key, due.Sub(e.arrived))
		}
		from := due
		if takeover.After(due) {
			from = takeover
		}
		if limit := from.Add(time.Second); e.arrived.After(limit) {
			t.Errorf("%s quiesced %v after its deadline (takeover %v after it): a takeover from warm state adds no grace",
				e.Key, e.arrived.Sub(due).Round(time.Millisecond), takeover.Sub(due).Round(time.Millisecond))
		}
	}
	for _, k := range []string{"warm.silent", "warm.late"} {
		if _, ok := got[k]; !ok {
			t.Errorf("%s never quiesced after the takeover", k)
		}
	}
	if st := b.Stats(); st.Claims != clusterParts || st.PartitionsOwned != clusterParts {
		t.Errorf("B: %d claims, %d owned; want %d, %d", st.Claims, st.PartitionsOwned, clusterParts, clusterParts)
	}
	expectNoMsg(t, sub, 500*time.Millisecond)
}

// TestHandOverKeepsEverything: A releases half its partitions, B acquires
// them: every backend is tracked by exactly one of them afterwards, no
// write is fenced, and A's released backends' records come back whole.
func TestHandOverKeepsEverything(t *testing.T) {
	s := startServer(t, natstest.JetStream())
	url := s.ClientURL()
	a, _ := startClustered(t, url, time.Hour)
	b, _ := startClustered(t, url, time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Acquire(ctx, allClusterParts()); err != nil {
		t.Fatal(err)
	}
	nc := connect(t, url)
	const n = 200
	for i := range n {
		heartbeat(t, nc, fmt.Sprintf("hand.k%d", i), "")
	}
	moved := []int{1, 3}
	if err := a.Release(ctx, moved); err != nil {
		t.Fatal(err)
	}
	if err := b.Acquire(ctx, moved); err != nil {
		t.Fatal(err)
	}
	sa, sb := a.Stats(), b.Stats()
	if got := sa.Running + sb.Running; got != n {
		t.Errorf("after the hand-over A tracks %d and B %d: %d in all; want %d", sa.Running, sb.Running, got, n)
	}
	if sb.Restored == 0 || sa.StoreFenced+sb.StoreFenced != 0 {
		t.Errorf("B restored %d, fenced writes %d; want some restored, none fenced", sb.Restored, sa.StoreFenced+sb.StoreFenced)
	}
	// Each key answers from its owner only: a heartbeat request gets one
	// reply whoever owns it.
	for i := range 20 {
		key := fmt.Sprintf("hand.k%d", i)
		if _, r := heartbeat(t, nc, key, ""); r.Key != key {
			t.Fatalf("heartbeat of %s answered %+v", key, r)
		}
	}
}

// TestMappedWorkersSplitIngest: with the partition mappings loaded into the
// server and IDLE_MAPPED's Router, each of two workers receives only the
// heartbeats of the partitions it owns: every heartbeat is applied once,
// answered once, by its partition's owner; a key the mappings do not
// cover (too many tokens) is refused once.
func TestMappedWorkersSplitIngest(t *testing.T) {
	subj := bus.MustSubjects(prefix)
	s := startServer(t, natstest.JetStream(), natstest.ConfigFile(mappingsConfig(t, subj, clusterParts)))
	url := s.ClientURL()
	start := func() *testWorker {
		nc := connect(t, url)
		st := relOpenStore(t, nc, clusterParts)
		return startWorkerOn(t, nc, bus.WorkerConfig{Policy: coordinator.DefaultPolicy(), Store: st, Cluster: true,
			Router: partition.NewRouter(subj), MaxTimeout: time.Hour})
	}
	a, b := start(), start()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Acquire(ctx, []int{0, 1}); err != nil {
		t.Fatal(err)
	}
	if err := b.Acquire(ctx, []int{2, 3}); err != nil {
		t.Fatal(err)
	}
	nc := connect(t, url)
	replies := subscribe(t, nc, "_INBOX.mapped.>")
	const n = 400
	want := map[*testWorker]uint64{}
	for i := range n {
		key := fmt.Sprintf("mapped.k%d", i)
		if partition.Of(key, clusterParts) < 2 {
			want[a]++
		} else {
			want[b]++
		}
		if err := nc.PublishRequest(subj.Activity(key), fmt.Sprintf("_INBOX.mapped.%d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	got := 0
	for got < n {
		if _, err := replies.NextMsg(bound); err != nil {
			t.Fatalf("%d of %d heartbeats answered: %v", got, n, err)
		}
		got++
	}
	expectNoMsg(t, replies, 300*time.Millisecond) // none answered twice
	for w, name := range map[*testWorker]string{a: "A", b: "B"} {
		if st := w.Stats(); st.Heartbeats != want[w] || st.Foreign != 0 {
			t.Errorf("worker %s applied %d heartbeats and received %d of other partitions; want %d and none", name, st.Heartbeats, st.Foreign, want[w])
		}
	}
	long := strings.Repeat("t.", bus.MaxKeyTokens) + "t" // one token too many
	m, err := nc.Request(subj.Activity(long), nil, bound)
	if err != nil {
		t.Fatal(err)
	}
	if r := refusal(t, m); !strings.Contains(r, "key") {
		t.Errorf("an unmapped key: refusal %q; want a bad key", r)
	}
}
