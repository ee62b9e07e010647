package coordinator

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// TestForceCollected is the former TestQuiesce: a forced drain, collected
// at the time it was asked for, describes the running period that ended;
// Force refuses, changing nothing, a backend that is not Running.
func TestForceCollected(t *testing.T) {
	tests := []struct {
		name    string
		key     string
		reason  Reason
		wantOK  bool
		wantDue Due
	}{
		{name: "running", key: "run", reason: Maintenance, wantOK: true,
			wantDue: Due{Key: "run", IdleFor: 5 * time.Second, ConfiguredTimeout: time.Minute, Reason: Maintenance, Attempt: 1}},
		{name: "running, broker shutdown", key: "run", reason: BrokerShutdown, wantOK: true,
			wantDue: Due{Key: "run", IdleFor: 5 * time.Second, ConfiguredTimeout: time.Minute, Reason: BrokerShutdown, Attempt: 1}},
		{name: "draining untouched", key: "drain", reason: Maintenance, wantOK: false},
		{name: "quiesced untouched", key: "quiet", reason: Maintenance, wantOK: false},
		{name: "untracked", key: "nobody", reason: Maintenance, wantOK: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(Policy{DefaultIdleTimeout: time.Minute})
			for _, k := range []string{"run", "drain", "quiet"} {
				c.MarkActivity(k, t0)
			}
			c.MarkDraining("drain", t0)
			c.MarkQuiesced("quiet", t0)
			before, _ := c.Get(tt.key, t0)
			now := t0.Add(5 * time.Second)
			ok := c.Force(tt.key, now, tt.reason)
			if ok != tt.wantOK {
				t.Fatalf("Force(%q): got ok %v; want %v", tt.key, ok, tt.wantOK)
			}
			got := c.CollectDue(now)
			after, _ := c.Get(tt.key, now)
			if !ok {
				if len(got) != 0 {
					t.Errorf("CollectDue after a refused Force: got %+v; want none", got)
				}
				if after.State != before.State {
					t.Errorf("state: got %v; want unchanged %v", after.State, before.State)
				}
				checkInvariants(t, c)
				return
			}
			if len(got) != 1 {
				t.Fatalf("CollectDue after Force: got %v; want [%s]", dueKeys(got), tt.key)
			}
			w, g := tt.wantDue, got[0]
			if g.Key != w.Key || g.IdleFor != w.IdleFor || g.ConfiguredTimeout != w.ConfiguredTimeout || g.Reason != w.Reason ||
				!g.Deadline.Equal(t0.Add(time.Minute)) || g.Generation != before.Generation || g.Attempt != w.Attempt || g.Forgotten {
				t.Errorf("forced Due: got %+v; want %+v, Deadline %v, Generation %d", g, w, t0.Add(time.Minute), before.Generation)
			}
			if after.State != Draining || after.Reason != tt.reason || after.Attempts != 1 {
				t.Errorf("after the forced drain: got %+v; want draining, reason %v, 1 attempt", after, tt.reason)
			}
			if due := c.CollectDue(t0.Add(time.Hour)); len(due) != 0 {
				t.Errorf("CollectDue after the forced drain: got %v; want none", dueKeys(due))
			}
			checkInvariants(t, c)
		})
	}
}

