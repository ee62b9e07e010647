package coordinator

import (
	"fmt"
	"math"
	"testing"
	"time"
)

var rt0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func retryPolicy() Policy {
	return Policy{DefaultIdleTimeout: 10 * time.Second, RetryInterval: time.Second, RetryMaxInterval: 4 * time.Second}
}

func TestRedeliveryBackoff(t *testing.T) {
	c := New(retryPolicy())
	markDefault(t, c, "k", rt0)
	first := c.CollectDue(rt0.Add(10 * time.Second))
	if len(first) != 1 || first[0].Attempt != 1 {
		t.Fatalf("first collect: got %+v; want one Due with Attempt 1", first)
	}
	gen := first[0].Generation
	// Retries after 1s, 2s, 4s, 4s (capped) since each previous attempt,
	// each plus its jitter: up to a quarter more, fixed by key and attempt.
	at := rt0.Add(10 * time.Second)
	for i, base := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second} {
		wait := base + time.Duration(jitter(int64(base/4), "k", uint16(i+1)))
		if wait < base || wait >= base+base/4 {
			t.Fatalf("attempt %d: got wait %v; want in [%v, %v)", i+2, wait, base, base+base/4)
		}
		if got := c.CollectDue(at.Add(wait - time.Nanosecond)); len(got) != 0 {
			t.Fatalf("attempt %d: 1ns early got %+v; want nothing", i+2, got)
		}
		dl, ok := c.NextDeadline()
		if !ok || !dl.Equal(at.Add(wait)) {
			t.Fatalf("attempt %d: NextDeadline got %v,%v; want %v", i+2, dl, ok, at.Add(wait))
		}
		at = at.Add(wait)
		got := c.CollectDue(at)
		if len(got) != 1 {
			t.Fatalf("attempt %d: got %d dues; want 1", i+2, len(got))
		}
		if got[0].Attempt != i+2 || got[0].Generation != gen || got[0].Reason != IdleTimeout {
			t.Fatalf("attempt %d: got %+v; want same generation %d, reason idle_timeout", i+2, got[0], gen)
		}
	}
	if got := c.Unacknowledged(); got != 1 {
		t.Fatalf("Unacknowledged: got %d; want 1", got)
	}
}

func TestRedeliveryEnds(t *testing.T) {
	tests := []struct {
		name     string
		end      func(c *Coordinator, now time.Time)
		wantUnak int
		wantNext bool
	}{
		{"quiesced", func(c *Coordinator, now time.Time) { c.MarkQuiesced("k", now) }, 0, false},
		{"removed", func(c *Coordinator, _ time.Time) { c.Remove("k") }, 0, false},
		{"activity", func(c *Coordinator, now time.Time) { markDefault(t, c, "k", now) }, 0, true},
		{"draining report keeps retrying", func(c *Coordinator, now time.Time) { c.MarkDraining("k", now) }, 1, true},
	}
	// The first redelivery: one interval and its jitter after the drain.
	retryAt := rt0.Add(11*time.Second + time.Duration(jitter(int64(time.Second/4), "k", 1)))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(retryPolicy())
			markDefault(t, c, "k", rt0)
			if got := c.CollectDue(rt0.Add(10 * time.Second)); len(got) != 1 {
				t.Fatalf("got %d dues; want 1", len(got))
			}
			tt.end(c, rt0.Add(10*time.Second))
			if got := c.Unacknowledged(); got != tt.wantUnak {
				t.Errorf("Unacknowledged: got %d; want %d", got, tt.wantUnak)
			}
			if got := c.CollectDue(retryAt.Add(-1)); len(got) != 0 {
				t.Errorf("after %s, 1ns before the redelivery: got %+v; want none", tt.name, got)
			}
			got := c.CollectDue(retryAt)
			if tt.wantUnak == 0 && len(got) != 0 {
				t.Errorf("after %s: got redelivery %+v; want none", tt.name, got)
			}
			if tt.wantUnak == 1 && (len(got) != 1 || got[0].Attempt != 2) {
				t.Errorf("after %s: got %+v; want attempt 2", tt.name, got)
			}
			if _, ok := c.NextDeadline(); ok != tt.wantNext {
				t.Errorf("NextDeadline ok: got %v; want %v", ok, tt.wantNext)
			}
			checkInvariants(t, c)
		})
	}
}

