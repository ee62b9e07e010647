package coordinator

import (
	"maps"
	"testing"
	"time"
)

// t0 is the fixed start of every test's clock; tests advance it with
// t0.Add(d) and never read the wall clock.
var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// year is a calendar-free 365-day year, for the far-future cases.
const year = 365 * 24 * time.Hour

// fataler is what checkInvariants needs from a *testing.T or a *rapid.T.
type fataler interface {
	Helper()
	Fatalf(format string, args ...any)
}

// checkInvariants verifies the internal structure of c. The heap holds, at
// the position each records, exactly the entries with a next action: every
// Running entry, every Draining entry that awaits a redelivery (sent a
// quiesce, redelivery on) and, with forgetting on, every other Draining or
// Quiesced entry; no other entry is in it. The heap is ordered by due; a
// Running heap key is a lower bound of the real deadline unless a forced
// drain is pending (then it is the time it was asked for); a forgetting key
// is a lower bound of touched+ForgetAfter. Only Running entries are forced,
// only Draining entries count attempts, and an unacknowledged drain has a
// reason. The per-state, unacknowledged and per-instance counts match the
// entries; and the key index holds exactly the entries
// of the map, in strictly ascending key order.
func checkInvariants(tb fataler, c *Coordinator) {
	tb.Helper()
	var counts [Quiesced + 1]int
	scheduled, unacked := 0, 0
	perInst := map[string]int32{}
	for k, e := range c.entries {
		if e.key != k {
			tb.Fatalf("entry under %q has key %q", k, e.key)
		}
		if e.state < Running || e.state > Quiesced {
			tb.Fatalf("entry %q: got state %d; want a valid state", k, e.state)
		}
		if e.timeout < int64(MinTimeout) {
			tb.Fatalf("entry %q: got timeout %v; want >= %v", k, time.Duration(e.timeout), MinTimeout)
		}
		counts[e.state]++
		perInst[instance(k)]++
		if e.state != Draining && e.attempt != 0 {
			tb.Fatalf("%v entry %q: got attempt %d; want 0", e.state, k, e.attempt)
		}
		if e.state != Running && e.forced != 0 {
			tb.Fatalf("%v entry %q: got forced %v; want only Running entries forced", e.state, k, e.forced)
		}
		if e.state == Draining && e.attempt > 0 {
			unacked++
			if e.reason == 0 {
				tb.Fatalf("entry %q: got an unacknowledged drain (attempt %d) without a reason", k, e.attempt)
			}
		}
		redelivering := e.state == Draining && e.attempt > 0 && c.retry > 0
		inHeap := e.state == Running || redelivering || c.forget > 0
		switch {
		case inHeap && (e.idx < 0 || int(e.idx) >= len(c.heap) || c.heap[e.idx] != e):
			tb.Fatalf("%v entry %q (attempt %d): got heap index %d; want its position in a heap of %d", e.state, k, e.attempt, e.idx, len(c.heap))
		case !inHeap && e.idx != -1:
			tb.Fatalf("%v entry %q (attempt %d): got heap index %d; want -1", e.state, k, e.attempt, e.idx)
		}
		if inHeap {
			scheduled++
		}
		switch {
		case e.state == Running && e.forced == 0 && e.due > e.deadline():
			tb.Fatalf("entry %q: got heap key %d; want <= deadline %d", k, e.due, e.deadline())
		case e.state != Running && !redelivering && inHeap && e.due > addSat(e.touched, c.forget):
			tb.Fatalf("%v entry %q: got heap key %d; want <= forgetting time %d", e.state, k, e.due, addSat(e.touched, c.forget))
		}
	}
	if len(c.heap) != scheduled {
		tb.Fatalf("got heap length %d; want %d scheduled entries", len(c.heap), scheduled)
	}
	for i := 1; i < len(c.heap); i++ {
		if p := (i - 1) / 2; c.heap[i].due < c.heap[p].due {
			tb.Fatalf("heap order: got due[%d]=%d < due[parent %d]=%d", i, c.heap[i].due, p, c.heap[p].due)
		}
	}
	for s := Running; s <= Quiesced; s++ {
		if got := c.Count(s); got != counts[s] {
			tb.Fatalf("Count(%v): got %d; want %d", s, got, counts[s])
		}
	}
	if got, want := c.Len(), counts[Running]+counts[Draining]+counts[Quiesced]; got != want {
		tb.Fatalf("Len: got %d; want %d (sum of the counts)", got, want)
	}
	if got := c.Unacknowledged(); got != unacked {
		tb.Fatalf("Unacknowledged: got %d; want %d (Draining entries with attempts)", got, unacked)
	}
	switch {
	case c.policy.MaxPerInstance <= 0 && c.perInst != nil:
		tb.Fatalf("per-instance counts kept without MaxPerInstance: %v", c.perInst)
	case c.policy.MaxPerInstance > 0 && !maps.Equal(c.perInst, perInst):
		tb.Fatalf("per-instance counts: got %v; want %v", c.perInst, perInst)
	}
	for inst, n := range perInst {
		if c.policy.MaxPerInstance > 0 && int(n) > c.policy.MaxPerInstance {
			tb.Fatalf("instance %q: got %d backends; want at most MaxPerInstance %d", inst, n, c.policy.MaxPerInstance)
		}
	}
	if got, want := c.index.Len(), len(c.entries); got != want {
		tb.Fatalf("key index: got %d entries; want %d", got, want)
	}
	var prev *entry
	c.index.Ascend(func(e *entry) bool {
		if c.entries[e.key] != e {
			tb.Fatalf("key index: entry %q is not the map's", e.key)
		}
		if prev != nil && prev.key >= e.key {
			tb.Fatalf("key index order: got %q before %q", prev.key, e.key)
		}
		prev = e
		return true
	})
}

