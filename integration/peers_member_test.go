package integration

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/cluster"
	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/internal/natstest"
	"github.com/idle-worker/idle-worker/member"
)

// memberAdapter is bus.Peers over a member.Membership, as cmd/idle-worker
// wires it.
type memberAdapter struct{ m *member.Membership }

func (a memberAdapter) Self() string { return a.m.Name() }

func (a memberAdapter) Members() []bus.MemberInfo {
	var out []bus.MemberInfo
	for _, mb := range a.m.View().Members {
		if !mb.Leaving {
			out = append(out, bus.MemberInfo{Name: mb.Name, Partitions: mb.Partitions})
		}
	}
	return out
}

// Workers with the real membership and controllers: once they settle,
// P.admin.members lists every partition once and a list through any of
// them has every backend; after one leaves, the others claim its
// partitions and the list is whole again, its backends restored from the
// store.
func TestPeersWithMembership(t *testing.T) {
	t.Parallel()
	const partitions = 8
	srv := startServer(t, natstest.JetStream())
	subjects := bus.MustSubjects(prefix)
	stops := make([]context.CancelFunc, 3)
	for i := range stops {
		nc := connect(t, srv.ClientURL())
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		m, err := member.Start(ctx, nc, subjects, member.Config{
			Name: fmt.Sprintf("m%d", i), Interval: 50 * time.Millisecond, Timeout: 500 * time.Millisecond, Partitions: partitions,
		})
		cancel()
		if err != nil {
			t.Fatalf("member.Start: %v", err)
		}
		t.Cleanup(m.Stop)
		w := startWorkerOn(t, nc, bus.WorkerConfig{
			Policy:  coordinator.Policy{DefaultIdleTimeout: longTimeout},
			Store:   relOpenStore(t, nc, partitions),
			Cluster: true,
			Peers:   memberAdapter{m},
		})
		ctl, err := cluster.New(w, m, cluster.Config{Partitions: partitions, Interval: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		cctx, stop := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- ctl.Run(cctx, bound) }()
		var once sync.Once
		stops[i] = func() { once.Do(func() { stopController(t, i, stop, done) }) }
		t.Cleanup(func() { stops[i]() })
	}
	nc := connect(t, srv.ClientURL())

	settled := func(names ...string) {
		t.Helper()
		var last string
		waitFor(t, 4*bound, func() bool {
			var r bus.MembersReply
			m := adminRequest(t, nc, "members", "", &r)
			last = string(m.Data)
			return assigned(r, names, partitions)
		})
		t.Logf("settled: %s", last)
	}
	settled("m0", "m1", "m2")

	var keys []string
	for i := range 24 {
		k := fmt.Sprintf("node%d.svc.%d", i%5, i)
		heartbeat(t, nc, k, "")
		keys = append(keys, k)
	}
	slices.Sort(keys)
	whole := func() {
		t.Helper()
		for range 6 {
			r := adminList(t, nc, "") // complete: no partial members
			if got := listKeys(r); !slices.Equal(got, keys) || r.Total != len(keys) {
				t.Fatalf("list: got %v total %d; want %v", got, r.Total, keys)
			}
		}
	}
	whole()

	stops[2]()
	settled("m0", "m1")
	whole()
}

// stopController stops controller i (it releases its partitions and
// leaves) and waits, bounded, for its Run to return.
func stopController(t *testing.T, i int, stop context.CancelFunc, done <-chan error) {
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("controller m%d: %v", i, err)
		}
	case <-time.After(2 * bound):
		t.Errorf("controller m%d did not stop", i)
	}
}

// assigned reports whether the members reply r shows exactly names, each
// owning the partitions member.Assign gives it: the workers have settled,
// with no hand-over in flight.
func assigned(r bus.MembersReply, names []string, partitions int) bool {
	if r.Partitions != partitions || len(r.Members) != len(names) {
		return false
	}
	owners := member.Assign(names, partitions)
	for i, mb := range r.Members {
		var want []int
		for p, o := range owners {
			if o == mb.Name {
				want = append(want, p)
			}
		}
		if mb.Name != names[i] || !slices.Equal(mb.Partitions, want) {
			return false
		}
	}
	return true
}
