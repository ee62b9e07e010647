package coordinator

import (
	"cmp"
	"slices"
	"strings"
	"testing"
	"time"
)

// sortedByDeadline returns ds sorted by deadline, then key: the order a
// test writes its wants in, whatever order CollectDue picked among equal
// deadlines.
func sortedByDeadline(ds []Due) []string {
	ds = slices.Clone(ds)
	slices.SortFunc(ds, func(a, b Due) int {
		return cmp.Or(a.Deadline.Compare(b.Deadline), strings.Compare(a.Key, b.Key))
	})
	return dueKeys(ds)
}

// TestAppendDueN checks the limit of AppendDueN: at most n Dues, the
// earliest first; the rest stay due, with their deadlines, for the next
// call; nothing comes out before its time. Every case starts from a
// Coordinator with a (due at 1 s), b (2 s), c and d (both 3 s) and e (10 s),
// all active at t0, and runs its calls in order.
func TestAppendDueN(t *testing.T) {
	type call struct {
		at   time.Duration
		n    int
		want []string // in deadline order; equal deadlines by key
		// next is NextDeadline after the call (0: none)
		next time.Duration
	}
	tests := []struct {
		name  string
		calls []call
	}{
		{name: "one at a time", calls: []call{
			{at: 5 * time.Second, n: 1, want: []string{"a"}, next: 2 * time.Second},
			{at: 5 * time.Second, n: 1, want: []string{"b"}, next: 3 * time.Second},
			{at: 5 * time.Second, n: 1, want: []string{"c|d"}, next: 3 * time.Second},
			{at: 5 * time.Second, n: 1, want: []string{"c|d"}, next: 10 * time.Second},
			{at: 5 * time.Second, n: 1, want: nil, next: 10 * time.Second},
			{at: 10 * time.Second, n: 1, want: []string{"e"}},
		}},
		{name: "ties split by the limit", calls: []call{
			{at: 5 * time.Second, n: 3, want: []string{"a", "b", "c|d"}, next: 3 * time.Second},
			{at: 5 * time.Second, n: 3, want: []string{"c|d"}, next: 10 * time.Second},
		}},
		{name: "limit above what is due", calls: []call{
			{at: 5 * time.Second, n: 10, want: []string{"a", "b", "c", "d"}, next: 10 * time.Second},
		}},
		{name: "zero is no limit", calls: []call{
			{at: 10 * time.Second, n: 0, want: []string{"a", "b", "c", "d", "e"}},
		}},
		{name: "negative is no limit", calls: []call{
			{at: 10 * time.Second, n: -1, want: []string{"a", "b", "c", "d", "e"}},
		}},
		{name: "the rest comes out next call", calls: []call{
			{at: 5 * time.Second, n: 2, want: []string{"a", "b"}, next: 3 * time.Second},
			{at: 5 * time.Second, n: 0, want: []string{"c", "d"}, next: 10 * time.Second},
		}},
		{name: "held back, then collected later", calls: []call{
			{at: 5 * time.Second, n: 1, want: []string{"a"}, next: 2 * time.Second},
			{at: time.Minute, n: 2, want: []string{"b", "c|d"}, next: 3 * time.Second},
			{at: time.Hour, n: 5, want: []string{"c|d", "e"}},
		}},
		{name: "never early", calls: []call{
			{at: 1500 * time.Millisecond, n: 5, want: []string{"a"}, next: 2 * time.Second},
			{at: 2*time.Second - 1, n: 5, want: nil, next: 2 * time.Second},
			{at: 2 * time.Second, n: 5, want: []string{"b"}, next: 3 * time.Second},
			{at: 3*time.Second - 1, n: 1, want: nil, next: 3 * time.Second},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(Policy{DefaultIdleTimeout: time.Second})
			deadlines := map[string]time.Duration{"a": time.Second, "b": 2 * time.Second, "c": 3 * time.Second, "d": 3 * time.Second, "e": 10 * time.Second}
			for _, k := range []string{"e", "d", "c", "b", "a"} {
				mustMark(t, c, k, t0, deadlines[k])
			}
			gens := map[string]uint64{}
			for k := range deadlines {
				b, _ := c.Get(k, t0)
				gens[k] = b.Generation
			}
			prefix := []Due{{Key: "already there"}}
			for i, cl := range tt.calls {
				now := t0.Add(cl.at)
				got := c.AppendDueN(prefix, now, cl.n)
				if len(got) == 0 || got[0].Key != prefix[0].Key {
					t.Fatalf("call %d: got %v; want the Dues after %v", i, dueKeys(got), dueKeys(prefix))
				}
				got = got[1:]
				if !slices.IsSortedFunc(got, func(a, b Due) int { return a.Deadline.Compare(b.Deadline) }) {
					t.Errorf("call %d: got %v; want deadline order", i, dueKeys(got))
				}
				// "c|d" is whichever of the two (equal deadlines) got holds.
				want := slices.Clone(cl.want)
				if j := slices.Index(want, "c|d"); j >= 0 {
					want[j] = "c"
					if slices.Contains(dueKeys(got), "d") {
						want[j] = "d"
					}
				}
				if keys := sortedByDeadline(got); !slices.Equal(keys, want) {
					t.Fatalf("call %d: AppendDueN(t0+%v, n=%d): got %v; want %v", i, cl.at, cl.n, keys, cl.want)
				}
				for _, d := range got {
					dl := deadlines[d.Key]
					if !d.Deadline.Equal(t0.Add(dl)) || d.IdleFor != cl.at || d.Reason != IdleTimeout || d.Attempt != 1 ||
						d.Generation != gens[d.Key] || d.Forgotten {
						t.Errorf("call %d: got %+v; want deadline t0+%v (the original), idle %v, attempt 1, generation %d",
							i, d, dl, cl.at, gens[d.Key])
					}
				}
				dl, ok := c.NextDeadline()
				if ok != (cl.next != 0) || ok && !dl.Equal(t0.Add(cl.next)) {
					t.Errorf("call %d: NextDeadline got %v, %v; want t0+%v (held back work is due at once)", i, dl.Sub(t0), ok, cl.next)
				}
				checkInvariants(t, c)
			}
		})
	}
}

