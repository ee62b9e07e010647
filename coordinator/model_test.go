package coordinator

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// refModel is a deliberately naive reference for Coordinator: a map and a
// full scan for every question, with times kept as time.Time.
type refModel struct {
	defTimeout time.Duration
	max        int
	// retry and retryMax are the redelivery policy as the package doc
	// states it; retry 0 means redelivery is off.
	retry    time.Duration
	retryMax time.Duration
	m        map[string]*refBackend
	// maxGen is the largest generation seen so far, handed out or restored:
	// every new generation must exceed it.
	maxGen uint64
}

type refBackend struct {
	last    time.Time
	timeout time.Duration
	state   State
	// gen is the Generation the Coordinator reported when the backend last
	// became Running (or the one restored). The model does not predict the
	// values, only that a new one appears exactly when the backend becomes
	// Running and exceeds every generation before it.
	gen uint64
	// reason is why the backend was drained. The model promises it only on
	// an unacknowledged drain (attempts > 0), whose redeliveries, before and
	// after a restart, carry it.
	reason Reason
	// attempts counts the emissions of the current id of a Draining backend
	// that no broker has acknowledged (quiesced, removed or activity); 0
	// otherwise. Such a backend is unacknowledged.
	attempts int
	// next is when the next redelivery is due (attempts > 0, retry on).
	next time.Time
}

func newRefModel(p Policy) *refModel {
	r := &refModel{defTimeout: p.DefaultIdleTimeout, max: p.MaxBackends, m: map[string]*refBackend{}}
	if p.RetryInterval > 0 {
		r.retry, r.retryMax = p.RetryInterval, p.RetryMaxInterval
		if r.retryMax <= 0 {
			r.retryMax = 16 * r.retry
		}
		if r.retryMax < r.retry {
			r.retryMax = r.retry
		}
	}
	return r
}

func refClamp(d time.Duration) time.Duration {
	if d < time.Millisecond { // zero, negative and sub-millisecond alike
		return time.Millisecond
	}
	return d
}

func refIdle(now, last time.Time) time.Duration {
	if now.Before(last) {
		return 0
	}
	return now.Sub(last)
}

// delay is the wait after attempt n (n >= 1): the retry interval doubled
// n-1 times, but never more than retryMax.
func (r *refModel) delay(n int) time.Duration {
	d := r.retry
	for i := 1; i < n; i++ {
		d *= 2
		if d >= r.retryMax {
			break
		}
	}
	return min(d, r.retryMax)
}

// redelivering reports whether b waits for a redelivery.
func (r *refModel) redelivering(b *refBackend) bool {
	return r.retry > 0 && b.state == Draining && b.attempts > 0
}

// mark returns the expected Change and error, and whether the backend has
// just become Running (so a new generation is expected).
func (r *refModel) mark(key string, now time.Time, timeout time.Duration) (Change, bool, error) {
	timeout = refClamp(timeout)
	b, ok := r.m[key]
	if !ok {
		if r.max > 0 && len(r.m) >= r.max {
			return 0, false, ErrFull
		}
		r.m[key] = &refBackend{last: now, timeout: timeout, state: Running}
		return Added, true, nil
	}
	var ch Change
	if b.timeout != timeout {
		ch |= TimeoutChanged
	}
	becameRunning := b.state != Running
	if becameRunning {
		ch |= Rearmed
		b.reason, b.attempts, b.next = 0, 0, time.Time{}
	}
	b.last, b.timeout, b.state = now, timeout, Running
	return ch, becameRunning, nil
}

// drain moves the Running backend b to Draining for reason and describes
// the first emission.
func (r *refModel) drain(key string, b *refBackend, now time.Time, reason Reason) Due {
	b.state, b.reason, b.attempts = Draining, reason, 1
	if r.retry > 0 {
		b.next = now.Add(r.delay(1))
	}
	return r.emission(key, b, now)
}