// TestForceMatching is the former TestQuiesceMatching: an operator's drain
// of every backend whose key matches is Force over those keys, then one
// CollectDue. The order among backends forced at the same time is not
// promised, so the set is checked.
func TestForceMatching(t *testing.T) {
	prefix := func(p string) func(string) bool { return func(k string) bool { return strings.HasPrefix(k, p) } }
	tests := []struct {
		name      string
		match     func(string) bool
		wantKeys  []string // sorted
		wantCount [Quiesced + 1]int
	}{
		{name: "prefix", match: prefix("svc.a."), wantKeys: []string{"svc.a.1", "svc.a.2", "svc.a.3"},
			wantCount: [Quiesced + 1]int{Running: 1, Draining: 4, Quiesced: 1}},
		{name: "all", match: func(string) bool { return true }, wantKeys: []string{"svc.a.1", "svc.a.2", "svc.a.3", "svc.b.1"},
			wantCount: [Quiesced + 1]int{Running: 0, Draining: 5, Quiesced: 1}},
		{name: "none", match: func(string) bool { return false }, wantKeys: []string{},
			wantCount: [Quiesced + 1]int{Running: 4, Draining: 1, Quiesced: 1}},
		{name: "only non-running match", match: prefix("svc.c."), wantKeys: []string{},
			wantCount: [Quiesced + 1]int{Running: 4, Draining: 1, Quiesced: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(Policy{DefaultIdleTimeout: time.Minute})
			// Inserted out of order and at different times so the heap order
			// differs from the key order.
			keys := []string{"svc.a.3", "svc.b.1", "svc.a.1", "svc.c.drain", "svc.a.2", "svc.c.quiet"}
			for i, k := range keys {
				c.MarkActivity(k, t0.Add(time.Duration(6-i)*time.Second))
			}
			c.MarkDraining("svc.c.drain", t0.Add(7*time.Second))
			c.MarkQuiesced("svc.c.quiet", t0.Add(7*time.Second))
			now := t0.Add(10 * time.Second)
			for _, k := range keys {
				if !tt.match(k) {
					continue
				}
				st, _ := c.State(k)
				if got, want := c.Force(k, now, BrokerShutdown), st == Running; got != want {
					t.Errorf("Force(%q) of a %v backend: got %v; want %v", k, st, got, want)
				}
			}
			got := c.CollectDue(now)
			gotKeys := dueKeys(got)
			slices.Sort(gotKeys)
			if !slices.Equal(gotKeys, tt.wantKeys) {
				t.Fatalf("CollectDue after Force: got %v; want the set %v", dueKeys(got), tt.wantKeys)
			}
			for _, d := range got {
				b, _ := c.Get(d.Key, now)
				if d.Reason != BrokerShutdown || d.IdleFor != now.Sub(b.LastActive) || b.State != Draining || d.Attempt != 1 {
					t.Errorf("%s: got %+v, state %v; want reason broker_shutdown, idle %v, attempt 1, draining", d.Key, d, b.State, now.Sub(b.LastActive))
				}
			}
			for s := Running; s <= Quiesced; s++ {
				if got := c.Count(s); got != tt.wantCount[s] {
					t.Errorf("Count(%v): got %d; want %d", s, got, tt.wantCount[s])
				}
			}
			if b, _ := c.Get("svc.c.quiet", now); b.State != Quiesced {
				t.Errorf("quiesced backend: got %v; want untouched", b.State)
			}
			checkInvariants(t, c)
		})
	}
}

