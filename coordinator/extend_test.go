package coordinator

import (
	"slices"
	"testing"
	"time"
)

// TestExtendCap is the outage of 30 s that ends at t0+35s, after which the
// worker calls Extend(30s, t0+35s), for a backend with a 10 s idle timeout
// whose last activity was applied at various times. A heartbeat applied
// during the outage (one that arrived on reconnection, before Extend) must
// not end up with its last activity in the future: it is drained one
// timeout after now at the latest, not a whole outage later. The old
// Extend, which moved every last activity d later, gets the last three
// cases wrong.
func TestExtendCap(t *testing.T) {
	const (
		d       = 30 * time.Second
		timeout = 10 * time.Second
	)
	end := t0.Add(35 * time.Second)
	tests := []struct {
		name     string
		activity time.Duration // the last activity applied before Extend
		wantLast time.Duration // LastActive after Extend
	}{
		{name: "active before the outage: the outage does not count", activity: 0, wantLast: 30 * time.Second},
		{name: "active just before the outage", activity: 5 * time.Second, wantLast: 35 * time.Second},
		// The old Extend: t0+50s, drained at t0+60s.
		{name: "heartbeat applied during the outage", activity: 20 * time.Second, wantLast: 35 * time.Second},
		// The old Extend: t0+65s, drained at t0+75s.
		{name: "heartbeat applied at reconnection keeps its time", activity: 35 * time.Second, wantLast: 35 * time.Second},
		// The old Extend: t0+70s. The clock went back; the activity stays.
		{name: "activity later than now keeps its time", activity: 40 * time.Second, wantLast: 40 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(Policy{DefaultIdleTimeout: timeout})
			markDefault(t, c, "a", t0)
			if tt.activity != 0 {
				markDefault(t, c, "a", t0.Add(tt.activity))
			}
			c.Extend(d, end)
			checkInvariants(t, c)
			b, _ := c.Get("a", end)
			if !b.LastActive.Equal(t0.Add(tt.wantLast)) {
				t.Fatalf("LastActive after Extend: got t0+%v; want t0+%v", b.LastActive.Sub(t0), tt.wantLast)
			}
			if b.LastActive.After(end) && tt.activity <= 35*time.Second {
				t.Fatalf("LastActive after Extend: got t0+%v; want no later than now (t0+35s)", b.LastActive.Sub(t0))
			}
			deadline := t0.Add(tt.wantLast + timeout)
			if dl, ok := c.NextDeadline(); !ok || !dl.Equal(deadline) {
				t.Fatalf("NextDeadline: got t0+%v, %v; want t0+%v", dl.Sub(t0), ok, deadline.Sub(t0))
			}
			if got := c.CollectDue(deadline.Add(-1)); len(got) != 0 {
				t.Fatalf("CollectDue 1ns before t0+%v: got %v; want none", deadline.Sub(t0), dueKeys(got))
			}
			got := c.CollectDue(deadline)
			if len(got) != 1 || got[0].Key != "a" || got[0].IdleFor != timeout || !got[0].Deadline.Equal(deadline) {
				t.Fatalf("CollectDue at t0+%v: got %+v; want a, idle %v", deadline.Sub(t0), got, timeout)
			}
			checkInvariants(t, c)
		})
	}
}

// TestExtendOrder checks that Extend keeps the index in order when the cap
// moves backends by different amounts: a (40 s timeout, active at t0) was
// due before b (10 s, active at 34 s); after an outage of 30 s ending at
// 35 s, b (due at 45 s) comes before a (70 s).
func TestExtendOrder(t *testing.T) {
	c := New(Policy{DefaultIdleTimeout: time.Minute})
	mustMark(t, c, "a", t0, 40*time.Second)
	mustMark(t, c, "b", t0.Add(34*time.Second), 10*time.Second)
	for i := range 20 { // others around them, so the heap has depth
		mustMark(t, c, "k"+string(rune('a'+i)), t0.Add(time.Duration(i)*time.Second), time.Duration(20+i)*time.Second)
	}
	c.Extend(30*time.Second, t0.Add(35*time.Second))
	checkInvariants(t, c)
	if dl, ok := c.NextDeadline(); !ok || !dl.Equal(t0.Add(45*time.Second)) {
		t.Fatalf("NextDeadline: got t0+%v, %v; want t0+45s (b)", dl.Sub(t0), ok)
	}
	got := dueKeys(c.CollectDue(t0.Add(70 * time.Second)))
	if i, j := slices.Index(got, "b"), slices.Index(got, "a"); i < 0 || j < 0 || i > j {
		t.Fatalf("CollectDue(t0+70s): got %v; want b, then a", got)
	}
	checkInvariants(t, c)
}