// redeliver re-sends the current emission of the Draining backend b.
func (r *refModel) redeliver(key string, b *refBackend, now time.Time) Due {
	b.attempts++
	b.next = now.Add(r.delay(b.attempts))
	return r.emission(key, b, now)
}

func (r *refModel) emission(key string, b *refBackend, now time.Time) Due {
	return Due{
		Key:               key,
		IdleFor:           refIdle(now, b.last),
		ConfiguredTimeout: b.timeout,
		Reason:            b.reason,
		Deadline:          b.last.Add(b.timeout),
		Generation:        b.gen,
		Attempt:           b.attempts,
	}
}

// collect returns the due backends sorted by key, and when each was due
// (its deadline, or its redelivery time).
func (r *refModel) collect(now time.Time) ([]Due, map[string]time.Time) {
	var out []Due
	at := map[string]time.Time{}
	for _, k := range r.keys() {
		b := r.m[k]
		switch {
		case b.state == Running && refIdle(now, b.last) >= b.timeout:
			at[k] = b.last.Add(b.timeout)
			out = append(out, r.drain(k, b, now, IdleTimeout))
		case r.redelivering(b) && !now.Before(b.next):
			at[k] = b.next
			out = append(out, r.redeliver(k, b, now))
		}
	}
	return out, at
}

func (r *refModel) nextDeadline() (time.Time, bool) {
	var best time.Time
	found := false
	for _, b := range r.m {
		var d time.Time
		switch {
		case b.state == Running:
			d = b.last.Add(b.timeout)
		case r.redelivering(b):
			d = b.next
		default:
			continue
		}
		if !found || d.Before(best) {
			best, found = d, true
		}
	}
	return best, found
}

// extend is an outage of d: Running backends act as if their last activity
// were d later, and pending redeliveries wait d longer.
func (r *refModel) extend(d time.Duration) {
	if d <= 0 {
		return
	}
	for _, b := range r.m {
		switch {
		case b.state == Running:
			b.last = b.last.Add(d)
		case r.redelivering(b):
			b.next = b.next.Add(d)
		}
	}
}

// restore is Coordinator.Restore as its doc states it.
func (r *refModel) restore(rec Record, now time.Time) error {
	if _, ok := r.m[rec.Key]; !ok && r.max > 0 && len(r.m) >= r.max {
		return ErrFull
	}
	st := rec.State
	if st < Running || st > Quiesced {
		st = Running
	}
	b := &refBackend{last: now, timeout: refClamp(rec.IdleTimeout), state: st, gen: rec.Generation, reason: rec.Reason}
	if st == Draining && rec.Reason != 0 {
		// Drained by an emission: it is re-sent, same id.
		b.attempts = 1
		if r.retry > 0 {
			b.next = now.Add(r.delay(1))
		}
	}
	r.m[rec.Key] = b
	r.maxGen = max(r.maxGen, rec.Generation)
	return nil
}

// restart is a worker restart from the registry at now: nothing changes but
// the clock. The registry keeps no activity times, so every backend was
// last active now, and Running backends get a full timeout of grace; an
// unacknowledged drain is re-sent (same generation) one retry interval from
// now, counting from attempt 1 again since the registry keeps no attempts;
// an acknowledged one stays acknowledged.
func (r *refModel) restart(now time.Time) {
	for _, b := range r.m {
		b.last = now
		if b.state == Draining && b.attempts > 0 {
			b.attempts = 1
			if r.retry > 0 {
				b.next = now.Add(r.delay(1))
			}
		}
	}
}