// TestForce walks Force through its cases. Every case starts from the same
// Coordinator: "run" (1 min timeout), "early" (10 s) and "late" (1 h), all
// Running and active at t0; "drain" reported draining and "quiet" quiesced
// at t0. Redelivery is off. Each case runs ops, then checks the Dues of one
// CollectDue.
func TestForce(t *testing.T) {
	type op struct {
		at     time.Duration
		do     string // "force", "mark", "drain", "quiesce", "remove", "collect"
		key    string
		reason Reason // force
		want   bool   // force, drain, quiesce, remove: the result
	}
	type wantDue struct {
		key    string
		reason Reason
		idle   time.Duration
	}
	tests := []struct {
		name string
		ops  []op
		// nextDeadline is NextDeadline after the ops.
		nextDeadline time.Duration
		at           time.Duration // of the CollectDue checked
		want         []wantDue     // in order
		wantState    State         // of "run" afterwards (0: untracked)
	}{
		{name: "running: due at the time asked for, not before",
			ops:          []op{{at: 5 * time.Second, do: "force", key: "run", reason: Maintenance, want: true}},
			nextDeadline: 5 * time.Second,
			at:           5 * time.Second, want: []wantDue{{"run", Maintenance, 5 * time.Second}}, wantState: Draining},
		{name: "running: not collected early",
			ops: []op{
				{at: 5 * time.Second, do: "force", key: "run", reason: Maintenance, want: true},
				{at: 5*time.Second - 1, do: "collect"},
			},
			nextDeadline: 5 * time.Second,
			at:           5 * time.Second, want: []wantDue{{"run", Maintenance, 5 * time.Second}}, wantState: Draining},
		{name: "running: stays Running until collected",
			ops:          []op{{at: 5 * time.Second, do: "force", key: "run", reason: BrokerShutdown, want: true}},
			nextDeadline: 5 * time.Second,
			at:           5*time.Second - 1, want: nil, wantState: Running},
		{name: "collected late, still once",
			ops: []op{
				{at: 5 * time.Second, do: "force", key: "run", reason: Maintenance, want: true},
				{at: 30 * time.Second, do: "collect"},
			},
			nextDeadline: time.Hour, // early was collected with run
			at:           time.Hour, want: []wantDue{{"late", IdleTimeout, time.Hour}}, wantState: Draining},
		{name: "draining refused", ops: []op{{at: 5 * time.Second, do: "force", key: "drain", reason: Maintenance, want: false}},
			nextDeadline: 10 * time.Second, at: 5 * time.Second, want: nil, wantState: Running},
		{name: "quiesced refused", ops: []op{{at: 5 * time.Second, do: "force", key: "quiet", reason: Maintenance, want: false}},
			nextDeadline: 10 * time.Second, at: 5 * time.Second, want: nil, wantState: Running},
		{name: "untracked refused", ops: []op{{at: 5 * time.Second, do: "force", key: "nobody", reason: Maintenance, want: false}},
			nextDeadline: 10 * time.Second, at: 5 * time.Second, want: nil, wantState: Running},
		{name: "zero reason refused", ops: []op{{at: 5 * time.Second, do: "force", key: "run", reason: 0, want: false}},
			nextDeadline: 10 * time.Second, at: 5 * time.Second, want: nil, wantState: Running},
		{name: "heartbeat after Force still drains",
			ops: []op{
				{at: 5 * time.Second, do: "force", key: "run", reason: Maintenance, want: true},
				{at: 6 * time.Second, do: "mark", key: "run"},
			},
			nextDeadline: 5 * time.Second,
			at:           7 * time.Second, want: []wantDue{{"run", Maintenance, time.Second}}, wantState: Draining},
		{name: "rearm of a collected forced drain runs again",
			ops: []op{
				{at: 5 * time.Second, do: "force", key: "run", reason: Maintenance, want: true},
				{at: 5 * time.Second, do: "collect"},
				{at: 6 * time.Second, do: "mark", key: "run"},
			},
			nextDeadline: 10 * time.Second,
			at:           time.Minute, want: []wantDue{{"early", IdleTimeout, time.Minute}}, wantState: Running},
		{name: "behind the backends already due",
			// early is due at 10 s and not yet collected when run is forced
			// at 20 s; late is forced at 15 s. Deadline order: early, late,
			// run.
			ops: []op{
				{at: 20 * time.Second, do: "force", key: "run", reason: Maintenance, want: true},
				{at: 15 * time.Second, do: "force", key: "late", reason: BrokerShutdown, want: true},
			},
			nextDeadline: 10 * time.Second,
			at:           20 * time.Second, want: []wantDue{
				{"early", IdleTimeout, 20 * time.Second}, {"late", BrokerShutdown, 20 * time.Second}, {"run", Maintenance, 20 * time.Second},
			}, wantState: Draining},
		{name: "forced again earlier: the first request stands",
			ops: []op{
				{at: 8 * time.Second, do: "force", key: "run", reason: Maintenance, want: true},
				{at: 5 * time.Second, do: "force", key: "run", reason: BrokerShutdown, want: false},
			},
			nextDeadline: 8 * time.Second,
			at:           8 * time.Second, want: []wantDue{{"run", Maintenance, 8 * time.Second}}, wantState: Draining},
		{name: "forced again later: the first request stands",
			ops: []op{
				{at: 5 * time.Second, do: "force", key: "run", reason: Maintenance, want: true},
				{at: 8 * time.Second, do: "force", key: "run", reason: BrokerShutdown, want: false},
			},
			nextDeadline: 5 * time.Second,
			at:           5 * time.Second, want: []wantDue{{"run", Maintenance, 5 * time.Second}}, wantState: Draining},
		{name: "draining report cancels it",
			ops: []op{
				{at: 5 * time.Second, do: "force", key: "run", reason: Maintenance, want: true},
				{at: 6 * time.Second, do: "drain", key: "run", want: true},
			},
			nextDeadline: 10 * time.Second,
			at:           9 * time.Second, want: nil, wantState: Draining},
		{name: "quiesced report cancels it",
			ops: []op{
				{at: 5 * time.Second, do: "force", key: "run", reason: Maintenance, want: true},
				{at: 6 * time.Second, do: "quiesce", key: "run", want: true},
			},
			nextDeadline: 10 * time.Second,
			at:           9 * time.Second, want: nil, wantState: Quiesced},
		{name: "removal cancels it",
			ops: []op{
				{at: 5 * time.Second, do: "force", key: "run", reason: Maintenance, want: true},
				{at: 6 * time.Second, do: "remove", key: "run", want: true},
			},
			nextDeadline: 10 * time.Second,
			at:           9 * time.Second, want: nil, wantState: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(Policy{DefaultIdleTimeout: time.Minute})
			for _, k := range []string{"run", "drain", "quiet"} {
				mustMark(t, c, k, t0, time.Minute)
			}
			mustMark(t, c, "early", t0, 10*time.Second)
			mustMark(t, c, "late", t0, time.Hour)
			c.MarkDraining("drain", t0)
			c.MarkQuiesced("quiet", t0)
			gen, _ := c.Get("run", t0)
			for i, o := range tt.ops {
				now := t0.Add(o.at)
				var got bool
				switch o.do {
				case "force":
					got = c.Force(o.key, now, o.reason)
				case "mark":
					mustMark(t, c, o.key, now, time.Minute)
					got = o.want
				case "drain":
					got = c.MarkDraining(o.key, now)
				case "quiesce":
					got = c.MarkQuiesced(o.key, now)
				case "remove":
					got = c.Remove(o.key)
				case "collect":
					c.CollectDue(now)
					got = o.want
				default:
					t.Fatalf("bad op %q", o.do)
				}
				if got != o.want {
					t.Fatalf("op %d %s(%q) at t0+%v: got %v; want %v", i, o.do, o.key, o.at, got, o.want)
				}
				checkInvariants(t, c)
			}
			// Twice: the first call may tidy the index.
			for range 2 {
				if dl, ok := c.NextDeadline(); !ok || !dl.Equal(t0.Add(tt.nextDeadline)) {
					t.Fatalf("NextDeadline: got %v, %v; want t0+%v", dl.Sub(t0), ok, tt.nextDeadline)
				}
			}
			now := t0.Add(tt.at)
			got := c.CollectDue(now)
			if len(got) != len(tt.want) {
				t.Fatalf("CollectDue(t0+%v): got %+v; want %v", tt.at, got, tt.want)
			}
			for i, w := range tt.want {
				g := got[i]
				if g.Key != w.key || g.Reason != w.reason || g.IdleFor != w.idle || g.Attempt != 1 || g.Forgotten {
					t.Errorf("Due[%d]: got %+v; want %s, reason %v, idle %v, attempt 1", i, g, w.key, w.reason, w.idle)
				}
				if g.Key == "run" && g.Generation != gen.Generation {
					t.Errorf("Due of run: got generation %d; want %d", g.Generation, gen.Generation)
				}
			}
			if st, _ := c.State("run"); st != tt.wantState {
				t.Errorf("State(run): got %v; want %v", st, tt.wantState)
			}
			checkInvariants(t, c)
		})
	}
}
