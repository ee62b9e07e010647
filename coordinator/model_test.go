package coordinator

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// cloneCoordinator deep-copies c, so the check after each step can ask
// NextDeadline (which tidies the heap) without disturbing the lazy state the
// next operation sees.
func cloneCoordinator(c *Coordinator) *Coordinator {
	d := *c
	d.entries = make(map[string]*entry, len(c.entries))
	d.heap = make([]*entry, len(c.heap))
	d.perInst = maps.Clone(c.perInst)
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

// modelKeys belong to three instances: x (three keys), y (two) and z (one
// key without a dot), so MaxPerInstance 1 and 2 refuse some.
var modelKeys = []string{"x.1", "x.2", "x.3", "y.1", "y.2", "z"}

// modelCoverage counts, over all the runs of TestModel, the situations the
// reliability features are about, so the test fails if its generators stop
// reaching them.
type modelCoverage struct {
	redeliveries, restartsPending, restoresDraining, extendsPending int
	// exactRedeliveries are collected at their jittered time to the
	// nanosecond.
	exactRedeliveries int
	// forcedDrains were collected with the reason given to Force;
	// forcedThenActive had activity between Force and collection.
	forcedDrains, forcedThenActive int
	// heldBack counts AppendDueN calls whose n left due work for later.
	heldBack int
	// forgottenResend were forgotten at a re-send time, forgottenIdle
	// without redelivery.
	forgottenResend, forgottenIdle int
	// instanceFull counts refusals by MaxPerInstance.
	instanceFull int
	// extendsCapped counts Running backends whose last activity Extend
	// held back at now.
	extendsCapped int
}

func (c modelCoverage) zero() []string {
	var z []string
	for name, n := range map[string]int{
		"redeliveries": c.redeliveries, "restartsPending": c.restartsPending, "restoresDraining": c.restoresDraining,
		"extendsPending": c.extendsPending, "exactRedeliveries": c.exactRedeliveries, "forcedDrains": c.forcedDrains,
		"forcedThenActive": c.forcedThenActive, "heldBack": c.heldBack, "forgottenResend": c.forgottenResend,
		"forgottenIdle": c.forgottenIdle, "instanceFull": c.instanceFull, "extendsCapped": c.extendsCapped,
	} {
		if n == 0 {
			z = append(z, name)
		}
	}
	slices.Sort(z)
	return z
}

// TestModel runs random operation sequences against the Coordinator and the
// naive reference and checks they agree after every step. The reference
// computes jitter with hash/fnv (refJitter), independently of the
// package's jitter.
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
			// 0: never; -1 ms is off too.
			ForgetAfter: rapid.SampledFrom([]time.Duration{-time.Millisecond, 0, 2 * time.Millisecond, 5 * time.Millisecond, 9 * time.Millisecond}).Draw(t, "forget_after"),
			// 1 and 2 bind on instances x and y; 3 never binds (x has three
			// keys); 0 and -1 are off.
			MaxPerInstance: rapid.SampledFrom([]int{-1, 0, 1, 1, 2, 2, 3}).Draw(t, "max_per_instance"),
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

		// mark runs a mark on both sides and checks the result, recording
		// the generation of a backend that has just become Running.
		mark := func(t *rapid.T, key string, timeout *time.Duration) {
			if b, ok := ref.m[key]; ok && b.forced != 0 {
				cov.forcedThenActive++
			}
			d := ref.defTimeout
			if timeout != nil {
				d = *timeout
			}
			want, becameRunning, wantErr := ref.mark(key, now, d)
			var got Change
			var err error
			if timeout == nil {
				got, err = c.MarkActivity(key, now)
			} else {
				got, err = c.MarkActivityWithTimeout(key, now, *timeout)
			}
			if got != want || !sameErr(err, wantErr) {
				t.Fatalf("mark %q: got %03b, %v; want %03b, %v", key, got, err, want, wantErr)
			}
			if errors.As(wantErr, new(refInstanceFull)) {
				cov.instanceFull++
			}
			if becameRunning {
				fresh(t, "mark", key)
			}
		}

		// collect is AppendDueN(dst, now, n) (CollectDue when n is 0 and
		// dst empty). The model knows which backends are due and when; the
		// Coordinator must return the n earliest of them (all when n <= 0)
		// in the order of their due times, ties in any order, each described
		// as the model's action on it, after what dst held.
		collect := func(t *rapid.T) {
			// 1 most often: the smallest n that holds work back.
			n := rapid.SampledFrom([]int{-1, 0, 1, 1, 2}).Draw(t, "n")
			dst := []Due{{Key: "already there"}}[:rapid.IntRange(0, 1).Draw(t, "dst_len")]
			at := ref.due(now)
			var got []Due
			if n == 0 && len(dst) == 0 {
				got = c.CollectDue(now)
			} else {
				got = c.AppendDueN(dst, now, n)
				if len(got) < len(dst) || (len(dst) > 0 && got[0].Key != dst[0].Key) {
					t.Fatalf("AppendDueN(%v, n=%d): got %v; want it after what dst held", dueKeys(dst), n, dueKeys(got))
				}
				got = got[len(dst):]
			}
			want := len(at)
			if n > 0 && n < want {
				want = n
				cov.heldBack++
			}
			if len(got) != want {
				t.Fatalf("AppendDueN(n=%d) at %v: got %v; want %d of the due %v", n, now.Sub(t0), dueKeys(got), want, at)
			}
			returned := map[string]bool{}
			for i, d := range got {
				dueAt, ok := at[d.Key]
				switch {
				case !ok || returned[d.Key]:
					t.Fatalf("AppendDueN(n=%d) at %v: got %v; want each of the due %v at most once", n, now.Sub(t0), dueKeys(got), at)
				case i > 0 && dueAt.Before(at[got[i-1].Key]):
					t.Fatalf("AppendDueN(n=%d) at %v: got %v; want the order of due times %v", n, now.Sub(t0), dueKeys(got), at)
				}
				returned[d.Key] = true
			}
			if len(got) > 0 {
				last := at[got[len(got)-1].Key]
				for k, dueAt := range at {
					if !returned[k] && dueAt.Before(last) {
						t.Fatalf("AppendDueN(n=%d) at %v: got %v, holding back %s due at %v; want the earliest first (due %v)",
							n, now.Sub(t0), dueKeys(got), k, dueAt.Sub(t0), at)
					}
				}
			}
			for _, d := range got {
				b := ref.m[d.Key]
				forced, redelivering := b.state == Running && b.forced != 0, ref.redelivering(b)
				exact := redelivering && now.Equal(b.next)
				w := ref.act(d.Key, now)
				if !sameDue(d, w) {
					t.Fatalf("AppendDueN(n=%d) at %v: got %+v; want %+v", n, now.Sub(t0), d, w)
				}
				switch {
				case forced:
					cov.forcedDrains++
				case w.Forgotten && redelivering:
					cov.forgottenResend++
				case w.Forgotten:
					cov.forgottenIdle++
				case w.Attempt > 1:
					cov.redeliveries++
					if exact {
						cov.exactRedeliveries++
					}
				}
			}
		}

		t.Repeat(map[string]func(*rapid.T){
			"MarkActivity": func(t *rapid.T) {
				mark(t, keyGen.Draw(t, "key"), nil)
			},
			"MarkActivityWithTimeout": func(t *rapid.T) {
				k := keyGen.Draw(t, "key")
				d := time.Duration(rapid.IntRange(-1, 5).Draw(t, "timeout_ms")) * time.Millisecond
				mark(t, k, &d)
			},
			"MarkDraining": func(t *rapid.T) {
				k := keyGen.Draw(t, "key")
				want := ref.report(k, now, Draining)
				if got := c.MarkDraining(k, now); got != want {
					t.Fatalf("MarkDraining(%q): got %v; want %v", k, got, want)
				}
			},
			"MarkQuiesced": func(t *rapid.T) {
				k := keyGen.Draw(t, "key")
				want := ref.report(k, now, Quiesced)
				if got := c.MarkQuiesced(k, now); got != want {
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
			// Timer fires exactly at the model's next deadline when it is
			// ahead, so jittered redeliveries and forgetting times are hit
			// to the nanosecond.
			"Timer": func(t *rapid.T) {
				if dl, ok := ref.nextDeadline(); ok && dl.After(now) {
					now = dl
				}
				collect(t)
			},
			"NextDeadline": func(t *rapid.T) {
				got, ok := c.NextDeadline()
				want, wantOK := ref.nextDeadline()
				if ok != wantOK || !got.Equal(want) {
					t.Fatalf("NextDeadline: got %v, %v; want %v, %v", got, ok, want, wantOK)
				}
			},
			"Force": func(t *rapid.T) {
				k := keyGen.Draw(t, "key")
				r := reasonGen.Draw(t, "reason")
				want := ref.force(k, now, r)
				if got := c.Force(k, now, r); got != want {
					t.Fatalf("Force(%q, %v): got %v; want %v", k, r, got, want)
				}
			},
			// ForceHeartbeat is a forced drain that the backend's heartbeat
			// follows before it is collected: the drain must still happen.
			"ForceHeartbeat": func(t *rapid.T) {
				k := keyGen.Draw(t, "key")
				r := reasonGen.Draw(t, "reason")
				mark(t, k, nil) // Running, unless a limit refuses it
				want := ref.force(k, now, r)
				if got := c.Force(k, now, r); got != want {
					t.Fatalf("Force(%q, %v): got %v; want %v", k, r, got, want)
				}
				now = now.Add(time.Duration(rapid.IntRange(0, 2).Draw(t, "heartbeat_ms")) * time.Millisecond)
				mark(t, k, nil)
			},
			// ForceMatching is an operator's drain of several keys at once.
			"ForceMatching": func(t *rapid.T) {
				set := subsetGen.Draw(t, "keys")
				r := reasonGen.Draw(t, "reason")
				for _, k := range set {
					want := ref.force(k, now, r)
					if got := c.Force(k, now, r); got != want {
						t.Fatalf("Force(%q, %v) of %v: got %v; want %v", k, r, set, got, want)
					}
				}
			},
			"Extend": func(t *rapid.T) {
				d := time.Duration(rapid.IntRange(-1, 6).Draw(t, "outage_ms")) * time.Millisecond
				if _, pending := ref.nextDeadline(); pending && d > 0 {
					cov.extendsPending++
				}
				cov.extendsCapped += ref.extend(d, now)
				c.Extend(d, now)
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
				if err := c.Restore(rec, now); !sameErr(err, wantErr) {
					t.Fatalf("Restore(%+v): got %v; want %v", rec, err, wantErr)
				}
				if errors.As(wantErr, new(refInstanceFull)) {
					cov.instanceFull++
				}
				if wantErr == nil && rec.Generation == 0 {
					fresh(t, "Restore", rec.Key)
				}
			},
			// Restart rebuilds the Coordinator from its own Records, as the
			// worker does from its registry after a restart or a crash.
			"Restart": func(t *rapid.T) {
				c2 := New(c.Policy())
				// The worker sets the floor to its stored high-water mark
				// before restoring.
				c2.SetGenerationFloor(c.Generation())
				for _, k := range ref.keys() {
					b := ref.m[k]
					rec, ok := c.Record(k)
					if !ok || rec.Key != k || rec.State != b.state || rec.IdleTimeout != b.timeout || rec.Generation != b.gen ||
						rec.Reason != b.reason {
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
					st, stOK := c.State(k)
					r, want := ref.m[k]
					if ok != want || stOK != want {
						t.Fatalf("Get(%q), State(%q): got tracked %v, %v; want %v", k, k, ok, stOK, want)
					}
					if ok && (!sameBackend(b, k, r, now) || st != r.state) {
						t.Fatalf("Get(%q) at %v: got %+v, State %v; want %+v", k, now.Sub(t0), b, st, *r)
					}
				}
				got, ok := cloneCoordinator(c).NextDeadline()
				want, wantOK := ref.nextDeadline()
				if ok != wantOK || !got.Equal(want) {
					t.Fatalf("NextDeadline (on a copy) at %v: got %v, %v; want %v, %v", now.Sub(t0), got.Sub(t0), ok, want.Sub(t0), wantOK)
				}
			},
		})
	})
	if z := cov.zero(); !t.Failed() && len(z) > 0 {
		t.Errorf("coverage: got %+v; want every count above 0 (the generators no longer reach %v)", cov, z)
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
	c.MarkQuiesced("k", t0.Add(time.Second))
	c.MarkDraining("k", t0.Add(time.Second))
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

// refCollectAll is the model's CollectDue: every due action at now, in the
// order of due times, ties by key.
func refCollectAll(r *refModel, now time.Time) []Due {
	at := r.due(now)
	keys := slices.Collect(maps.Keys(at))
	slices.SortFunc(keys, func(a, b string) int {
		if c := at[a].Compare(at[b]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	out := make([]Due, len(keys))
	for i, k := range keys {
		out[i] = r.act(k, now)
	}
	return out
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
		{name: "later", got: later(t0, t0.Add(time.Second)).Sub(t0), want: time.Second},
		{name: "earlier", got: earlier(t0.Add(time.Second), t0).Sub(t0), want: 0},
		{name: "wait after attempt 1", got: backoff.base(1), want: time.Second},
		{name: "wait doubles", got: backoff.base(3), want: 4 * time.Second},
		{name: "wait capped", got: backoff.base(4), want: 5 * time.Second},
		{name: "wait stays capped", got: backoff.base(40), want: 5 * time.Second},
		{name: "default cap is 16 x retry", got: defaultCap.base(10), want: 16 * time.Second},
		{name: "cap below retry lifts to retry", got: lifted.base(2), want: 3 * time.Second},
		{name: "delay is the wait plus its jitter", got: backoff.delay(3, "k"), want: 4*time.Second + refJitter(time.Second, "k", 3)},
		{name: "no jitter over an empty span", got: refJitter(0, "k", 1), want: 0},
		{name: "no jitter over a negative span", got: refJitter(-time.Second, "k", 1), want: 0},
		{name: "jitter over a 1ns span", got: refJitter(1, "k", 1), want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %v; want %v", tt.got, tt.want)
			}
		})
	}
	for _, n := range []int{1, 2, 3, 4, 40} {
		if d, b := backoff.delay(n, "k"), backoff.base(n); d < b || d >= b+b/4 {
			t.Errorf("model delay(%d): got %v; want in [%v, %v)", n, d, b, b+b/4)
		}
	}
	for key, want := range map[string]string{"x.1": "x", "x.y.z": "x", "z": "z", ".x": "", "": ""} {
		if got := refInstance(key); got != want {
			t.Errorf("refInstance(%q): got %q; want %q", key, got, want)
		}
	}

	r := newRefModel(Policy{DefaultIdleTimeout: time.Millisecond, MaxBackends: 1, RetryInterval: time.Millisecond})
	if ch, becameRunning, err := r.mark("a", t0, 0); ch != Added || err != nil || !becameRunning {
		t.Errorf("model mark new: got %03b, %v, %v; want Added, nil, true", ch, err, becameRunning)
	}
	if _, _, err := r.mark("b", t0, 0); err != ErrFull {
		t.Errorf("model mark beyond max: got %v; want ErrFull", err)
	}
	if got := refCollectAll(r, t0.Add(time.Millisecond-1)); len(got) != 0 {
		t.Errorf("model collect 1ns early: got %v; want none", dueKeys(got))
	}
	if got := refCollectAll(r, t0.Add(time.Millisecond)); len(got) != 1 || got[0].Key != "a" || got[0].Attempt != 1 {
		t.Errorf("model collect at deadline: got %+v; want [a] attempt 1", got)
	}
	retryAt := t0.Add(2*time.Millisecond + refJitter(time.Millisecond/4, "a", 1))
	if got := refCollectAll(r, retryAt.Add(-1)); len(got) != 0 {
		t.Errorf("model collect 1ns before the jittered retry: got %+v; want none", got)
	}
	if got := refCollectAll(r, retryAt); len(got) != 1 || got[0].Attempt != 2 || got[0].Reason != IdleTimeout {
		t.Errorf("model collect one jittered retry later: got %+v; want [a] attempt 2, idle_timeout", got)
	}
	if got := r.unacknowledged(); got != 1 {
		t.Errorf("model unacknowledged: got %d; want 1", got)
	}

	// Per-instance bound, forced drains and forgetting.
	q := newRefModel(Policy{DefaultIdleTimeout: time.Second, MaxPerInstance: 1, ForgetAfter: time.Minute})
	if _, _, err := q.mark("x.1", t0, time.Second); err != nil {
		t.Fatalf("model mark x.1: got %v; want nil", err)
	}
	_, _, err := q.mark("x.2", t0, time.Second)
	if !errors.Is(err, ErrFull) || !sameErr(fmt.Errorf("%w: instance %q tracks 1 backends", ErrFull, "x"), err) || sameErr(ErrFull, err) {
		t.Errorf("model mark beyond the instance's bound: got %v; want ErrFull wrapped, naming x", err)
	}
	if _, _, err := q.mark("y.1", t0, time.Second); err != nil {
		t.Errorf("model mark of another instance: got %v; want nil", err)
	}
	if !q.force("x.1", t0.Add(time.Millisecond), Maintenance) || q.force("nobody", t0, Maintenance) || q.force("y.1", t0, 0) {
		t.Errorf("model force: want true for a running key only, with a reason")
	}
	q.mark("x.1", t0.Add(2*time.Millisecond), time.Second)
	if got := refCollectAll(q, t0.Add(time.Millisecond)); len(got) != 1 || got[0].Key != "x.1" || got[0].Reason != Maintenance {
		t.Errorf("model collect of a forced drain after activity: got %+v; want x.1, maintenance", got)
	}
	q.report("x.1", t0.Add(10*time.Second), Quiesced)
	if dl, _ := q.nextDeadline(); !dl.Equal(t0.Add(time.Second)) {
		t.Errorf("model next deadline: got %v; want y.1's t0+1s", dl.Sub(t0))
	}
	q.report("y.1", t0.Add(20*time.Second), Quiesced)
	if dl, _ := q.nextDeadline(); !dl.Equal(t0.Add(70 * time.Second)) {
		t.Errorf("model next deadline: got %v; want x.1 forgotten at t0+70s", dl.Sub(t0))
	}
	if got := refCollectAll(q, t0.Add(80*time.Second)); len(got) != 2 || got[0].Key != "x.1" || !got[0].Forgotten || got[1].Key != "y.1" || !got[1].Forgotten {
		t.Errorf("model collect of quiesced backends a minute later: got %+v; want x.1, y.1 forgotten", got)
	}
	if len(q.m) != 0 {
		t.Errorf("model after forgetting: got %d backends; want none", len(q.m))
	}
}