func (r *refModel) keys() []string {
	keys := make([]string, 0, len(r.m))
	for k := range r.m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func (r *refModel) count(s State) int {
	n := 0
	for _, b := range r.m {
		if b.state == s {
			n++
		}
	}
	return n
}

func (r *refModel) unacknowledged() int {
	n := 0
	for _, b := range r.m {
		if b.state == Draining && b.attempts > 0 {
			n++
		}
	}
	return n
}

// sameBackend compares a snapshot with the model. Reason is compared where
// it is promised: on an unacknowledged drain, whose redeliveries carry it.
func sameBackend(got Backend, key string, want *refBackend, now time.Time) bool {
	return got.Key == key && got.State == want.state && got.LastActive.Equal(want.last) &&
		got.IdleFor == refIdle(now, want.last) && got.IdleTimeout == want.timeout && got.Generation == want.gen &&
		got.Attempts == want.attempts && (want.attempts == 0 || got.Reason == want.reason)
}

// cloneCoordinator deep-copies c, so the check after each step can ask
// NextDeadline (which tidies the heap) without disturbing the lazy state the
// next operation sees.
func cloneCoordinator(c *Coordinator) *Coordinator {
	d := *c
	d.entries = make(map[string]*entry, len(c.entries))
	d.heap = make([]*entry, len(c.heap))
	d.index = newIndex()
	for k, e := range c.entries {
		ce := *e
		d.entries[k] = &ce
		d.index.ReplaceOrInsert(&ce)
		if ce.idx >= 0 {
			d.heap[ce.idx] = &ce
		}
	}
	return &d
}

var modelKeys = []string{"a", "b", "c", "d", "e", "f"}

func sameDue(got, want Due) bool {
	return got.Key == want.Key && got.IdleFor == want.IdleFor && got.ConfiguredTimeout == want.ConfiguredTimeout &&
		got.Reason == want.Reason && got.Deadline.Equal(want.Deadline) && got.Generation == want.Generation &&
		got.Attempt == want.Attempt
}

// modelCoverage counts, over all the runs of TestModel, the situations the
// reliability features are about, so the test fails if its generators stop
// reaching them.
type modelCoverage struct {
	redeliveries, restartsPending, restoresDraining, extendsPending int
}

// TestModel runs random operation sequences against the Coordinator and the
// naive reference and checks they agree after every step.
func TestModel(t *testing.T) {
	var cov modelCoverage
	rapid.Check(t, func(t *rapid.T) {
		retry := rapid.SampledFrom([]time.Duration{0, 2 * time.Millisecond, 3 * time.Millisecond}).Draw(t, "retry")
		p := Policy{
			DefaultIdleTimeout: rapid.SampledFrom([]time.Duration{-time.Millisecond, 0, 2 * time.Millisecond, 5 * time.Millisecond}).Draw(t, "default_timeout"),
			MaxBackends:        rapid.IntRange(0, 7).Draw(t, "max_backends"),
			RetryInterval:      retry,
			// 0 selects 16 x retry; 1 ms is below retry and lifts to it.
			RetryMaxInterval: rapid.SampledFrom([]time.Duration{0, time.Millisecond, 4 * time.Millisecond, 7 * time.Millisecond}).Draw(t, "retry_max"),
		}
		ref := newRefModel(p)
		c := New(p)
		now := t0

		keyGen := rapid.SampledFrom(modelKeys)
		reasonGen := rapid.SampledFrom([]Reason{IdleTimeout, BrokerShutdown, Maintenance})
		subsetGen := rapid.SliceOfDistinct(keyGen, func(k string) string { return k })

		// fresh checks the generation of a backend that has just become
		// Running: greater than every generation before it.
		fresh := func(t *rapid.T, op, key string) {
			b, ok := c.Get(key, now)
			if !ok {
				t.Fatalf("%s %q: got untracked after success", op, key)
			}
			if b.Generation <= ref.maxGen {
				t.Fatalf("%s %q: got generation %d; want a new one above %d", op, key, b.Generation, ref.maxGen)
			}
			ref.maxGen = b.Generation
			ref.m[key].gen = b.Generation
		}

		// afterMark checks the result of a mark against the model and records
		// the generation of a backend that has just become Running.
		afterMark := func(t *rapid.T, key string, got Change, err error, want Change, wantErr error, becameRunning bool) {
			if got != want || !errors.Is(err, wantErr) {
				t.Fatalf("mark %q: got %03b, %v; want %03b, %v", key, got, err, want, wantErr)
			}
			if becameRunning {
				fresh(t, "mark", key)
			}
		}

		// checkDues compares dues with the model's. CollectDue promises the
		// order of due times (at), the Quiesce methods the order of keys.
		checkDues := func(t *rapid.T, op string, got, want []Due, at map[string]time.Time) {
			if at != nil {
				if !slices.IsSortedFunc(got, func(a, b Due) int { return at[a.Key].Compare(at[b.Key]) }) {
					t.Fatalf("%s at %v: got %v; want the order of due times %v", op, now.Sub(t0), dueKeys(got), at)
				}
				got = slices.Clone(got)
				slices.SortFunc(got, func(a, b Due) int { return strings.Compare(a.Key, b.Key) })
			}
			if len(got) != len(want) {
				t.Fatalf("%s at %v: got %v; want %v", op, now.Sub(t0), dueKeys(got), dueKeys(want))
			}
			for i := range want {
				if !sameDue(got[i], want[i]) {
					t.Fatalf("%s at %v: got %+v; want %+v", op, now.Sub(t0), got[i], want[i])
				}
				if want[i].Attempt > 1 {
					cov.redeliveries++
				}
			}
		}

		collect := func(t *rapid.T) {
			want, at := ref.collect(now)
			checkDues(t, "CollectDue", c.CollectDue(now), want, at)
		}

		t.Repeat(map[string]func(*rapid.T){
			"MarkActivity": func(t *rapid.T) {
				k := keyGen.Draw(t, "key")
				want, becameRunning, wantErr := ref.mark(k, now, ref.defTimeout)
				got, err := c.MarkActivity(k, now)
				afterMark(t, k, got, err, want, wantErr, becameRunning)
			},
			"MarkActivityWithTimeout": func(t *rapid.T) {
				k := keyGen.Draw(t, "key")
				d := time.Duration(rapid.IntRange(-1, 5).Draw(t, "timeout_ms")) * time.Millisecond
				want, becameRunning, wantErr := ref.mark(k, now, d)
				got, err := c.MarkActivityWithTimeout(k, now, d)
				afterMark(t, k, got, err, want, wantErr, becameRunning)
			},
			"MarkDraining": func(t *rapid.T) {
				k := keyGen.Draw(t, "key")
				b, want := ref.m[k]
				if want && b.state != Draining {
					// A report, not an emission: nothing to redeliver.
					b.state, b.attempts = Draining, 0
				}
				if got := c.MarkDraining(k); got != want {
					t.Fatalf("MarkDraining(%q): got %v; want %v", k, got, want)
				}
			},
			"MarkQuiesced": func(t *rapid.T) {
				k := keyGen.Draw(t, "key")
				b, want := ref.m[k]
				if want {
					b.state, b.attempts = Quiesced, 0
				}
				if got := c.MarkQuiesced(k); got != want {
					t.Fatalf("MarkQuiesced(%q): got %v; want %v", k, got, want)
				}
			},
			"Remove": func(t *rapid.T) {
				k := keyGen.Draw(t, "key")
				_, want := ref.m[k]
				delete(ref.m, k)
				if got := c.Remove(k); got != want {
					t.Fatalf("Remove(%q): got %v; want %v", k, got, want)
				}
			},
			"Advance": func(t *rapid.T) {
				// Mostly forward, sometimes backwards, in whole milliseconds
				// so deadlines are often hit exactly.
				now = now.Add(time.Duration(rapid.IntRange(-3, 8).Draw(t, "advance_ms")) * time.Millisecond)
			},
			"Nudge": func(t *rapid.T) {
				now = now.Add(time.Duration(rapid.IntRange(-1, 1).Draw(t, "nudge_ns")))
			},
			"CollectDue": collect,
			// AdvanceCollect is the worker's timer firing: it makes the
			// sequences that reach redelivery (drain, wait, drain again)
			// common.
			"AdvanceCollect": func(t *rapid.T) {
				now = now.Add(time.Duration(rapid.IntRange(1, 4).Draw(t, "tick_ms")) * time.Millisecond)
				collect(t)
			},
			"NextDeadline": func(t *rapid.T) {
				got, ok := c.NextDeadline()
				want, wantOK := ref.nextDeadline()
				if ok != wantOK || !got.Equal(want) {
					t.Fatalf("NextDeadline: got %v, %v; want %v, %v", got, ok, want, wantOK)
				}
			},
			"Quiesce": func(t *rapid.T) {
				k := keyGen.Draw(t, "key")
				r := reasonGen.Draw(t, "reason")
				var want Due
				b, wantOK := ref.m[k]
				wantOK = wantOK && b.state == Running
				if wantOK {
					want = ref.drain(k, b, now, r)
				}
				got, ok := c.Quiesce(k, now, r)
				if ok != wantOK || !sameDue(got, want) {
					t.Fatalf("Quiesce(%q, %v): got %+v, %v; want %+v, %v", k, r, got, ok, want, wantOK)
				}
			},
			"QuiesceMatching": func(t *rapid.T) {
				set := subsetGen.Draw(t, "keys")
				r := reasonGen.Draw(t, "reason")
				var want []Due
				for _, k := range ref.keys() {
					if b := ref.m[k]; b.state == Running && slices.Contains(set, k) {
						want = append(want, ref.drain(k, b, now, r))
					}
				}
				got := c.QuiesceMatching(now, r, func(k string) bool { return slices.Contains(set, k) })
				checkDues(t, "QuiesceMatching", got, want, nil)
			},
			"Extend": func(t *rapid.T) {
				d := time.Duration(rapid.IntRange(-1, 6).Draw(t, "outage_ms")) * time.Millisecond
				if _, pending := ref.nextDeadline(); pending && d > 0 {
					cov.extendsPending++
				}
				ref.extend(d)
				c.Extend(d)
			},
			"Restore": func(t *rapid.T) {
				rec := Record{
					Key:         keyGen.Draw(t, "key"),
					IdleTimeout: time.Duration(rapid.IntRange(-1, 5).Draw(t, "timeout_ms")) * time.Millisecond,
					// 0 is no state at all: restored as Running.
					State:      rapid.SampledFrom([]State{0, Running, Draining, Quiesced}).Draw(t, "state"),
					Generation: rapid.Uint64Range(0, 40).Draw(t, "generation"),
				}
				if rec.State == Draining || rec.State == Quiesced {
					// 0: drained by a report, not an emission.
					rec.Reason = rapid.SampledFrom([]Reason{0, IdleTimeout, BrokerShutdown, Maintenance}).Draw(t, "reason")
				}
				if rec.State == Draining && rec.Reason != 0 {
					cov.restoresDraining++
				}
				wantErr := ref.restore(rec, now)
				if err := c.Restore(rec, now); !errors.Is(err, wantErr) {
					t.Fatalf("Restore(%+v): got %v; want %v", rec, err, wantErr)
				}
			},
			// Restart rebuilds the Coordinator from its own Records, as the
			// worker does from its registry after a restart or a crash.
			"Restart": func(t *rapid.T) {
				c2 := New(c.Policy())
				for _, k := range ref.keys() {
					b := ref.m[k]
					rec, ok := c.Record(k)
					if !ok || rec.Key != k || rec.State != b.state || rec.IdleTimeout != b.timeout || rec.Generation != b.gen ||
						b.attempts > 0 && rec.Reason != b.reason {
						t.Fatalf("Record(%q): got %+v, %v; want state %v, timeout %v, generation %d, reason %v",
							k, rec, ok, b.state, b.timeout, b.gen, b.reason)
					}
					if err := c2.Restore(rec, now); err != nil {
						t.Fatalf("Restore(%+v) into a new Coordinator: got %v; want nil", rec, err)
					}
					if ref.redelivering(b) {
						cov.restartsPending++
					}
				}
				c2.SetGenerationFloor(c.Generation())
				c = c2
				ref.restart(now)
			},
			"List": func(t *rapid.T) {
				var match func(string) bool
				var set []string
				if rapid.Bool().Draw(t, "filtered") {
					set = subsetGen.Draw(t, "keys")
					match = func(k string) bool { return slices.Contains(set, k) }
				}
				limit := rapid.IntRange(-1, 7).Draw(t, "limit")
				var want []string
				for _, k := range ref.keys() {
					if match == nil || match(k) {
						want = append(want, k)
					}
				}
				total := len(want)
				if limit > 0 && len(want) > limit {
					want = want[:limit]
				}
				got, gotTotal := c.List(now, match, limit)
				if gotTotal != total || len(got) != len(want) {
					t.Fatalf("List(%v, %d): got %d backends, total %d; want %v, total %d", set, limit, len(got), gotTotal, want, total)
				}
				for i, b := range got {
					if r := ref.m[want[i]]; !sameBackend(b, want[i], r, now) {
						t.Fatalf("List[%d]: got %+v; want %s %+v", i, b, want[i], *r)
					}
				}
			},
			"": func(t *rapid.T) {
				checkInvariants(t, c)
				if got, want := c.Len(), len(ref.m); got != want {
					t.Fatalf("Len: got %d; want %d", got, want)
				}
				for s := Running; s <= Quiesced; s++ {
					if got, want := c.Count(s), ref.count(s); got != want {
						t.Fatalf("Count(%v): got %d; want %d", s, got, want)
					}
				}
				if got, want := c.Unacknowledged(), ref.unacknowledged(); got != want {
					t.Fatalf("Unacknowledged at %v: got %d; want %d", now.Sub(t0), got, want)
				}
				if g, want := c.Generation(), ref.maxGen; g < want {
					t.Fatalf("Generation: got %d; want >= %d", g, want)
				}
				for _, k := range modelKeys {
					b, ok := c.Get(k, now)
					r, want := ref.m[k]
					if ok != want {
						t.Fatalf("Get(%q): got tracked %v; want %v", k, ok, want)
					}
					if ok && !sameBackend(b, k, r, now) {
						t.Fatalf("Get(%q) at %v: got %+v; want %+v", k, now.Sub(t0), b, *r)
					}
				}
				got, ok := cloneCoordinator(c).NextDeadline()
				want, wantOK := ref.nextDeadline()
				if ok != wantOK || !got.Equal(want) {
					t.Fatalf("NextDeadline (on a copy): got %v, %v; want %v, %v", got, ok, want, wantOK)
				}
			},
		})
	})
	if !t.Failed() && (cov.redeliveries == 0 || cov.restartsPending == 0 || cov.restoresDraining == 0 || cov.extendsPending == 0) {
		t.Errorf("coverage: got %+v; want every count above 0 (the generators no longer reach redelivery, restart, restore or extend)", cov)
	}
	t.Logf("coverage: %+v", cov)
}

// TestRestartAfterQuiescedThenDraining is the smallest case TestModel finds
// for a restart that changes behaviour: a backend drained by an emission,
// acknowledged (quiesced), then reported draining again has had its
// quiesce acknowledged and is not redelivered; its registry record
// (draining, reason idle_timeout) looks like an unacknowledged drain, so
// after a restart it counts as unacknowledged and the event is re-sent.
func TestRestartAfterQuiescedThenDraining(t *testing.T) {
	p := Policy{DefaultIdleTimeout: time.Second, RetryInterval: time.Second}
	c := New(p)
	markDefault(t, c, "k", t0)
	if got := c.CollectDue(t0.Add(time.Second)); len(got) != 1 {
		t.Fatalf("CollectDue: got %v; want [k]", dueKeys(got))
	}
	c.MarkQuiesced("k")
	c.MarkDraining("k")
	now := t0.Add(2 * time.Second)
	if got := c.CollectDue(now.Add(time.Hour)); len(got) != 0 || c.Unacknowledged() != 0 {
		t.Fatalf("before the restart: got dues %+v, unacknowledged %d; want none, 0", got, c.Unacknowledged())
	}
	rec, _ := c.Record("k")
	c2 := New(p)
	if err := c2.Restore(rec, now); err != nil {
		t.Fatal(err)
	}
	if got := c2.Unacknowledged(); got != 0 {
		t.Errorf("after restoring %+v: got Unacknowledged %d; want 0 (the broker acknowledged with quiesced)", rec, got)
	}
	if got := c2.CollectDue(now.Add(time.Hour)); len(got) != 0 {
		t.Errorf("after restoring %+v: got redelivery %+v; want none (no redelivery after quiesced)", rec, got)
	}
}

// TestModelCompareHelpers makes sure the model's own arithmetic is what the
// rules say, so TestModel cannot pass by both sides sharing a mistake.
func TestModelCompareHelpers(t *testing.T) {
	backoff := newRefModel(Policy{RetryInterval: time.Second, RetryMaxInterval: 5 * time.Second})
	defaultCap := newRefModel(Policy{RetryInterval: time.Second})
	lifted := newRefModel(Policy{RetryInterval: 3 * time.Second, RetryMaxInterval: time.Second})
	tests := []struct {
		name string
		got  time.Duration
		want time.Duration
	}{
		{name: "clamp zero", got: refClamp(0), want: time.Millisecond},
		{name: "clamp negative", got: refClamp(-time.Second), want: time.Millisecond},
		{name: "clamp keeps 3ms", got: refClamp(3 * time.Millisecond), want: 3 * time.Millisecond},
		{name: "idle forwards", got: refIdle(t0.Add(time.Second), t0), want: time.Second},
		{name: "idle backwards saturates", got: refIdle(t0, t0.Add(time.Second)), want: 0},
		{name: "delay after attempt 1", got: backoff.delay(1), want: time.Second},
		{name: "delay doubles", got: backoff.delay(3), want: 4 * time.Second},
		{name: "delay capped", got: backoff.delay(4), want: 5 * time.Second},
		{name: "delay stays capped", got: backoff.delay(40), want: 5 * time.Second},
		{name: "default cap is 16 x retry", got: defaultCap.delay(10), want: 16 * time.Second},
		{name: "cap below retry lifts to retry", got: lifted.delay(2), want: 3 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %v; want %v", tt.got, tt.want)
			}
		})
	}
	r := newRefModel(Policy{DefaultIdleTimeout: time.Millisecond, MaxBackends: 1, RetryInterval: time.Millisecond})
	if ch, becameRunning, err := r.mark("a", t0, 0); ch != Added || err != nil || !becameRunning {
		t.Errorf("model mark new: got %03b, %v, %v; want Added, nil, true", ch, err, becameRunning)
	}
	if _, _, err := r.mark("b", t0, 0); !errors.Is(err, ErrFull) {
		t.Errorf("model mark beyond max: got %v; want ErrFull", err)
	}
	if got, _ := r.collect(t0.Add(time.Millisecond - 1)); len(got) != 0 {
		t.Errorf("model collect 1ns early: got %v; want none", dueKeys(got))
	}
	if got, _ := r.collect(t0.Add(time.Millisecond)); len(got) != 1 || got[0].Key != "a" || got[0].Attempt != 1 {
		t.Errorf("model collect at deadline: got %+v; want [a] attempt 1", got)
	}
	if got, _ := r.collect(t0.Add(2 * time.Millisecond)); len(got) != 1 || got[0].Attempt != 2 || got[0].Reason != IdleTimeout {
		t.Errorf("model collect one retry later: got %+v; want [a] attempt 2, idle_timeout", got)
	}
	if got := r.unacknowledged(); got != 1 {
		t.Errorf("model unacknowledged: got %d; want 1", got)
	}
}
