package coordinator

import (
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"time"
)

// refModel is a deliberately naive reference for Coordinator: a map and a
// full scan for every question, with times kept as time.Time. It states
// the rules as the package doc and the Policy fields do, without the
// deadline index, lazy heap keys or the epoch.
type refModel struct {
	defTimeout time.Duration
	max        int
	// perInst is Policy.MaxPerInstance; 0 means no bound.
	perInst int
	// forget is Policy.ForgetAfter; 0 means never.
	forget time.Duration
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
	last time.Time
	// touched is the latest activity, state report, first emission or
	// restore of the backend (the latest in time, whatever the order of the
	// calls): forgetting counts from it. Re-sends do not move it.
	touched time.Time
	timeout time.Duration
	state   State
	// gen is the Generation the Coordinator reported when the backend last
	// became Running (or the one restored). The model does not predict the
	// values, only that a new one appears exactly when the backend becomes
	// Running and exceeds every generation before it.
	gen uint64
	// reason is why the backend was drained by an emission: set by the
	// drain, cleared when it becomes Running again or is reported draining
	// (a report, not an emission), kept when it is reported quiesced, and
	// restored from a Record as it is.
	reason Reason
	// attempts counts the emissions of the current id of a Draining backend
	// that no broker has acknowledged (quiesced, removed or activity); 0
	// otherwise. Such a backend is unacknowledged.
	attempts int
	// next is when the next redelivery is due (attempts > 0, retry on).
	next time.Time
	// forced is the reason of a drain asked for with Force and not yet
	// collected (Running only; 0: none), forcedAt when it is due.
	forced   Reason
	forcedAt time.Time
}