func TestNoRedeliveryWhenOff(t *testing.T) {
	c := New(Policy{DefaultIdleTimeout: time.Second})
	markDefault(t, c, "k", rt0)
	if got := c.CollectDue(rt0.Add(time.Second)); len(got) != 1 || got[0].Attempt != 1 {
		t.Fatalf("got %+v; want one Due with Attempt 1", got)
	}
	if got := c.CollectDue(rt0.Add(time.Hour)); len(got) != 0 {
		t.Fatalf("got %+v; want no redelivery", got)
	}
	if _, ok := c.NextDeadline(); ok {
		t.Fatal("NextDeadline: got true; want false with redelivery off")
	}
	if got := c.Unacknowledged(); got != 1 {
		t.Fatalf("Unacknowledged: got %d; want 1", got)
	}
}

func TestForcedQuiesceKeepsReasonOnRedelivery(t *testing.T) {
	c := New(retryPolicy())
	markDefault(t, c, "k", rt0)
	d := forceNow(t, c, "k", rt0.Add(time.Second), Maintenance)
	if d.Attempt != 1 || d.Reason != Maintenance {
		t.Fatalf("forced drain: got %+v; want attempt 1, maintenance", d)
	}
	retryAt := rt0.Add(2*time.Second + time.Duration(jitter(int64(time.Second/4), "k", 1)))
	if got := c.CollectDue(retryAt.Add(-1)); len(got) != 0 {
		t.Fatalf("1ns before the redelivery: got %+v; want none", got)
	}
	got := c.CollectDue(retryAt)
	if len(got) != 1 || got[0].Reason != Maintenance || got[0].Attempt != 2 {
		t.Fatalf("redelivery: got %+v; want maintenance attempt 2", got)
	}
	checkInvariants(t, c)
}

func TestRestore(t *testing.T) {
	now := rt0.Add(time.Hour)
	tests := []struct {
		name      string
		rec       Record
		wantGen   uint64 // the stored one, or a fresh one above the floor for 0
		wantState State
		wantDue   []time.Duration // offsets from now at which CollectDue must return the key
		wantUnak  int
	}{
		{"running gets a full timeout of grace", Record{Key: "k", IdleTimeout: 5 * time.Second, State: Running, Generation: 7}, 7, Running, []time.Duration{5 * time.Second}, 0},
		{"draining stays draining and is redelivered", Record{Key: "k", IdleTimeout: 5 * time.Second, State: Draining, Generation: 7, Reason: IdleTimeout}, 7, Draining,
			[]time.Duration{time.Second + time.Duration(jitter(int64(time.Second/4), "k", 1))}, 1},
		{"draining by report is not redelivered", Record{Key: "k", IdleTimeout: 5 * time.Second, State: Draining, Generation: 7}, 7, Draining, nil, 0},
		{"quiesced stays quiesced", Record{Key: "k", IdleTimeout: 5 * time.Second, State: Quiesced, Generation: 7, Reason: IdleTimeout}, 7, Quiesced, nil, 0},
		{"generation 0 gets a fresh one", Record{Key: "k", IdleTimeout: 5 * time.Second, State: Running}, 101, Running, []time.Duration{5 * time.Second}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(retryPolicy())
			c.SetGenerationFloor(100) // the stored high-water mark
			if err := c.Restore(tt.rec, now); err != nil {
				t.Fatalf("Restore: %v", err)
			}
			b, ok := c.Get("k", now)
			if !ok || b.State != tt.wantState || b.Generation != tt.wantGen || b.IdleTimeout != 5*time.Second {
				t.Fatalf("Get: got %+v; want state %v, generation %d, timeout 5s", b, tt.wantState, tt.wantGen)
			}
			if got := c.Unacknowledged(); got != tt.wantUnak {
				t.Errorf("Unacknowledged: got %d; want %d", got, tt.wantUnak)
			}
			if len(tt.wantDue) == 0 {
				if got := c.CollectDue(now.Add(time.Hour)); len(got) != 0 {
					t.Fatalf("got %+v; want nothing due", got)
				}
				return
			}
			if got := c.CollectDue(now.Add(tt.wantDue[0] - time.Nanosecond)); len(got) != 0 {
				t.Fatalf("early: got %+v; want nothing", got)
			}
			got := c.CollectDue(now.Add(tt.wantDue[0]))
			if len(got) != 1 || got[0].Generation != tt.wantGen {
				t.Fatalf("got %+v; want k with generation %d", got, tt.wantGen)
			}
			checkInvariants(t, c)
		})
	}
}

