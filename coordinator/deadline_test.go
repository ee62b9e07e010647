package coordinator

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestNextDeadline(t *testing.T) {
	type op struct {
		key     string
		at      time.Duration
		timeout time.Duration
		state   State // 0: activity; Draining or Quiesced: MarkDraining or MarkQuiesced
		remove  bool  // Remove
	}
	tests := []struct {
		name   string
		ops    []op
		want   time.Duration
		wantOK bool
	}{
		{name: "empty", wantOK: false},
		{name: "single", ops: []op{{key: "a", timeout: time.Second}}, want: time.Second, wantOK: true},
		{name: "earliest of several", ops: []op{
			{key: "a", timeout: 5 * time.Second}, {key: "b", at: time.Second, timeout: time.Second}, {key: "c", timeout: 3 * time.Second},
		}, want: 2 * time.Second, wantOK: true},
		{name: "refresh moves it later", ops: []op{
			{key: "a", timeout: time.Second}, {key: "b", timeout: 5 * time.Second}, {key: "a", at: 2 * time.Second, timeout: time.Second},
		}, want: 3 * time.Second, wantOK: true},
		{name: "refresh past another backend", ops: []op{
			{key: "a", timeout: time.Second}, {key: "b", timeout: 2 * time.Second}, {key: "a", at: 5 * time.Second, timeout: time.Second},
		}, want: 2 * time.Second, wantOK: true},
		{name: "shorter timeout on refresh moves it earlier", ops: []op{
			{key: "b", timeout: 10 * time.Second}, {key: "a", timeout: time.Minute}, {key: "a", at: time.Second, timeout: time.Second},
		}, want: 2 * time.Second, wantOK: true},
		{name: "longer timeout on refresh moves it later", ops: []op{
			{key: "a", timeout: time.Second}, {key: "b", timeout: time.Minute}, {key: "a", timeout: 10 * time.Second},
		}, want: 10 * time.Second, wantOK: true},
		{name: "draining is not counted", ops: []op{
			{key: "a", timeout: time.Second}, {key: "b", timeout: 4 * time.Second}, {key: "a", state: Draining},
		}, want: 4 * time.Second, wantOK: true},
		{name: "quiesced is not counted", ops: []op{
			{key: "a", timeout: time.Second}, {key: "a", state: Quiesced},
		}, wantOK: false},
		{name: "removed is not counted", ops: []op{
			{key: "a", timeout: time.Second}, {key: "b", timeout: 7 * time.Second}, {key: "a", remove: true},
		}, want: 7 * time.Second, wantOK: true},
		{name: "rearmed counts again", ops: []op{
			{key: "a", timeout: time.Second}, {key: "a", state: Draining}, {key: "a", at: 3 * time.Second, timeout: time.Second},
		}, want: 4 * time.Second, wantOK: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(DefaultPolicy())
			for _, o := range tt.ops {
				switch {
				case o.remove:
					c.Remove(o.key)
				case o.state == Draining:
					c.MarkDraining(o.key, t0.Add(o.at))
				case o.state == Quiesced:
					c.MarkQuiesced(o.key, t0.Add(o.at))
				default:
					mustMark(t, c, o.key, t0.Add(o.at), o.timeout)
				}
			}
			// Twice: the first call may tidy the index; the answer must not change.
			for i := range 2 {
				got, ok := c.NextDeadline()
				if ok != tt.wantOK || (ok && !got.Equal(t0.Add(tt.want))) {
					t.Fatalf("NextDeadline call %d: got %v, %v; want %v, %v", i+1, got, ok, t0.Add(tt.want), tt.wantOK)
				}
				if !ok && !got.IsZero() {
					t.Errorf("NextDeadline with nothing running: got %v; want the zero time", got)
				}
			}
			checkInvariants(t, c)
			if tt.wantOK {
				// The deadline is the moment CollectDue starts returning something.
				if due := c.CollectDue(t0.Add(tt.want - 1)); len(due) != 0 {
					t.Errorf("CollectDue 1ns before NextDeadline: got %v; want none", dueKeys(due))
				}
				if due := c.CollectDue(t0.Add(tt.want)); len(due) == 0 {
					t.Errorf("CollectDue at NextDeadline: got none; want at least one")
				}
			}
		})
	}
}

