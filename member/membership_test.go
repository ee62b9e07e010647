package member_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/internal/natstest"
	"github.com/idle-worker/idle-worker/member"
)

// Test timing: short, with room for a loaded machine under -race.
const (
	testInterval   = 50 * time.Millisecond
	testTimeout    = 400 * time.Millisecond
	testPartitions = 16
	waitBound      = 10 * time.Second
)

var testSubjects = bus.MustSubjects("idle")

func connect(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func testConfig(name string) member.Config {
	return member.Config{Name: name, Interval: testInterval, Timeout: testTimeout, Partitions: testPartitions}
}

// startMembers starts one Membership per name, each on its own connection
// to url, concurrently (each Start listens for the timeout), and stops
// them when the test ends.
func startMembers(t *testing.T, url string, names ...string) []*member.Membership {
	t.Helper()
	ms := make([]*member.Membership, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		nc := connect(t, url)
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), waitBound)
			defer cancel()
			ms[i], errs[i] = member.Start(ctx, nc, testSubjects, testConfig(name))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Start %s: %v", names[i], err)
		}
		t.Cleanup(ms[i].Stop)
	}
	return ms
}

// live returns the names m sees live (not leaving).
func live(m *member.Membership) []string { return m.View().Live() }

// waitLive waits until every m in ms sees exactly want live.
func waitLive(t *testing.T, ms []*member.Membership, want ...string) {
	t.Helper()
	natstest.WaitFor(t, waitBound, fmt.Sprintf("every member seeing %v live", want), func() bool {
		for _, m := range ms {
			if !slices.Equal(live(m), want) {
				return false
			}
		}
		return true
	})
}

func TestMembershipJoin(t *testing.T) {
	s := natstest.Start(t)
	ms := startMembers(t, s.ClientURL(), "a", "b", "c")
	waitLive(t, ms, "a", "b", "c")
	// Each reports its share; every view agrees on who owns what.
	for i, m := range ms {
		var parts []int
		for p := i; p < testPartitions; p += len(ms) {
			parts = append(parts, p)
		}
		m.SetOwned(parts)
	}
	want := []string{"a", "b", "c", "a", "b", "c", "a", "b", "c", "a", "b", "c", "a", "b", "c", "a"}
	natstest.WaitFor(t, waitBound, "every view's owners", func() bool {
		for _, m := range ms {
			if !slices.Equal(m.View().Owners(), want) {
				return false
			}
		}
		return true
	})
	// The views are one view.
	first := ms[0].View()
	for _, m := range ms[1:] {
		v := m.View()
		if fmt.Sprint(v.Members) != fmt.Sprint(first.Members) {
			t.Errorf("%s sees %+v; %s sees %+v", m.Name(), v.Members, ms[0].Name(), first.Members)
		}
		if v.Self != m.Name() || v.Partitions != testPartitions {
			t.Errorf("view of %s: Self %q, Partitions %d", m.Name(), v.Self, v.Partitions)
		}
	}
	for _, m := range ms {
		got, ok := first.Member(m.Name())
		if !ok || got.Instance != m.Instance() {
			t.Errorf("member %s: %+v, %v; want instance %s", m.Name(), got, ok, m.Instance())
		}
	}
}

// TestMembershipJoinLate: a member that starts later learns the members
// while it listens, and they learn of it once it joins.
func TestMembershipJoinLate(t *testing.T) {
	s := natstest.Start(t)
	ms := startMembers(t, s.ClientURL(), "a", "b")
	waitLive(t, ms, "a", "b")
	ms[0].SetOwned([]int{1, 2})
	natstest.WaitFor(t, waitBound, "b seeing a's partitions", func() bool {
		return slices.Equal(ms[1].View().Owners()[:3], []string{"", "a", "a"})
	})
	late := startMembers(t, s.ClientURL(), "c")[0]
	// Right after Start, c already knows a and b and what a owns.
	v := late.View()
	if got := v.Live(); !slices.Contains(got, "a") || !slices.Contains(got, "b") {
		t.Errorf("c's view right after Start: %v; want a and b in it", got)
	}
	if got, _ := v.Member("a"); !slices.Equal(got.Partitions, []int{1, 2}) {
		t.Errorf("c sees a owning %v; want [1 2]", got.Partitions)
	}
	waitLive(t, append(ms, late), "a", "b", "c")
}