func TestRestoreGenerationsNeverReused(t *testing.T) {
	c := New(DefaultPolicy())
	if err := c.Restore(Record{Key: "a", IdleTimeout: time.Second, State: Running, Generation: 41}, rt0); err != nil {
		t.Fatal(err)
	}
	c.SetGenerationFloor(100)
	markDefault(t, c, "b", rt0)
	b, _ := c.Get("b", rt0)
	if b.Generation != 101 {
		t.Fatalf("new key generation: got %d; want 101", b.Generation)
	}
	c.SetGenerationFloor(50) // never moves back
	if got := c.Generation(); got != 101 {
		t.Fatalf("Generation: got %d; want 101", got)
	}
}

func TestRestoreRespectsLimitAndReplaces(t *testing.T) {
	c := New(Policy{DefaultIdleTimeout: time.Second, MaxBackends: 1})
	if err := c.Restore(Record{Key: "a", IdleTimeout: time.Second, State: Running, Generation: 1}, rt0); err != nil {
		t.Fatal(err)
	}
	if err := c.Restore(Record{Key: "b", IdleTimeout: time.Second, State: Running, Generation: 2}, rt0); err != ErrFull {
		t.Fatalf("second key: got %v; want ErrFull", err)
	}
	if err := c.Restore(Record{Key: "a", IdleTimeout: 3 * time.Second, State: Quiesced, Generation: 3}, rt0); err != nil {
		t.Fatalf("replace: %v", err)
	}
	if c.Len() != 1 || c.Count(Quiesced) != 1 || c.Count(Running) != 0 {
		t.Fatalf("counts: got len %d quiesced %d running %d; want 1 1 0", c.Len(), c.Count(Quiesced), c.Count(Running))
	}
	if _, ok := c.NextDeadline(); ok {
		t.Fatal("a replaced running entry is still scheduled")
	}
}

func TestExtend(t *testing.T) {
	c := New(retryPolicy())
	markDefault(t, c, "idle", rt0)
	markDefault(t, c, "drained", rt0.Add(-10*time.Second))
	if got := c.CollectDue(rt0); len(got) != 1 || got[0].Key != "drained" {
		t.Fatalf("got %+v; want drained due", got)
	}
	// An outage of 30 s, over at rt0+30s: the running backend's deadline
	// (rt0+10s) and the redelivery (rt0+1s and its jitter) both move 30 s
	// later.
	end := rt0.Add(30 * time.Second)
	c.Extend(30*time.Second, end)
	checkInvariants(t, c)
	retryAt := rt0.Add(31*time.Second + time.Duration(jitter(int64(time.Second/4), "drained", 1)))
	if got := c.CollectDue(retryAt.Add(-time.Nanosecond)); len(got) != 0 {
		t.Fatalf("before the shifted times: got %+v; want nothing", got)
	}
	got := c.CollectDue(retryAt)
	if len(got) != 1 || got[0].Key != "drained" || got[0].Attempt != 2 {
		t.Fatalf("got %+v; want the redelivery of drained", got)
	}
	// The next redelivery (attempt 3) waits 2 s and its jitter: before
	// rt0+34s; the idle deadline is rt0+40s.
	got = c.CollectDue(rt0.Add(40 * time.Second))
	if len(got) != 2 || got[0].Key != "drained" || got[0].Attempt != 3 || got[1].Key != "idle" || got[1].IdleFor != 10*time.Second {
		t.Fatalf("got %+v; want drained attempt 3, then idle with IdleFor 10s (the outage does not count)", got)
	}
	// No outage, no change.
	before, _ := c.NextDeadline()
	c.Extend(0, end)
	c.Extend(-time.Second, end)
	if after, _ := c.NextDeadline(); !after.Equal(before) {
		t.Errorf("NextDeadline after Extend(0) and Extend(-1s): got %v; want unchanged %v", after, before)
	}
	checkInvariants(t, c)
}

func markDefault(t *testing.T, c *Coordinator, key string, now time.Time) {
	t.Helper()
	if _, err := c.MarkActivity(key, now); err != nil {
		t.Fatalf("MarkActivity(%q): %v", key, err)
	}
}