func mustMark(tb testing.TB, c *Coordinator, key string, now time.Time, timeout time.Duration) Change {
	tb.Helper()
	ch, err := c.MarkActivityWithTimeout(key, now, timeout)
	if err != nil {
		tb.Fatalf("MarkActivityWithTimeout(%q): got error %v; want nil", key, err)
	}
	return ch
}

func dueKeys(ds []Due) []string {
	keys := make([]string, len(ds))
	for i, d := range ds {
		keys[i] = d.Key
	}
	return keys
}

// step is one call on a Coordinator. A subtest that needs a history builds
// it from steps on its own fresh Coordinator, so that it runs alone and in
// any order. Times are t0 plus an offset.
type step func(tb testing.TB, c *Coordinator)

func runSteps(tb testing.TB, c *Coordinator, steps []step) {
	tb.Helper()
	for _, s := range steps {
		s(tb, c)
	}
}

// stepMark is MarkActivity(key, t0+d) with the default timeout.
func stepMark(key string, d time.Duration) step {
	return func(tb testing.TB, c *Coordinator) {
		tb.Helper()
		if _, err := c.MarkActivity(key, t0.Add(d)); err != nil {
			tb.Fatalf("MarkActivity(%q, t0+%v): got error %v; want nil", key, d, err)
		}
	}
}

// stepMarkTimeout is MarkActivityWithTimeout(key, t0+d, timeout).
func stepMarkTimeout(key string, d, timeout time.Duration) step {
	return func(tb testing.TB, c *Coordinator) {
		tb.Helper()
		mustMark(tb, c, key, t0.Add(d), timeout)
	}
}

// stepDrain is MarkDraining(key, t0+d) of a tracked key.
func stepDrain(key string, d time.Duration) step {
	return func(tb testing.TB, c *Coordinator) {
		tb.Helper()
		if !c.MarkDraining(key, t0.Add(d)) {
			tb.Fatalf("MarkDraining(%q, t0+%v): got false; want true", key, d)
		}
	}
}

// stepQuiesced is MarkQuiesced(key, t0+d) of a tracked key.
func stepQuiesced(key string, d time.Duration) step {
	return func(tb testing.TB, c *Coordinator) {
		tb.Helper()
		if !c.MarkQuiesced(key, t0.Add(d)) {
			tb.Fatalf("MarkQuiesced(%q, t0+%v): got false; want true", key, d)
		}
	}
}

// stepForce is forceNow(key, t0+d, Maintenance) of a Running key: a forced
// drain, collected at once.
func stepForce(key string, d time.Duration) step {
	return func(tb testing.TB, c *Coordinator) {
		tb.Helper()
		forceNow(tb, c, key, t0.Add(d), Maintenance)
	}
}

// forceNow drains the Running backend key for reason r at now, as the
// removed Quiesce did: Force, then CollectDue at the same now, which must
// return key and nothing else. It returns key's Due.
func forceNow(tb testing.TB, c *Coordinator, key string, now time.Time, r Reason) Due {
	tb.Helper()
	if !c.Force(key, now, r) {
		tb.Fatalf("Force(%q, %v): got false; want true", key, r)
	}
	got := c.CollectDue(now)
	if len(got) != 1 || got[0].Key != key {
		tb.Fatalf("CollectDue right after Force(%q): got %v; want [%s] alone", key, dueKeys(got), key)
	}
	return got[0]
}

// stepCollect is CollectDue(t0+d); its Dues are dropped.
func stepCollect(d time.Duration) step {
	return func(tb testing.TB, c *Coordinator) { c.CollectDue(t0.Add(d)) }
}

// stepRemove is Remove(key), tracked or not.
func stepRemove(key string) step {
	return func(tb testing.TB, c *Coordinator) { c.Remove(key) }
}

// churnA takes the tracked Running key "a" through every transition: refresh,
// timeout change, drain, quiesce, rearm, collection, forced quiesce, remove
// and re-add. It leaves "a" Running with the default timeout, last active at
// t0, and has collected every backend that was Running at t0+1h.
func churnA() []step {
	return []step{
		stepMark("a", time.Millisecond), stepMarkTimeout("a", 0, time.Minute),
		stepDrain("a", 0), stepQuiesced("a", 0), stepMark("a", 0),
		stepCollect(time.Hour), stepMark("a", 0),
		stepForce("a", 0), stepMark("a", 0),
		stepRemove("a"), stepMark("a", 0),
		stepRemove("a"), stepMark("a", 0),
	}
}

func ptr[T any](v T) *T { return &v }