func TestMembershipDeath(t *testing.T) {
	tests := []struct {
		name string
		kill func(m *member.Membership, nc *nats.Conn)
	}{
		{name: "stopped without leaving", kill: func(m *member.Membership, _ *nats.Conn) { m.Stop() }},
		{name: "connection closed", kill: func(_ *member.Membership, nc *nats.Conn) { nc.Close() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := natstest.Start(t)
			ms := startMembers(t, s.ClientURL(), "a", "b")
			ncC := connect(t, s.ClientURL())
			ctx, cancel := context.WithTimeout(context.Background(), waitBound)
			defer cancel()
			c, err := member.Start(ctx, ncC, testSubjects, testConfig("c"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.Stop)
			waitLive(t, []*member.Membership{ms[0], ms[1], c}, "a", "b", "c")
			killed := time.Now()
			tt.kill(c, ncC)
			waitLive(t, ms, "a", "b")
			// Not before the timeout: c's last heartbeat left at most one
			// interval before it died.
			if d := time.Since(killed); d < testTimeout-testInterval {
				t.Errorf("c counted dead %v after it died; want at least %v", d, testTimeout-testInterval)
			}
		})
	}
}

func TestMembershipLeave(t *testing.T) {
	s := natstest.Start(t)
	ms := startMembers(t, s.ClientURL(), "a", "b", "c")
	waitLive(t, ms, "a", "b", "c")
	c := ms[2]
	c.SetOwned([]int{3})
	natstest.WaitFor(t, waitBound, "a seeing c own 3", func() bool { return ms[0].View().Owners()[3] == "c" })
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()
	left := time.Now()
	if err := c.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	waitLive(t, ms[:2], "a", "b")
	// At once, not after the timeout; c is still listed, flagged.
	if d := time.Since(left); d >= testTimeout-testInterval {
		t.Errorf("c gone %v after Leave; want well under the timeout %v", d, testTimeout)
	}
	if got, ok := ms[0].View().Member("c"); !ok || !got.Leaving || len(got.Partitions) != 0 {
		t.Errorf("a sees c as %+v, %v; want it listed, leaving, owning nothing", got, ok)
	}
	if o := ms[0].View().Owners()[3]; o != "" {
		t.Errorf("partition 3 owned by %q after c left; want nobody", o)
	}
	// A restart under the same name joins at once (no clash with the
	// instance that left) and replaces it.
	c2 := startMembers(t, s.ClientURL(), "c")[0]
	if c2.Instance() == c.Instance() {
		t.Fatal("a restart has the same instance id")
	}
	waitLive(t, []*member.Membership{ms[0], ms[1], c2}, "a", "b", "c")
	if got, _ := ms[0].View().Member("c"); got.Instance != c2.Instance() || got.Leaving {
		t.Errorf("a sees c as %+v; want the new instance %s, not leaving", got, c2.Instance())
	}
	// Leave again does nothing; Stop after Leave does nothing.
	if err := c.Leave(ctx); err != nil {
		t.Errorf("second Leave: %v", err)
	}
	c.Stop()
}

// TestMembershipLeaveAfterStop: a member that stopped can still say
// goodbye, and the others drop it at once.
func TestMembershipLeaveAfterStop(t *testing.T) {
	s := natstest.Start(t)
	ms := startMembers(t, s.ClientURL(), "a", "b")
	waitLive(t, ms, "a", "b")
	ms[1].Stop()
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()
	if err := ms[1].Leave(ctx); err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, waitBound, "a seeing b leaving", func() bool {
		m, ok := ms[0].View().Member("b")
		return ok && m.Leaving
	})
}

func TestMembershipChanges(t *testing.T) {
	s := natstest.Start(t)
	a := startMembers(t, s.ClientURL(), "a")[0]
	drain := func() {
		select {
		case <-a.Changes():
		default:
		}
	}
	waitChange := func(what string, cond func(member.View) bool) {
		t.Helper()
		deadline := time.After(waitBound)
		for {
			select {
			case <-a.Changes():
				if cond(a.View()) {
					return
				}
			case <-deadline:
				t.Fatalf("no change showing %s within %v; view %+v", what, waitBound, a.View())
			}
		}
	}
	drain()
	b := startMembers(t, s.ClientURL(), "b")[0]
	waitChange("b joining", func(v member.View) bool { return slices.Equal(v.Live(), []string{"a", "b"}) })
	b.SetOwned([]int{5})
	waitChange("b owning 5", func(v member.View) bool { return v.Owners()[5] == "b" })
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()
	if err := b.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	waitChange("b leaving", func(v member.View) bool { return slices.Equal(v.Live(), []string{"a"}) })
	waitChange("b expiring", func(v member.View) bool { return len(v.Members) == 1 })
}

// TestSetOwnedSendsAtOnce: a change of the owned partitions goes out at
// once, not at the next interval.
func TestSetOwnedSendsAtOnce(t *testing.T) {
	const interval = 400 * time.Millisecond
	s := natstest.Start(t)
	watcher := connect(t, s.ClientURL())
	sub, err := watcher.SubscribeSync(member.Subject(testSubjects))
	if err != nil {
		t.Fatal(err)
	}
	if err := watcher.Flush(); err != nil {
		t.Fatal(err)
	}
	nc := connect(t, s.ClientURL())
	cfg := testConfig("a")
	cfg.Interval, cfg.Timeout = interval, 2*interval
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()
	m, err := member.Start(ctx, nc, testSubjects, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	for round := range 3 {
		if _, err := sub.NextMsg(waitBound); err != nil { // a regular heartbeat
			t.Fatal(err)
		}
		m.SetOwned([]int{round})
		msg, err := sub.NextMsg(interval / 2)
		if err != nil {
			t.Fatalf("round %d: no heartbeat within %v of SetOwned: %v", round, interval/2, err)
		}
		if want := fmt.Sprintf(`"partitions":[%d]`, round); !strings.Contains(string(msg.Data), want) {
			t.Fatalf("round %d: heartbeat %s; want %s", round, msg.Data, want)
		}
	}
	// The same set again sends nothing extra.
	before := m.Stats().Sent
	m.SetOwned([]int{2, 2, -1, testPartitions})
	if got := m.View(); got.Partitions != testPartitions {
		t.Fatalf("view partitions %d", got.Partitions)
	}
	if d := m.Stats().Sent - before; d > 1 {
		t.Errorf("%d heartbeats sent after SetOwned of the same set; want at most the regular one", d)
	}
}

// TestMembershipCluster: members connected to different nodes of a
// cluster see each other through the routes.
func TestMembershipCluster(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	var ms []*member.Membership
	for i, srv := range c.Servers {
		ms = append(ms, startMembers(t, srv.ClientURL(), fmt.Sprintf("n%d", i+1))...)
	}
	waitLive(t, ms, "n1", "n2", "n3")
	ms[2].Stop()
	waitLive(t, ms[:2], "n1", "n2")
}
