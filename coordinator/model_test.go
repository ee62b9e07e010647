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
	m          map[string]*refBackend
}

type refBackend struct {
	last    time.Time
	timeout time.Duration
	state   State
	// gen is the Generation the Coordinator reported when the backend last
	// became Running. The model does not predict the values, only that a new
	// one appears exactly when the backend becomes Running and never repeats.
	gen uint64
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
	}
	b.last, b.timeout, b.state = now, timeout, Running
	return ch, becameRunning, nil
}

func (r *refModel) due(key string, b *refBackend, now time.Time, reason Reason) Due {
	b.state = Draining
	return Due{
		Key:               key,
		IdleFor:           refIdle(now, b.last),
		ConfiguredTimeout: b.timeout,
		Reason:            reason,
		Deadline:          b.last.Add(b.timeout),
		Generation:        b.gen,
	}
}

// collect returns the due backends sorted by key.
func (r *refModel) collect(now time.Time) []Due {
	var out []Due
	for _, k := range r.keys() {
		if b := r.m[k]; b.state == Running && refIdle(now, b.last) >= b.timeout {
			out = append(out, r.due(k, b, now, IdleTimeout))
		}
	}
	return out
}

func (r *refModel) nextDeadline() (time.Time, bool) {
	var best time.Time
	found := false
	for _, b := range r.m {
		if b.state != Running {
			continue
		}
		if d := b.last.Add(b.timeout); !found || d.Before(best) {
			best, found = d, true
		}
	}
	return best, found
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

// cloneCoordinator deep-copies c, so the check after each step can ask
// NextDeadline (which tidies the heap) without disturbing the lazy state the
// next operation sees.
func cloneCoordinator(c *Coordinator) *Coordinator {
	d := *c
	d.entries = make(map[string]*entry, len(c.entries))
	d.heap = make([]*entry, len(c.heap))
	for k, e := range c.entries {
		ce := *e
		d.entries[k] = &ce
		if ce.idx >= 0 {
			d.heap[ce.idx] = &ce
		}
	}
	return &d
}

var modelKeys = []string{"a", "b", "c", "d", "e", "f"}

func sameDue(got, want Due) bool {
	return got.Key == want.Key && got.IdleFor == want.IdleFor && got.ConfiguredTimeout == want.ConfiguredTimeout &&
		got.Reason == want.Reason && got.Deadline.Equal(want.Deadline) && got.Generation == want.Generation
}

// TestModel runs random operation sequences against the Coordinator and the
// naive reference and checks they agree after every step.
func TestModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ref := &refModel{
			defTimeout: rapid.SampledFrom([]time.Duration{-time.Millisecond, 0, 2 * time.Millisecond, 5 * time.Millisecond}).Draw(t, "default_timeout"),
			max:        rapid.IntRange(0, 7).Draw(t, "max_backends"),
			m:          map[string]*refBackend{},
		}
		c := New(Policy{DefaultIdleTimeout: ref.defTimeout, MaxBackends: ref.max})
		now := t0
		used := map[uint64]string{} // every generation seen, and for which key

		keyGen := rapid.SampledFrom(modelKeys)
		reasonGen := rapid.SampledFrom([]Reason{IdleTimeout, BrokerShutdown, Maintenance})
		subsetGen := rapid.SliceOfDistinct(keyGen, func(k string) string { return k })

		// afterMark checks the result of a mark against the model and records
		// the generation of a backend that has just become Running.
		afterMark := func(t *rapid.T, key string, got Change, err error, want Change, wantErr error, fresh bool) {
			if got != want || !errors.Is(err, wantErr) {
				t.Fatalf("mark %q: got %03b, %v; want %03b, %v", key, got, err, want, wantErr)
			}
			if !fresh {
				return
			}
			b, ok := c.Get(key, now)
			if !ok {
				t.Fatalf("mark %q: got untracked after success", key)
			}
			if prev, dup := used[b.Generation]; dup {
				t.Fatalf("mark %q: got generation %d; want a new one (already used by %q)", key, b.Generation, prev)
			}
			used[b.Generation] = key
			ref.m[key].gen = b.Generation
		}

		checkDues := func(t *rapid.T, op string, got, want []Due, sortedByKey bool) {
			if !sortedByKey {
				// CollectDue promises deadline order; compare as sets by key.
				if !slices.IsSortedFunc(got, func(a, b Due) int { return a.Deadline.Compare(b.Deadline) }) {
					t.Fatalf("%s: got %v; want deadline order", op, got)
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
			}
		}

		t.Repeat(map[string]func(*rapid.T){
			"MarkActivity": func(t *rapid.T) {
				k := keyGen.Draw(t, "key")
				want, fresh, wantErr := ref.mark(k, now, ref.defTimeout)
				got, err := c.MarkActivity(k, now)
				afterMark(t, k, got, err, want, wantErr, fresh)
			},
			"MarkActivityWithTimeout": func(t *rapid.T) {
				k := keyGen.Draw(t, "key")
				d := time.Duration(rapid.IntRange(-1, 5).Draw(t, "timeout_ms")) * time.Millisecond
				want, fresh, wantErr := ref.mark(k, now, d)
				got, err := c.MarkActivityWithTimeout(k, now, d)
				afterMark(t, k, got, err, want, wantErr, fresh)
			},
			"MarkDraining": func(t *rapid.T) {
				k := keyGen.Draw(t, "key")
				b, want := ref.m[k]
				if want {
					b.state = Draining
				}
				if got := c.MarkDraining(k); got != want {
					t.Fatalf("MarkDraining(%q): got %v; want %v", k, got, want)
				}
			},
			"MarkQuiesced": func(t *rapid.T) {
				k := keyGen.Draw(t, "key")
				b, want := ref.m[k]
				if want {
					b.state = Quiesced
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
			"CollectDue": func(t *rapid.T) {
				checkDues(t, "CollectDue", c.CollectDue(now), ref.collect(now), false)
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
					want = ref.due(k, b, now, r)
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
						want = append(want, ref.due(k, b, now, r))
					}
				}
				got := c.QuiesceMatching(now, r, func(k string) bool { return slices.Contains(set, k) })
				checkDues(t, "QuiesceMatching", got, want, true)
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
					r := ref.m[want[i]]
					if b.Key != want[i] || b.State != r.state || !b.LastActive.Equal(r.last) ||
						b.IdleFor != refIdle(now, r.last) || b.IdleTimeout != r.timeout || b.Generation != r.gen {
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
				for _, k := range modelKeys {
					b, ok := c.Get(k, now)
					r, want := ref.m[k]
					if ok != want {
						t.Fatalf("Get(%q): got tracked %v; want %v", k, ok, want)
					}
					if !ok {
						continue
					}
					if b.Key != k || b.State != r.state || !b.LastActive.Equal(r.last) || b.IdleFor != refIdle(now, r.last) ||
						b.IdleTimeout != r.timeout || b.Generation != r.gen {
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
}

// TestModelCompareHelpers makes sure the model's own arithmetic is what the
// rules say, so TestModel cannot pass by both sides sharing a mistake.
func TestModelCompareHelpers(t *testing.T) {
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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %v; want %v", tt.got, tt.want)
			}
		})
	}
	r := &refModel{defTimeout: time.Millisecond, max: 1, m: map[string]*refBackend{}}
	if ch, fresh, err := r.mark("a", t0, 0); ch != Added || err != nil || !fresh {
		t.Errorf("model mark new: got %03b, %v, %v; want Added, nil, true", ch, err, fresh)
	}
	if _, _, err := r.mark("b", t0, 0); !errors.Is(err, ErrFull) {
		t.Errorf("model mark beyond max: got %v; want ErrFull", err)
	}
	if got := r.collect(t0.Add(time.Millisecond - 1)); len(got) != 0 {
		t.Errorf("model collect 1ns early: got %v; want none", dueKeys(got))
	}
	if got := r.collect(t0.Add(time.Millisecond)); len(got) != 1 || got[0].Key != "a" {
		t.Errorf("model collect at deadline: got %v; want [a]", dueKeys(got))
	}
}
