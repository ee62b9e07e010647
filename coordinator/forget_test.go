package coordinator

import (
	"slices"
	"testing"
	"time"
)

// fop is one call in a forgetting scenario, at t0+at.
type fop struct {
	at  time.Duration
	do  string // "mark", "drain", "quiesce", "remove", "restore", "collect", "next"
	key string
	rec Record // restore
	n   int    // collect: AppendDueN's n
	// want is what collect returns, in order: Key, Reason, Attempt and
	// Forgotten are compared.
	want []Due
	// next is NextDeadline's answer for "next" (0: none).
	next time.Duration
}

// Redelivery in the forgetting scenarios: every 20 s plus a jitter below
// 5 s, so a drain at 10 s is re-sent at resend(1), resend(2), ...
const forgetRetry = 20 * time.Second

// resend returns when the drain of key emitted at from is re-sent for the
// nth time (attempt n+1), with forgetRetry.
func resend(key string, from time.Duration, n int) time.Duration {
	at := from
	for i := 1; i <= n; i++ {
		at += forgetRetry + time.Duration(jitter(int64(forgetRetry/4), key, uint16(i)))
	}
	return at
}

// TestForget walks Policy.ForgetAfter (one minute here) through its cases.
// Each case runs its calls on a fresh Coordinator with a 10 s idle timeout
// and checks the state after each.
func TestForget(t *testing.T) {
	forgotten := func(key string, r Reason, attempt int) Due {
		return Due{Key: key, Reason: r, Attempt: attempt, Forgotten: true}
	}
	drained := func(key string, r Reason, attempt int) Due { return Due{Key: key, Reason: r, Attempt: attempt} }
	// The re-sends of a's drain at 10 s: before 70 s for the first two
	// (each wait is below 25 s), at or after it for the third.
	r1, r2, r3 := resend("a", 10*time.Second, 1), resend("a", 10*time.Second, 2), resend("a", 10*time.Second, 3)
	tests := []struct {
		name  string
		retry bool // redelivery on (forgetRetry)
		off   bool // ForgetAfter 0
		ops   []fop
		// wantCount and wantUnacked are the counts at the end.
		wantCount   [Quiesced + 1]int
		wantUnacked int
	}{
		{name: "quiesced, a minute after the report", ops: []fop{
			{do: "mark", key: "a"}, {at: 5 * time.Second, do: "quiesce", key: "a"},
			{at: 5 * time.Second, do: "next", next: 65 * time.Second},
			{at: 65*time.Second - 1, do: "collect"},
			{at: 65 * time.Second, do: "collect", want: []Due{forgotten("a", 0, 0)}},
			{at: time.Hour, do: "next"},
		}},
		{name: "quiesced after a drain keeps its reason", ops: []fop{
			{do: "mark", key: "a"}, {at: 10 * time.Second, do: "collect", want: []Due{drained("a", IdleTimeout, 1)}},
			{at: 12 * time.Second, do: "quiesce", key: "a"},
			{at: 12 * time.Second, do: "next", next: 72 * time.Second},
			{at: 72 * time.Second, do: "collect", want: []Due{forgotten("a", IdleTimeout, 0)}},
		}},
		{name: "draining by report", retry: true, ops: []fop{
			{do: "mark", key: "a"}, {at: 5 * time.Second, do: "drain", key: "a"},
			{at: 5 * time.Second, do: "next", next: 65 * time.Second},
			{at: 65*time.Second - 1, do: "collect"},
			{at: 65 * time.Second, do: "collect", want: []Due{forgotten("a", 0, 0)}},
		}},
		{name: "drained, redelivery off: unacknowledged until forgotten", ops: []fop{
			{do: "mark", key: "a"}, {at: 10 * time.Second, do: "collect", want: []Due{drained("a", IdleTimeout, 1)}},
			{at: 10 * time.Second, do: "next", next: 70 * time.Second},
			{at: 70*time.Second - 1, do: "collect"},
			{at: 70 * time.Second, do: "collect", want: []Due{forgotten("a", IdleTimeout, 1)}},
		}},
		{name: "drained, redelivery off: still unacknowledged before", ops: []fop{
			{do: "mark", key: "a"}, {at: 10 * time.Second, do: "collect", want: []Due{drained("a", IdleTimeout, 1)}},
			{at: 70*time.Second - 1, do: "collect"},
		}, wantCount: [Quiesced + 1]int{Draining: 1}, wantUnacked: 1},
		{name: "re-sent drain: forgotten at the first re-send at or after a minute", retry: true, ops: []fop{
			{do: "mark", key: "a"}, {at: 10 * time.Second, do: "collect", want: []Due{drained("a", IdleTimeout, 1)}},
			{at: r1, do: "collect", want: []Due{drained("a", IdleTimeout, 2)}},
			{at: r2, do: "collect", want: []Due{drained("a", IdleTimeout, 3)}},
			{at: r2, do: "next", next: r3},
			{at: r3 - 1, do: "collect"},
			{at: r3, do: "collect", want: []Due{forgotten("a", IdleTimeout, 3)}},
			{at: r3, do: "next"},
		}},
		{name: "re-sent drain: unacknowledged until forgotten", retry: true, ops: []fop{
			{do: "mark", key: "a"}, {at: 10 * time.Second, do: "collect", want: []Due{drained("a", IdleTimeout, 1)}},
			{at: r1, do: "collect", want: []Due{drained("a", IdleTimeout, 2)}},
			{at: r2, do: "collect", want: []Due{drained("a", IdleTimeout, 3)}},
			{at: r3 - 1, do: "collect"},
		}, wantCount: [Quiesced + 1]int{Draining: 1}, wantUnacked: 1},
		{name: "a repeated report restarts the clock", ops: []fop{
			{do: "mark", key: "a"}, {at: 5 * time.Second, do: "quiesce", key: "a"},
			{at: 30 * time.Second, do: "quiesce", key: "a"},
			{at: 30 * time.Second, do: "next", next: 90 * time.Second},
			{at: 65 * time.Second, do: "collect"},
			{at: 65 * time.Second, do: "next", next: 90 * time.Second},
			{at: 90*time.Second - 1, do: "collect"},
			{at: 90 * time.Second, do: "collect", want: []Due{forgotten("a", 0, 0)}},
		}},
		{name: "a report of the other state restarts the clock", ops: []fop{
			{do: "mark", key: "a"}, {at: 5 * time.Second, do: "drain", key: "a"},
			{at: 30 * time.Second, do: "quiesce", key: "a"},
			{at: 30 * time.Second, do: "next", next: 90 * time.Second},
			{at: 90*time.Second - 1, do: "collect"},
			{at: 90 * time.Second, do: "collect", want: []Due{forgotten("a", 0, 0)}},
		}},
		{name: "a draining report restarts the clock of a re-sent drain", retry: true, ops: []fop{
			{do: "mark", key: "a"}, {at: 10 * time.Second, do: "collect", want: []Due{drained("a", IdleTimeout, 1)}},
			{at: r1, do: "collect", want: []Due{drained("a", IdleTimeout, 2)}},
			{at: 40 * time.Second, do: "drain", key: "a"}, // forgotten from 100 s
			{at: r2, do: "collect", want: []Due{drained("a", IdleTimeout, 3)}},
			{at: r3, do: "collect", want: []Due{drained("a", IdleTimeout, 4)}},
			{at: r3, do: "next", next: resend("a", 10*time.Second, 4)},
		}, wantCount: [Quiesced + 1]int{Draining: 1}, wantUnacked: 1},
		{name: "activity rearms: drained, not forgotten", ops: []fop{
			{do: "mark", key: "a"}, {at: 5 * time.Second, do: "quiesce", key: "a"},
			{at: 30 * time.Second, do: "mark", key: "a"},
			{at: 30 * time.Second, do: "next", next: 40 * time.Second},
			{at: 65 * time.Second, do: "collect", want: []Due{drained("a", IdleTimeout, 1)}},
		}, wantCount: [Quiesced + 1]int{Draining: 1}, wantUnacked: 1},
		{name: "removed: nothing to forget", ops: []fop{
			{do: "mark", key: "a"}, {at: 5 * time.Second, do: "quiesce", key: "a"},
			{at: 6 * time.Second, do: "remove", key: "a"},
			{at: 6 * time.Second, do: "next"},
			{at: time.Hour, do: "collect"},
		}},
		{name: "restored: the clock starts at the restore", ops: []fop{
			{at: 5 * time.Second, do: "restore", rec: Record{Key: "a", IdleTimeout: time.Second, State: Quiesced, Generation: 3, Reason: Maintenance}},
			{at: 5 * time.Second, do: "next", next: 65 * time.Second},
			{at: 65 * time.Second, do: "collect", want: []Due{forgotten("a", Maintenance, 0)}},
		}},
		{name: "in the order of forgetting times, a re-reported one re-keyed", ops: []fop{
			// a keyed at 60 s, then reported again: forgotten at 65 s,
			// after b (63 s).
			{do: "mark", key: "a"}, {do: "mark", key: "b"},
			{do: "quiesce", key: "a"}, {at: 3 * time.Second, do: "quiesce", key: "b"},
			{at: 5 * time.Second, do: "quiesce", key: "a"},
			{at: 5 * time.Second, do: "next", next: 63 * time.Second},
			{at: 100 * time.Second, do: "collect", n: 1, want: []Due{forgotten("b", 0, 0)}},
			{at: 100 * time.Second, do: "collect", n: 1, want: []Due{forgotten("a", 0, 0)}},
		}},
		{name: "in the order of forgetting times, collected", ops: []fop{
			{do: "mark", key: "a"}, {do: "mark", key: "b"},
			{do: "quiesce", key: "a"}, {at: 3 * time.Second, do: "quiesce", key: "b"},
			{at: 5 * time.Second, do: "quiesce", key: "a"},
			{at: 100 * time.Second, do: "collect", want: []Due{forgotten("b", 0, 0), forgotten("a", 0, 0)}},
		}},
		{name: "times before the first one seen", ops: []fop{
			{do: "collect"}, // the Coordinator's first time is t0
			{at: -10 * time.Second, do: "mark", key: "a"}, {at: -10 * time.Second, do: "quiesce", key: "a"},
			{at: -10 * time.Second, do: "next", next: 50 * time.Second},
			{at: 50*time.Second - 1, do: "collect"},
			{at: 50 * time.Second, do: "collect", want: []Due{forgotten("a", 0, 0)}},
		}},
		{name: "activity counts, whatever the order of the calls", ops: []fop{
			{do: "mark", key: "a"}, {at: 30 * time.Second, do: "mark", key: "a"},
			{at: 20 * time.Second, do: "quiesce", key: "a"}, // the clock went back
			{at: 20 * time.Second, do: "next", next: 90 * time.Second},
			{at: 90*time.Second - 1, do: "collect"},
			{at: 90 * time.Second, do: "collect", want: []Due{forgotten("a", 0, 0)}},
		}},
		{name: "forgotten Dues count toward the limit", ops: []fop{
			{do: "mark", key: "a"}, {do: "mark", key: "b"}, {at: 30 * time.Second, do: "mark", key: "c"},
			{do: "quiesce", key: "a"}, {at: time.Second, do: "drain", key: "b"},
			{at: 100 * time.Second, do: "collect", n: 1, want: []Due{drained("c", IdleTimeout, 1)}},
			{at: 100 * time.Second, do: "next", next: 60 * time.Second},
			{at: 100 * time.Second, do: "collect", n: 1, want: []Due{forgotten("a", 0, 0)}},
			{at: 100 * time.Second, do: "next", next: 61 * time.Second},
			{at: 100 * time.Second, do: "collect", n: 1, want: []Due{forgotten("b", 0, 0)}},
		}, wantCount: [Quiesced + 1]int{Draining: 1}, wantUnacked: 1},
		{name: "ForgetAfter 0: never", off: true, ops: []fop{
			{do: "mark", key: "a"}, {at: 5 * time.Second, do: "quiesce", key: "a"},
			{do: "mark", key: "b"}, {at: 5 * time.Second, do: "drain", key: "b"},
			{at: 5 * time.Second, do: "next"},
			{at: 100 * year, do: "collect"},
		}, wantCount: [Quiesced + 1]int{Draining: 1, Quiesced: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Policy{DefaultIdleTimeout: 10 * time.Second, ForgetAfter: time.Minute}
			if tt.retry {
				p.RetryInterval, p.RetryMaxInterval = forgetRetry, forgetRetry
			}
			if tt.off {
				p.ForgetAfter = 0
			}
			c := New(p)
			for i, o := range tt.ops {
				now := t0.Add(o.at)
				switch o.do {
				case "mark":
					markDefault(t, c, o.key, now)
				case "drain":
					if !c.MarkDraining(o.key, now) {
						t.Fatalf("op %d: MarkDraining(%q): got false; want true", i, o.key)
					}
				case "quiesce":
					if !c.MarkQuiesced(o.key, now) {
						t.Fatalf("op %d: MarkQuiesced(%q): got false; want true", i, o.key)
					}
				case "remove":
					c.Remove(o.key)
				case "restore":
					if err := c.Restore(o.rec, now); err != nil {
						t.Fatalf("op %d: Restore(%+v): got %v; want nil", i, o.rec, err)
					}
				case "next":
					dl, ok := c.NextDeadline()
					if ok != (o.next != 0) || ok && !dl.Equal(t0.Add(o.next)) {
						t.Fatalf("op %d: NextDeadline at t0+%v: got t0+%v, %v; want t0+%v", i, o.at, dl.Sub(t0), ok, o.next)
					}
				case "collect":
					before := map[string]Backend{}
					bs, _ := c.List(now, nil, 0)
					for _, b := range bs {
						before[b.Key] = b
					}
					got := c.AppendDueN(nil, now, o.n)
					if !slices.Equal(dueKeys(got), dueKeys(o.want)) {
						t.Fatalf("op %d: AppendDueN(t0+%v, n=%d): got %v; want %v", i, o.at, o.n, dueKeys(got), dueKeys(o.want))
					}
					for j, w := range o.want {
						g, b := got[j], before[got[j].Key]
						if g.Key != w.Key || g.Reason != w.Reason || g.Attempt != w.Attempt || g.Forgotten != w.Forgotten ||
							g.Generation != b.Generation || !g.Deadline.Equal(b.LastActive.Add(b.IdleTimeout)) || g.IdleFor != b.IdleFor {
							t.Fatalf("op %d: AppendDueN(t0+%v): got %+v; want %+v, generation %d, deadline %v, idle %v",
								i, o.at, g, w, b.Generation, b.LastActive.Add(b.IdleTimeout), b.IdleFor)
						}
						_, tracked := c.State(g.Key)
						if tracked == g.Forgotten {
							t.Errorf("op %d: %s: got tracked %v after a Due with Forgotten %v; want a forgotten backend untracked", i, g.Key, tracked, g.Forgotten)
						}
					}
				default:
					t.Fatalf("bad op %q", o.do)
				}
				checkInvariants(t, c)
			}
			for s := Running; s <= Quiesced; s++ {
				if got := c.Count(s); got != tt.wantCount[s] {
					t.Errorf("Count(%v): got %d; want %d", s, got, tt.wantCount[s])
				}
			}
			if got := c.Unacknowledged(); got != tt.wantUnacked {
				t.Errorf("Unacknowledged: got %d; want %d", got, tt.wantUnacked)
			}
		})
	}
}

// TestForgetResendSchedule checks the premise of the re-sent cases in
// TestForget: the first two re-sends of a drain at 10 s come before 70 s,
// the third at or after it but before 100 s, and the first after 40 s.
func TestForgetResendSchedule(t *testing.T) {
	r := []time.Duration{resend("a", 10*time.Second, 1), resend("a", 10*time.Second, 2), resend("a", 10*time.Second, 3)}
	if !slices.IsSorted(r) || r[0] >= 40*time.Second || r[1] >= 70*time.Second || r[2] < 70*time.Second || r[2] >= 100*time.Second {
		t.Fatalf("re-sends of a drain at 10 s: got %v; want the first before 40 s, the second before 70 s, the third in [70 s, 100 s)", r)
	}
}
