package coordinator

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestList(t *testing.T) {
	c := New(Policy{DefaultIdleTimeout: time.Minute})
	for i, k := range []string{"c", "a", "e", "b", "d"} {
		c.MarkActivityWithTimeout(k, t0.Add(time.Duration(i)*time.Second), time.Duration(i+1)*time.Minute)
	}
	c.MarkDraining("e", t0)
	c.MarkQuiesced("b", t0)
	now := t0.Add(10 * time.Second)
	vowel := func(k string) bool { return strings.ContainsAny(k, "aeiou") }
	tests := []struct {
		name      string
		match     func(string) bool
		limit     int
		wantKeys  []string
		wantTotal int
	}{
		{name: "all", limit: 0, wantKeys: []string{"a", "b", "c", "d", "e"}, wantTotal: 5},
		{name: "negative limit", limit: -1, wantKeys: []string{"a", "b", "c", "d", "e"}, wantTotal: 5},
		{name: "limit", limit: 2, wantKeys: []string{"a", "b"}, wantTotal: 5},
		{name: "limit above total", limit: 10, wantKeys: []string{"a", "b", "c", "d", "e"}, wantTotal: 5},
		{name: "match", match: vowel, wantKeys: []string{"a", "e"}, wantTotal: 2},
		{name: "match and limit", match: vowel, limit: 1, wantKeys: []string{"a"}, wantTotal: 2},
		{name: "no match", match: func(string) bool { return false }, wantKeys: []string{}, wantTotal: 0},
	}
	want := map[string]Backend{
		"c": {Key: "c", State: Running, LastActive: t0, IdleFor: 10 * time.Second, IdleTimeout: time.Minute},
		"a": {Key: "a", State: Running, LastActive: t0.Add(time.Second), IdleFor: 9 * time.Second, IdleTimeout: 2 * time.Minute},
		"e": {Key: "e", State: Draining, LastActive: t0.Add(2 * time.Second), IdleFor: 8 * time.Second, IdleTimeout: 3 * time.Minute},
		"b": {Key: "b", State: Quiesced, LastActive: t0.Add(3 * time.Second), IdleFor: 7 * time.Second, IdleTimeout: 4 * time.Minute},
		"d": {Key: "d", State: Running, LastActive: t0.Add(4 * time.Second), IdleFor: 6 * time.Second, IdleTimeout: 5 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, total := c.List(now, tt.match, tt.limit)
			keys := make([]string, len(got))
			for i, b := range got {
				keys[i] = b.Key
				g, _ := c.Get(b.Key, now)
				w := want[b.Key]
				if b.State != w.State || !b.LastActive.Equal(w.LastActive) || b.IdleFor != w.IdleFor ||
					b.IdleTimeout != w.IdleTimeout || b.Generation != g.Generation {
					t.Errorf("List entry %s: got %+v; want %+v, generation %d", b.Key, b, w, g.Generation)
				}
			}
			if !slices.Equal(keys, tt.wantKeys) || total != tt.wantTotal {
				t.Errorf("List: got %v, total %d; want %v, total %d", keys, total, tt.wantKeys, tt.wantTotal)
			}
		})
	}
}

// TestCount checks the per-state counts and Len. Each case builds its
// history on its own Coordinator.
func TestCount(t *testing.T) {
	tests := []struct {
		name  string
		steps []step            // on a fresh Coordinator with a 1 s default timeout
		want  [Quiesced + 1]int // indexed by State
	}{
		{name: "empty", want: [4]int{}},
		{name: "three running", steps: []step{stepMark("a", 0), stepMark("b", 0), stepMark("c", 0)},
			want: [4]int{Running: 3}},
		{name: "one draining", steps: []step{stepMark("a", 0), stepMark("b", 0), stepMark("c", 0),
			stepDrain("a", 0)}, want: [4]int{Running: 2, Draining: 1}},
		{name: "draining to quiesced", steps: []step{stepMark("a", 0), stepMark("b", 0), stepMark("c", 0),
			stepDrain("a", 0), stepQuiesced("a", 0)}, want: [4]int{Running: 2, Quiesced: 1}},
		{name: "collected", steps: []step{stepMark("a", 0), stepMark("b", 0), stepMark("c", 0),
			stepDrain("a", 0), stepQuiesced("a", 0), stepCollect(time.Second)}, want: [4]int{Draining: 2, Quiesced: 1}},
		{name: "rearm one", steps: []step{stepMark("a", 0), stepMark("b", 0), stepMark("c", 0),
			stepDrain("a", 0), stepQuiesced("a", 0), stepCollect(time.Second), stepMark("b", 0)},
			want: [4]int{Running: 1, Draining: 1, Quiesced: 1}},
		{name: "remove quiesced", steps: []step{stepMark("a", 0), stepMark("b", 0), stepMark("c", 0),
			stepDrain("a", 0), stepQuiesced("a", 0), stepCollect(time.Second), stepMark("b", 0), stepRemove("a")},
			want: [4]int{Running: 1, Draining: 1}},
		{name: "remove untracked", steps: []step{stepMark("a", 0), stepMark("b", 0), stepMark("c", 0),
			stepDrain("a", 0), stepQuiesced("a", 0), stepCollect(time.Second), stepMark("b", 0), stepRemove("a"),
			stepRemove("zz")}, want: [4]int{Running: 1, Draining: 1}},
		{name: "remove all", steps: []step{stepMark("a", 0), stepMark("b", 0), stepMark("c", 0),
			stepDrain("a", 0), stepQuiesced("a", 0), stepCollect(time.Second), stepMark("b", 0), stepRemove("a"),
			stepRemove("zz"), stepRemove("b"), stepRemove("c")}, want: [4]int{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(Policy{DefaultIdleTimeout: time.Second})
			runSteps(t, c, tt.steps)
			total := 0
			for s := Running; s <= Quiesced; s++ {
				total += tt.want[s]
				if got := c.Count(s); got != tt.want[s] {
					t.Errorf("Count(%v): got %d; want %d", s, got, tt.want[s])
				}
			}
			if got := c.Len(); got != total {
				t.Errorf("Len: got %d; want %d", got, total)
			}
			for _, s := range []State{0, Quiesced + 1, 255} {
				if got := c.Count(s); got != 0 {
					t.Errorf("Count(%d): got %d; want 0", s, got)
				}
			}
			checkInvariants(t, c)
		})
	}
}

func TestStrings(t *testing.T) {
	tests := []struct {
		name string
		got  string
		want string
	}{
		{name: "running", got: Running.String(), want: "running"},
		{name: "draining", got: Draining.String(), want: "draining"},
		{name: "quiesced", got: Quiesced.String(), want: "quiesced"},
		{name: "zero state", got: State(0).String(), want: "unknown"},
		{name: "bad state", got: State(200).String(), want: "unknown"},
		{name: "idle timeout", got: IdleTimeout.String(), want: "idle_timeout"},
		{name: "broker shutdown", got: BrokerShutdown.String(), want: "broker_shutdown"},
		{name: "maintenance", got: Maintenance.String(), want: "maintenance"},
		{name: "zero reason", got: Reason(0).String(), want: "unknown"},
		{name: "bad reason", got: Reason(99).String(), want: "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %q; want %q", tt.got, tt.want)
			}
		})
	}
}