// TestAppendDueNMixed limits a call that has every kind of work due (a
// re-send, a forced drain, an idle deadline and a forgetting) and checks
// they come out one per call in the order of their due times.
func TestAppendDueNMixed(t *testing.T) {
	p := Policy{DefaultIdleTimeout: time.Hour, RetryInterval: 4 * time.Second, RetryMaxInterval: 4 * time.Second, ForgetAfter: 20 * time.Second}
	c := New(p)
	mustMark(t, c, "resent", t0, 2*time.Second) // drained at 2 s, re-sent at 6 s + jitter (< 1 s)
	mustMark(t, c, "idle", t0, 8*time.Second)   // due at 8 s
	mustMark(t, c, "forced", t0, time.Hour)     // forced at 7.5 s
	mustMark(t, c, "quiet", t0, time.Hour)      // forgotten at 20 s
	mustMark(t, c, "stale", t0, time.Hour)      // forgotten at 25 s, though first keyed at 20 s
	c.MarkQuiesced("quiet", t0)
	c.MarkQuiesced("stale", t0)
	c.MarkQuiesced("stale", t0.Add(5*time.Second))
	if got := c.CollectDue(t0.Add(2 * time.Second)); !slices.Equal(dueKeys(got), []string{"resent"}) {
		t.Fatalf("CollectDue(t0+2s): got %v; want [resent]", dueKeys(got))
	}
	if !c.Force("forced", t0.Add(7500*time.Millisecond), Maintenance) {
		t.Fatalf("Force: got false; want true")
	}
	checkInvariants(t, c)
	now := t0.Add(21 * time.Second)
	resentAt := 6*time.Second + time.Duration(jitter(int64(time.Second), "resent", 1))
	tests := []struct {
		key       string
		reason    Reason
		attempt   int
		forgotten bool
		dueAt     time.Duration
	}{
		{key: "resent", reason: IdleTimeout, attempt: 2, dueAt: resentAt},
		{key: "forced", reason: Maintenance, attempt: 1, dueAt: 7500 * time.Millisecond},
		{key: "idle", reason: IdleTimeout, attempt: 1, dueAt: 8 * time.Second},
		{key: "quiet", forgotten: true, dueAt: 20 * time.Second},
	}
	for i, w := range tests {
		if dl, ok := c.NextDeadline(); !ok || !dl.Equal(t0.Add(w.dueAt)) {
			t.Fatalf("call %d: NextDeadline got t0+%v, %v; want t0+%v (%s)", i, dl.Sub(t0), ok, w.dueAt, w.key)
		}
		got := c.AppendDueN(nil, now, 1)
		if len(got) != 1 || got[0].Key != w.key || got[0].Reason != w.reason || got[0].Attempt != w.attempt || got[0].Forgotten != w.forgotten {
			t.Fatalf("call %d: AppendDueN(n=1): got %+v; want %s, reason %v, attempt %d, forgotten %v", i, got, w.key, w.reason, w.attempt, w.forgotten)
		}
		checkInvariants(t, c)
	}
	if got := c.AppendDueN(nil, now, 1); len(got) != 0 {
		t.Fatalf("AppendDueN after the due work: got %+v; want none (stale is forgotten at t0+25s)", got)
	}
	if dl, ok := c.NextDeadline(); !ok || !dl.After(now) {
		t.Errorf("NextDeadline after the due work: got t0+%v, %v; want after t0+21s", dl.Sub(t0), ok)
	}
	if got := c.CollectDue(t0.Add(25*time.Second - 1)); slices.Contains(dueKeys(got), "stale") {
		t.Errorf("CollectDue 1ns before stale's forgetting time: got %v; want no stale", dueKeys(got))
	}
	if got := c.CollectDue(t0.Add(25 * time.Second)); !slices.Contains(dueKeys(got), "stale") {
		t.Errorf("CollectDue at stale's forgetting time: got %v; want stale among them", dueKeys(got))
	}
	checkInvariants(t, c)
}
