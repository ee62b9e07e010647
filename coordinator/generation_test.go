package coordinator

import (
	"testing"
	"time"
)

// TestGeneration checks when a backend's generation changes: a fresh one
// each time it becomes Running (first sight, rearm, re-add), never otherwise.
// Each case builds its history on its own Coordinator.
func TestGeneration(t *testing.T) {
	tests := []struct {
		name  string
		setup []step // on a fresh Coordinator with a 1 s default timeout
		do    []step
		key   string
		fresh bool // want a generation unseen during setup; else key's generation unchanged by do
	}{
		{name: "first sight of a", do: []step{stepMark("a", 0)}, key: "a", fresh: true},
		{name: "first sight of b", setup: []step{stepMark("a", 0)},
			do: []step{stepMark("b", 0)}, key: "b", fresh: true},
		{name: "refresh while running", setup: []step{stepMark("a", 0)},
			do: []step{stepMark("a", time.Millisecond)}, key: "a"},
		{name: "timeout change while running", setup: []step{stepMark("a", 0), stepMark("a", time.Millisecond)},
			do: []step{stepMarkTimeout("a", 0, time.Minute)}, key: "a"},
		{name: "drain", setup: []step{stepMark("a", 0)},
			do: []step{stepDrain("a", 0)}, key: "a"},
		{name: "quiesce", setup: []step{stepMark("a", 0), stepDrain("a", 0)},
			do: []step{stepQuiesced("a", 0)}, key: "a"},
		{name: "rearm", setup: []step{stepMark("a", 0), stepDrain("a", 0), stepQuiesced("a", 0)},
			do: []step{stepMark("a", 0)}, key: "a", fresh: true},
		{name: "collected", setup: []step{stepMark("a", 0), stepMark("b", 0)},
			do: []step{stepCollect(time.Hour)}, key: "a"},
		{name: "rearm after collect", setup: []step{stepMark("a", 0), stepCollect(time.Hour)},
			do: []step{stepMark("a", 0)}, key: "a", fresh: true},
		{name: "forced", setup: []step{stepMark("a", 0)},
			do: []step{stepForce("a", 0)}, key: "a"},
		{name: "rearm after force", setup: []step{stepMark("a", 0), stepForce("a", 0)},
			do: []step{stepMark("a", 0)}, key: "a", fresh: true},
		{name: "removed and re-added", setup: []step{stepMark("a", 0)},
			do: []step{stepRemove("a"), stepMark("a", 0)}, key: "a", fresh: true},
		{name: "removed and re-added again", setup: []step{stepMark("a", 0), stepRemove("a"), stepMark("a", 0)},
			do: []step{stepRemove("a"), stepMark("a", 0)}, key: "a", fresh: true},
		{name: "other key unaffected", setup: []step{stepMark("a", 0), stepMark("b", 0)},
			do: churnA(), key: "b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(Policy{DefaultIdleTimeout: time.Second})
			// seen maps every generation any backend had during setup to
			// its key.
			seen := map[uint64]string{}
			for _, s := range tt.setup {
				s(t, c)
				bs, _ := c.List(t0, nil, 0)
				for _, b := range bs {
					seen[b.Generation] = b.Key
				}
			}
			before, tracked := c.Get(tt.key, t0)
			if !tt.fresh && !tracked {
				t.Fatalf("Get(%q) before: untracked; want tracked", tt.key)
			}
			runSteps(t, c, tt.do)
			b, ok := c.Get(tt.key, t0)
			if !ok {
				t.Fatalf("Get(%q): untracked; want tracked", tt.key)
			}
			switch {
			case tt.fresh:
				if prev, dup := seen[b.Generation]; dup {
					t.Fatalf("got generation %d for %s; want a new one (already used by %s)", b.Generation, tt.key, prev)
				}
			case b.Generation != before.Generation:
				t.Fatalf("got generation %d; want unchanged %d", b.Generation, before.Generation)
			}
			checkInvariants(t, c)
		})
	}
}

// TestDueGeneration checks that a Due carries the generation of the running
// period that ended.
func TestDueGeneration(t *testing.T) {
	tests := []struct {
		name  string
		setup []step // on a fresh Coordinator with a 1 s default timeout
		at    time.Duration
		key   string // the one Due of CollectDue(t0+at)
	}{
		{name: "first period", setup: []step{stepMark("a", 0)}, at: time.Hour, key: "a"},
		{name: "after rearm", setup: []step{stepMark("a", 0), stepCollect(time.Second), stepMark("a", time.Minute)},
			at: time.Hour, key: "a"},
		// "b" was collected during the churn, so only "a" is due.
		{name: "after every transition", setup: append([]step{stepMark("a", 0), stepMark("b", 0)}, churnA()...),
			at: time.Hour, key: "a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(Policy{DefaultIdleTimeout: time.Second})
			runSteps(t, c, tt.setup)
			b, ok := c.Get(tt.key, t0)
			if !ok {
				t.Fatalf("Get(%q): untracked; want tracked", tt.key)
			}
			due := c.CollectDue(t0.Add(tt.at))
			if len(due) != 1 || due[0].Key != tt.key || due[0].Generation != b.Generation {
				t.Fatalf("CollectDue: got %+v; want %s with Generation %d", due, tt.key, b.Generation)
			}
			if after, _ := c.Get(tt.key, t0); after.Generation != b.Generation {
				t.Errorf("generation after the Due: got %d; want unchanged %d", after.Generation, b.Generation)
			}
			checkInvariants(t, c)
		})
	}
}
