package coordinator

import (
	"testing"
	"time"
)

func TestMarkActivityChange(t *testing.T) {
	type step struct {
		op      string // "mark" (policy default), "markT", "drain", "quiesce", "collect", "remove"
		at      time.Duration
		timeout time.Duration
		want    Change // for mark and markT
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{name: "new key", steps: []step{{op: "mark", want: Added}}},
		{name: "new key with own timeout", steps: []step{{op: "markT", timeout: time.Second, want: Added}}},
		{name: "plain refresh", steps: []step{
			{op: "mark", want: Added}, {op: "mark", at: time.Second, want: 0},
		}},
		{name: "refresh with the default timeout named", steps: []step{
			{op: "mark", want: Added}, {op: "markT", timeout: time.Minute, want: 0},
		}},
		{name: "timeout changed", steps: []step{
			{op: "mark", want: Added}, {op: "markT", timeout: time.Second, want: TimeoutChanged},
			{op: "markT", timeout: time.Second, want: 0}, {op: "mark", want: TimeoutChanged},
		}},
		{name: "timeouts equal after clamping", steps: []step{
			{op: "markT", timeout: 0, want: Added}, {op: "markT", timeout: -time.Hour, want: 0},
			{op: "markT", timeout: time.Millisecond, want: 0}, {op: "markT", timeout: time.Millisecond + 1, want: TimeoutChanged},
		}},
		{name: "rearm after draining", steps: []step{
			{op: "mark", want: Added}, {op: "drain"}, {op: "mark", want: Rearmed},
		}},
		{name: "rearm after quiesced with a new timeout", steps: []step{
			{op: "mark", want: Added}, {op: "quiesce"}, {op: "markT", timeout: time.Second, want: Rearmed | TimeoutChanged},
		}},
		{name: "rearm after collect", steps: []step{
			{op: "mark", want: Added}, {op: "collect", at: time.Hour}, {op: "mark", at: time.Hour, want: Rearmed},
		}},
		{name: "added again after remove", steps: []step{
			{op: "markT", timeout: time.Second, want: Added}, {op: "remove"}, {op: "mark", want: Added},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(Policy{DefaultIdleTimeout: time.Minute})
			for i, s := range tt.steps {
				now := t0.Add(s.at)
				switch s.op {
				case "mark", "markT":
					var got Change
					var err error
					if s.op == "mark" {
						got, err = c.MarkActivity("a", now)
					} else {
						got, err = c.MarkActivityWithTimeout("a", now, s.timeout)
					}
					if err != nil || got != s.want {
						t.Fatalf("step %d %s: got %03b, %v; want %03b, nil", i, s.op, got, err, s.want)
					}
					b, ok := c.Get("a", now)
					if !ok || b.State != Running || !b.LastActive.Equal(now) {
						t.Fatalf("step %d: got %+v (tracked %v); want Running, last active %v", i, b, ok, now)
					}
				case "drain":
					c.MarkDraining("a", now)
				case "quiesce":
					c.MarkQuiesced("a", now)
				case "collect":
					if got := c.CollectDue(now); len(got) != 1 {
						t.Fatalf("step %d collect: got %v; want [a]", i, dueKeys(got))
					}
				case "remove":
					c.Remove("a")
				default:
					t.Fatalf("bad op %q", s.op)
				}
				checkInvariants(t, c)
			}
		})
	}
}