// TestExtendSchedules checks what else an outage of 30 s ending at t0+35s
// moves: a pending re-send waits 30 s longer; forgetting counts the outage
// out (capped at now like activity); a forced drain keeps its time.
func TestExtendSchedules(t *testing.T) {
	const d = 30 * time.Second
	end := t0.Add(35 * time.Second)
	p := Policy{DefaultIdleTimeout: time.Hour, RetryInterval: 20 * time.Second, RetryMaxInterval: 20 * time.Second, ForgetAfter: time.Minute}
	resentAt := 2*time.Second + 20*time.Second + time.Duration(jitter(int64(5*time.Second), "k", 1))
	tests := []struct {
		name  string
		setup func(t *testing.T, c *Coordinator)
		// want is the key's next action after Extend: when, and what.
		want      time.Duration
		reason    Reason
		attempt   int
		forgotten bool
	}{
		{name: "re-send waits the outage longer", setup: func(t *testing.T, c *Coordinator) {
			mustMark(t, c, "k", t0, 2*time.Second)
			forceNow(t, c, "k", t0.Add(2*time.Second), BrokerShutdown) // re-sent from resentAt
		}, want: resentAt + d, reason: BrokerShutdown, attempt: 2},
		{name: "forgetting counts the outage out", setup: func(t *testing.T, c *Coordinator) {
			markDefault(t, c, "k", t0)
			c.MarkQuiesced("k", t0)
		}, want: d + time.Minute, forgotten: true},
		{name: "a report during the outage is capped at now", setup: func(t *testing.T, c *Coordinator) {
			markDefault(t, c, "k", t0)
			c.MarkQuiesced("k", t0.Add(20*time.Second))
		}, want: 35*time.Second + time.Minute, forgotten: true},
		{name: "a draining report at reconnection keeps its time", setup: func(t *testing.T, c *Coordinator) {
			markDefault(t, c, "k", t0)
			c.MarkDraining("k", end)
		}, want: 35*time.Second + time.Minute, forgotten: true},
		{name: "a forced drain keeps its time", setup: func(t *testing.T, c *Coordinator) {
			markDefault(t, c, "k", t0)
			c.Force("k", t0.Add(10*time.Second), Maintenance)
		}, want: 10 * time.Second, reason: Maintenance, attempt: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(p)
			tt.setup(t, c)
			c.Extend(d, end)
			checkInvariants(t, c)
			if dl, ok := c.NextDeadline(); !ok || !dl.Equal(t0.Add(tt.want)) {
				t.Fatalf("NextDeadline: got t0+%v, %v; want t0+%v", dl.Sub(t0), ok, tt.want)
			}
			if got := c.CollectDue(t0.Add(tt.want - 1)); len(got) != 0 {
				t.Fatalf("CollectDue 1ns before t0+%v: got %+v; want none", tt.want, got)
			}
			// Collected late, when the forced drain's time is in the past.
			at := max(tt.want, 35*time.Second)
			got := c.CollectDue(t0.Add(at))
			if len(got) != 1 || got[0].Key != "k" || got[0].Reason != tt.reason || got[0].Attempt != tt.attempt || got[0].Forgotten != tt.forgotten {
				t.Fatalf("CollectDue(t0+%v): got %+v; want k, reason %v, attempt %d, forgotten %v", at, got, tt.reason, tt.attempt, tt.forgotten)
			}
			checkInvariants(t, c)
		})
	}
}