// TestNextDeadlineLazyRefresh refreshes the earliest backend many times, so
// its heap key goes stale, and checks NextDeadline and CollectDue stay exact.
func TestNextDeadlineLazyRefresh(t *testing.T) {
	c := New(Policy{DefaultIdleTimeout: 10 * time.Second})
	for i := range 50 {
		c.MarkActivity("k"+strconv.Itoa(i), t0.Add(time.Duration(i)*time.Second))
	}
	// Keep k0..k9 busy every 500 ms for 60 s; the others go idle.
	for step := range 120 {
		now := t0.Add(time.Duration(step) * 500 * time.Millisecond)
		for i := range 10 {
			c.MarkActivity("k"+strconv.Itoa(i), now)
		}
		dl, ok := c.NextDeadline()
		// Earliest deadline among k10..k49 (if still running) and the busy ones.
		var want time.Time
		for i := range 50 {
			b, _ := c.Get("k"+strconv.Itoa(i), now)
			if b.State != Running {
				continue
			}
			if d := b.LastActive.Add(b.IdleTimeout); want.IsZero() || d.Before(want) {
				want = d
			}
		}
		if !ok || !dl.Equal(want) {
			t.Fatalf("step %d: NextDeadline got %v, %v; want %v, true", step, dl, ok, want)
		}
		for _, d := range c.CollectDue(now) {
			if n, _ := strconv.Atoi(strings.TrimPrefix(d.Key, "k")); n < 10 {
				t.Fatalf("step %d: got busy backend %s due; want only idle ones", step, d.Key)
			}
			if d.IdleFor < d.ConfiguredTimeout {
				t.Fatalf("step %d: %s got IdleFor %v; want >= %v", step, d.Key, d.IdleFor, d.ConfiguredTimeout)
			}
		}
		checkInvariants(t, c)
	}
	if got, want := c.Count(Running), 10; got != want {
		t.Errorf("Count(Running) at the end: got %d; want %d", got, want)
	}
	if got, want := c.Count(Draining), 40; got != want {
		t.Errorf("Count(Draining) at the end: got %d; want %d", got, want)
	}
}

// TestEqualDeadlines tracks many backends with the same deadline.
func TestEqualDeadlines(t *testing.T) {
	tests := []struct {
		name string
		n    int
	}{
		{name: "two", n: 2},
		{name: "hundred", n: 100},
		{name: "five thousand", n: 5000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(Policy{DefaultIdleTimeout: time.Second})
			for i := range tt.n {
				c.MarkActivity("k"+strconv.Itoa(i), t0)
			}
			// Refreshing every other key with the same time changes nothing.
			for i := 0; i < tt.n; i += 2 {
				c.MarkActivity("k"+strconv.Itoa(i), t0)
			}
			dl, ok := c.NextDeadline()
			if !ok || !dl.Equal(t0.Add(time.Second)) {
				t.Fatalf("NextDeadline: got %v, %v; want %v, true", dl, ok, t0.Add(time.Second))
			}
			if got := c.CollectDue(t0.Add(time.Second - 1)); len(got) != 0 {
				t.Fatalf("CollectDue 1ns early: got %d; want 0", len(got))
			}
			got := c.CollectDue(t0.Add(time.Second))
			seen := make(map[string]bool, len(got))
			for _, d := range got {
				if seen[d.Key] {
					t.Fatalf("CollectDue: got %q twice", d.Key)
				}
				seen[d.Key] = true
				if !d.Deadline.Equal(t0.Add(time.Second)) || d.IdleFor != time.Second {
					t.Fatalf("Due %q: got deadline %v, idle %v; want %v, 1s", d.Key, d.Deadline, d.IdleFor, t0.Add(time.Second))
				}
			}
			if len(got) != tt.n {
				t.Fatalf("CollectDue: got %d; want %d", len(got), tt.n)
			}
			if _, ok := c.NextDeadline(); ok {
				t.Errorf("NextDeadline after collecting all: got ok; want false")
			}
			if c.Count(Draining) != tt.n || c.Count(Running) != 0 || c.Len() != tt.n {
				t.Errorf("counts: got running %d, draining %d, len %d; want 0, %d, %d", c.Count(Running), c.Count(Draining), c.Len(), tt.n, tt.n)
			}
			checkInvariants(t, c)
		})
	}
}