// TestMarkActivityReplaces checks that activity replaces last activity,
// timeout and state, whatever the state was.
func TestMarkActivityReplaces(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, c *Coordinator)
	}{
		{name: "running", setup: func(*testing.T, *Coordinator) {}},
		{name: "draining", setup: func(_ *testing.T, c *Coordinator) { c.MarkDraining("a", t0) }},
		{name: "quiesced", setup: func(_ *testing.T, c *Coordinator) { c.MarkQuiesced("a", t0) }},
		{name: "collected", setup: func(_ *testing.T, c *Coordinator) { c.CollectDue(t0.Add(time.Hour)) }},
		{name: "forced", setup: func(t *testing.T, c *Coordinator) { forceNow(t, c, "a", t0, Maintenance) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(DefaultPolicy())
			mustMark(t, c, "a", t0, time.Minute)
			tt.setup(t, c)
			now := t0.Add(2 * time.Hour)
			mustMark(t, c, "a", now, 5*time.Second)
			b, ok := c.Get("a", now.Add(time.Second))
			want := Backend{Key: "a", State: Running, LastActive: now, IdleFor: time.Second, IdleTimeout: 5 * time.Second}
			if !ok || b.Key != want.Key || b.State != want.State || !b.LastActive.Equal(want.LastActive) ||
				b.IdleFor != want.IdleFor || b.IdleTimeout != want.IdleTimeout {
				t.Fatalf("Get: got %+v; want %+v", b, want)
			}
			if got := c.Count(Running); got != 1 {
				t.Errorf("Count(Running): got %d; want 1", got)
			}
			if dl, ok := c.NextDeadline(); !ok || !dl.Equal(now.Add(5*time.Second)) {
				t.Errorf("NextDeadline: got %v, %v; want %v, true", dl, ok, now.Add(5*time.Second))
			}
			checkInvariants(t, c)
		})
	}
}

func TestSetStateAndRemove(t *testing.T) {
	drain := func(c *Coordinator, key string) bool { return c.MarkDraining(key, t0.Add(time.Millisecond)) }
	quiesce := func(c *Coordinator, key string) bool { return c.MarkQuiesced(key, t0.Add(time.Millisecond)) }
	tests := []struct {
		name      string
		op        func(c *Coordinator, key string) bool
		key       string
		want      bool
		wantState State // 0: untracked afterwards
		wantLen   int
	}{
		{name: "drain untracked", op: drain, key: "x", want: false, wantLen: 3},
		{name: "quiesce untracked", op: quiesce, key: "x", want: false, wantLen: 3},
		{name: "remove untracked", op: (*Coordinator).Remove, key: "x", want: false, wantLen: 3},
		{name: "drain running", op: drain, key: "a", want: true, wantState: Draining, wantLen: 3},
		{name: "quiesce running", op: quiesce, key: "a", want: true, wantState: Quiesced, wantLen: 3},
		{name: "remove running", op: (*Coordinator).Remove, key: "a", want: true, wantLen: 2},
		{name: "quiesce draining", op: quiesce, key: "d", want: true, wantState: Quiesced, wantLen: 3},
		{name: "drain draining", op: drain, key: "d", want: true, wantState: Draining, wantLen: 3},
		{name: "remove draining", op: (*Coordinator).Remove, key: "d", want: true, wantLen: 2},
		{name: "drain quiesced", op: drain, key: "q", want: true, wantState: Draining, wantLen: 3},
		{name: "quiesce quiesced", op: quiesce, key: "q", want: true, wantState: Quiesced, wantLen: 3},
		{name: "remove quiesced", op: (*Coordinator).Remove, key: "q", want: true, wantLen: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(Policy{DefaultIdleTimeout: time.Second})
			c.MarkActivity("a", t0)
			c.MarkActivity("d", t0)
			c.MarkActivity("q", t0)
			c.MarkDraining("d", t0)
			c.MarkQuiesced("q", t0)
			before, _ := c.Get(tt.key, t0)
			if got := tt.op(c, tt.key); got != tt.want {
				t.Fatalf("got %v; want %v", got, tt.want)
			}
			b, ok := c.Get(tt.key, t0)
			st, stOK := c.State(tt.key)
			if tt.wantState == 0 {
				if ok || stOK || st != 0 {
					t.Errorf("Get(%q), State: got %+v, %v, %v; want untracked", tt.key, b, st, stOK)
				}
			} else if !ok || b.State != tt.wantState || b.Generation != before.Generation || !stOK || st != tt.wantState {
				t.Errorf("Get(%q): got %+v (tracked %v), State %v, %v; want state %v, generation %d", tt.key, b, ok, st, stOK, tt.wantState, before.Generation)
			}
			if got := c.Len(); got != tt.wantLen {
				t.Errorf("Len: got %d; want %d", got, tt.wantLen)
			}
			// Only a Running backend ever becomes due.
			for _, d := range c.CollectDue(t0.Add(time.Hour)) {
				if d.Key != "a" {
					t.Errorf("CollectDue: got %q; want only the running backend a", d.Key)
				}
			}
			checkInvariants(t, c)
		})
	}
}