func newRefModel(p Policy) *refModel {
	r := &refModel{defTimeout: p.DefaultIdleTimeout, max: p.MaxBackends, perInst: max(p.MaxPerInstance, 0),
		forget: max(p.ForgetAfter, 0), m: map[string]*refBackend{}}
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

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// refInstance is the instance of key: its first token, up to the first dot.
func refInstance(key string) string {
	inst, _, _ := strings.Cut(key, ".")
	return inst
}

// refJitter is the package doc's jitter written independently of the
// package, with the standard library's FNV-1a: the 64-bit hash of the key's
// bytes followed by the attempt as two little-endian bytes, modulo span
// (0 when span <= 0).
func refJitter(span time.Duration, key string, attempt int) time.Duration {
	if span <= 0 {
		return 0
	}
	h := fnv.New64a()
	h.Write([]byte(key))
	h.Write([]byte{byte(attempt), byte(attempt >> 8)})
	return time.Duration(h.Sum64() % uint64(span))
}

// base is the un-jittered wait after attempt n (n >= 1): the retry
// interval doubled n-1 times, but never more than retryMax.
func (r *refModel) base(n int) time.Duration {
	d := r.retry
	for i := 1; i < n && d < r.retryMax; i++ {
		if d > r.retryMax/2 {
			return r.retryMax // doubling would pass the cap, or overflow
		}
		d *= 2
	}
	return min(d, r.retryMax)
}

// delay is the wait after attempt n of key: base(n) plus a jitter in
// [0, base(n)/4).
func (r *refModel) delay(n int, key string) time.Duration {
	d := r.base(n)
	return d + refJitter(d/4, key, n)
}

// redelivering reports whether b waits for a redelivery.
func (r *refModel) redelivering(b *refBackend) bool {
	return r.retry > 0 && b.state == Draining && b.attempts > 0
}

// refInstanceFull is the model's refusal by MaxPerInstance; it wraps
// ErrFull and names the instance.
type refInstanceFull struct{ inst string }

func (e refInstanceFull) Error() string { return fmt.Sprintf("%v: instance %q", ErrFull, e.inst) }
func (e refInstanceFull) Unwrap() error { return ErrFull }

// admit is the model's answer to tracking a new key: ErrFull itself for
// MaxBackends (checked first), refInstanceFull for MaxPerInstance.
func (r *refModel) admit(key string) error {
	if r.max > 0 && len(r.m) >= r.max {
		return ErrFull
	}
	if r.perInst > 0 {
		n, inst := 0, refInstance(key)
		for k := range r.m {
			if refInstance(k) == inst {
				n++
			}
		}
		if n >= r.perInst {
			return refInstanceFull{inst}
		}
	}
	return nil
}

// sameErr reports whether the Coordinator's error got is the model's want:
// nil, ErrFull itself, or ErrFull wrapped and naming the full instance.
func sameErr(got, want error) bool {
	var full refInstanceFull
	switch {
	case want == nil:
		return got == nil
	case errors.As(want, &full):
		return errors.Is(got, ErrFull) && got != ErrFull && strings.Contains(got.Error(), fmt.Sprintf("instance %q", full.inst))
	default:
		return got == want
	}
}

// mark returns the expected Change and error, and whether the backend has
// just become Running (so a new generation is expected). A forced drain
// survives activity.
func (r *refModel) mark(key string, now time.Time, timeout time.Duration) (Change, bool, error) {
	timeout = refClamp(timeout)
	b, ok := r.m[key]
	if !ok {
		if err := r.admit(key); err != nil {
			return 0, false, err
		}
		r.m[key] = &refBackend{last: now, touched: now, timeout: timeout, state: Running}
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
	b.touched = later(b.touched, now)
	return ch, becameRunning, nil
}

// report is MarkDraining (s Draining) or MarkQuiesced (s Quiesced). A report
// restarts the forgetting clock; a report of the state the backend is in
// changes nothing else. Reported draining, a backend was drained by its
// broker, not by an emission: no reason, nothing to redeliver. Reported
// quiesced, it keeps its reason.
func (r *refModel) report(key string, now time.Time, s State) bool {
	b, ok := r.m[key]
	if !ok {
		return false
	}
	b.touched = later(b.touched, now)
	if b.state != s {
		b.state, b.attempts, b.next, b.forced = s, 0, time.Time{}, 0
		if s == Draining {
			b.reason = 0
		}
	}
	return true
}

// force is Force: a Running backend is due for a drain with reason at now,
// or at the earlier time it was already asked for; the last reason wins.
func (r *refModel) force(key string, now time.Time, reason Reason) bool {
	b, ok := r.m[key]
	if !ok || b.state != Running || reason == 0 || b.forced != 0 {
		return false // the first request stands
	}
	b.forcedAt, b.forced = now, reason
	return true
}

// dueAt is when b's next action is due, if it has one: a forced drain at
// the time asked for, else a Running backend's deadline, a redelivery's
// time, or (with forgetting on) the time a Draining or Quiesced backend is
// forgotten.
func (r *refModel) dueAt(b *refBackend) (time.Time, bool) {
	switch {
	case b.state == Running && b.forced != 0:
		return b.forcedAt, true
	case b.state == Running:
		return b.last.Add(b.timeout), true
	case r.redelivering(b):
		return b.next, true
	case r.forget > 0:
		return b.touched.Add(r.forget), true
	}
	return time.Time{}, false
}

// due returns the backends whose next action is due at now, and when each
// was due.
func (r *refModel) due(now time.Time) map[string]time.Time {
	at := map[string]time.Time{}
	for k, b := range r.m {
		if t, ok := r.dueAt(b); ok && !t.After(now) {
			at[k] = t
		}
	}
	return at
}

// forgets reports whether the due backend b is forgotten at now rather
// than re-sent: a backend being re-sent is forgotten at its first re-send
// time at or after touched+forget.
func (r *refModel) forgets(b *refBackend, now time.Time) bool {
	return b.state != Running && r.forget > 0 && !now.Before(b.touched.Add(r.forget))
}

// act performs the due action of key at now and describes it.
func (r *refModel) act(key string, now time.Time) Due {
	b := r.m[key]
	switch {
	case b.state == Running && b.forced != 0:
		return r.drain(key, b, now, b.forced)
	case b.state == Running:
		return r.drain(key, b, now, IdleTimeout)
	case r.forgets(b, now):
		d := r.emission(key, b, now)
		d.Forgotten = true
		delete(r.m, key)
		return d
	default:
		return r.redeliver(key, b, now)
	}
}

// drain moves the Running backend b to Draining for reason and describes
// the first emission.
func (r *refModel) drain(key string, b *refBackend, now time.Time, reason Reason) Due {
	b.state, b.reason, b.attempts, b.forced = Draining, reason, 1, 0
	b.touched = later(b.touched, now)
	if r.retry > 0 {
		b.next = now.Add(r.delay(1, key))
	}
	return r.emission(key, b, now)
}

// redeliver re-sends the current emission of the Draining backend b.
func (r *refModel) redeliver(key string, b *refBackend, now time.Time) Due {
	b.attempts++
	b.next = now.Add(r.delay(b.attempts, key))
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

func (r *refModel) nextDeadline() (time.Time, bool) {
	var best time.Time
	found := false
	for _, b := range r.m {
		if d, ok := r.dueAt(b); ok && (!found || d.Before(best)) {
			best, found = d, true
		}
	}
	return best, found
}

// extend is an outage of d that ended at now: a Running backend acts as if
// its last activity were d later, but never later than now or its own
// activity; a pending redelivery waits d longer; the forgetting clock of a
// Draining or Quiesced backend moves d later, capped the same way. A forced
// drain keeps its time. It returns how many Running backends the cap held
// back.
func (r *refModel) extend(d time.Duration, now time.Time) (capped int) {
	if d <= 0 {
		return 0
	}
	for _, b := range r.m {
		if b.state == Running {
			if b.last.Add(d).After(later(b.last, now)) {
				capped++
			}
			b.last = earlier(b.last.Add(d), later(b.last, now))
			continue
		}
		if r.redelivering(b) {
			b.next = b.next.Add(d)
		}
		b.touched = earlier(b.touched.Add(d), later(b.touched, now))
	}
	return capped
}

// restore is Coordinator.Restore as its doc states it.
func (r *refModel) restore(rec Record, now time.Time) error {
	if _, ok := r.m[rec.Key]; !ok {
		if err := r.admit(rec.Key); err != nil {
			return err
		}
	}
	st := rec.State
	if st < Running || st > Quiesced {
		st = Running
	}
	// A stored generation is kept; zero asks for a fresh one, which the
	// caller records.
	b := &refBackend{last: now, touched: now, timeout: refClamp(rec.IdleTimeout), state: st, reason: rec.Reason, gen: rec.Generation}
	r.maxGen = max(r.maxGen, rec.Generation)
	if st == Draining && rec.Reason != 0 {
		// Drained by an emission: it is re-sent, same id.
		b.attempts = 1
		if r.retry > 0 {
			b.next = now.Add(r.delay(1, rec.Key))
		}
	}
	r.m[rec.Key] = b
	return nil
}

// restart is a worker restart from the registry at now: nothing changes but
// the clock. The registry keeps no activity times, so every backend was
// last active (and touched) now, and Running backends get a full timeout of
// grace; a forced drain not yet collected is lost with the process; an
// unacknowledged drain is re-sent (same generation) one retry interval from
// now, counting from attempt 1 again since the registry keeps no attempts;
// an acknowledged one stays acknowledged.
func (r *refModel) restart(now time.Time) {
	for k, b := range r.m {
		b.last, b.touched, b.forced, b.forcedAt = now, now, 0, time.Time{}
		if b.state == Draining && b.attempts > 0 {
			b.attempts = 1
			if r.retry > 0 {
				b.next = now.Add(r.delay(1, k))
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

// sameBackend compares a snapshot with the model.
func sameBackend(got Backend, key string, want *refBackend, now time.Time) bool {
	return got.Key == key && got.State == want.state && got.LastActive.Equal(want.last) &&
		got.IdleFor == refIdle(now, want.last) && got.IdleTimeout == want.timeout && got.Generation == want.gen &&
		got.Attempts == want.attempts && got.Reason == want.reason
}

func sameDue(got, want Due) bool {
	return got.Key == want.Key && got.IdleFor == want.IdleFor && got.ConfiguredTimeout == want.ConfiguredTimeout &&
		got.Reason == want.Reason && got.Deadline.Equal(want.Deadline) && got.Generation == want.Generation &&
		got.Attempt == want.Attempt && got.Forgotten == want.Forgotten
}