func TestRetryBackoffHugeCapDoesNotOverflow(t *testing.T) {
	c := New(Policy{DefaultIdleTimeout: time.Second, RetryInterval: time.Second, RetryMaxInterval: time.Duration(math.MaxInt64)})
	markDefault(t, c, "k", rt0)
	at := rt0.Add(time.Second)
	if got := c.CollectDue(at); len(got) != 1 {
		t.Fatalf("got %d dues; want 1", len(got))
	}
	// Each redelivery waits twice the last: after 70 attempts the wait
	// would overflow int64 without the cap check.
	wait := time.Second
	for attempt := 2; attempt <= 70; attempt++ {
		dl, ok := c.NextDeadline()
		if !ok || dl.Before(at) {
			t.Fatalf("attempt %d: NextDeadline got %v, %v; want a time after %v", attempt, dl, ok, at)
		}
		// The wait after attempt n, jitter included.
		jittered := wait + time.Duration(jitter(int64(wait/4), "k", uint16(attempt-1)))
		if attempt < 40 && !dl.Equal(at.Add(jittered)) {
			t.Fatalf("attempt %d: NextDeadline got %v; want %v", attempt, dl, at.Add(jittered))
		}
		if dl.Sub(rt0) > 100*365*24*time.Hour {
			break // far enough: the epoch offset saturates from here on
		}
		at = dl
		if got := c.CollectDue(at); len(got) != 1 || got[0].Attempt != attempt {
			t.Fatalf("attempt %d: got %+v; want one Due", attempt, got)
		}
		wait *= 2
	}
}

// TestListPageMatchesFullSort: List returns exactly the first limit keys of
// the full sorted listing, with the full total.
func TestListPageMatchesFullSort(t *testing.T) {
	c := New(DefaultPolicy())
	for i := range 500 {
		markDefault(t, c, fmt.Sprintf("k%03d.%d", (i*7919)%500, i%3), rt0)
	}
	all, total := c.List(rt0, nil, 0)
	if total != 500 || len(all) != 500 {
		t.Fatalf("List all: got %d of %d; want 500 of 500", len(all), total)
	}
	odd := func(k string) bool { return k[len(k)-1] == '1' }
	var allOdd []Backend
	for _, b := range all {
		if odd(b.Key) {
			allOdd = append(allOdd, b)
		}
	}
	for _, limit := range []int{1, 2, 17, 166, 167, 499, 500, 501} {
		page, n := c.List(rt0, nil, limit)
		want := all[:min(limit, len(all))]
		if n != 500 || len(page) != len(want) {
			t.Fatalf("limit %d: got %d entries, total %d; want %d, 500", limit, len(page), n, len(want))
		}
		for i := range page {
			if page[i].Key != want[i].Key {
				t.Fatalf("limit %d: entry %d got %q; want %q", limit, i, page[i].Key, want[i].Key)
			}
		}
		page, n = c.List(rt0, odd, limit)
		if n != len(allOdd) || len(page) != min(limit, len(allOdd)) || (len(page) > 0 && page[len(page)-1].Key != allOdd[len(page)-1].Key) {
			t.Fatalf("limit %d with match: got %d entries (total %d); want the first %d of %d", limit, len(page), n, min(limit, len(allOdd)), len(allOdd))
		}
	}
}

// TestRestoreAt: a running backend restored with its last activity is due
// at that activity plus its timeout (at once when that has passed, never
// before it); a last activity after now counts as now; non-running
// backends are restored as by Restore.
func TestRestoreAt(t *testing.T) {
	now := rt0.Add(time.Hour)
	tests := []struct {
		name    string
		last    time.Duration // lastActive - now
		state   State
		wantDue time.Duration // from now; negative: nothing due within an hour
	}{
		{"seen 2 s ago, 5 s timeout: due in 3 s", -2 * time.Second, Running, 3 * time.Second},
		{"seen 9 s ago: due at once", -9 * time.Second, Running, 0},
		{"seen just now", 0, Running, 5 * time.Second},
		{"a time after now counts as now", 3 * time.Second, Running, 5 * time.Second},
		{"quiesced stays quiesced", -9 * time.Second, Quiesced, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(retryPolicy())
			if _, err := c.MarkActivity("other", rt0); err != nil { // an epoch before the restore
				t.Fatal(err)
			}
			c.Remove("other")
			rec := Record{Key: "k", IdleTimeout: 5 * time.Second, State: tt.state, Generation: 3, Reason: IdleTimeout}
			if err := c.RestoreAt(rec, now, now.Add(tt.last)); err != nil {
				t.Fatal(err)
			}
			if tt.wantDue < 0 {
				if got := c.CollectDue(now.Add(time.Hour)); len(got) != 0 {
					t.Fatalf("got %+v; want nothing due", got)
				}
				return
			}
			if tt.wantDue > 0 {
				if got := c.CollectDue(now.Add(tt.wantDue - time.Nanosecond)); len(got) != 0 {
					t.Fatalf("early: got %+v", got)
				}
			}
			if got := c.CollectDue(now.Add(tt.wantDue)); len(got) != 1 || got[0].Key != "k" {
				t.Fatalf("at %v: got %+v; want k", tt.wantDue, got)
			}
			checkInvariants(t, c)
		})
	}
}
