package coordinator

import (
	"math"
	"strings"
	"time"

	"github.com/google/btree"
)

// entry is one tracked backend. Times are nanoseconds since Coordinator.epoch.
type entry struct {
	key     string
	last    int64 // last activity
	timeout int64 // idle timeout, >= MinTimeout
	// due is the heap key, the time of the entry's next action. Running: a
	// lower bound of last+timeout (it may be stale after a refresh), or
	// exactly when a forced drain was asked. Draining after an emission,
	// with redelivery on: exactly the next attempt's time. Otherwise, with
	// forgetting on: a lower bound of touched+forget.
	due int64
	// touched is the last activity, state report or emission: forgetting
	// counts from it.
	touched int64
	gen     uint64
	idx     int32 // position in Coordinator.heap, -1 when not in it
	attempt uint16
	state   State
	reason  Reason
	forced  Reason // Running: a forced drain waiting to be collected
}

func (e *entry) deadline() int64 { return addSat(e.last, e.timeout) }

// Coordinator is the idle-detection state machine. The zero value is not
// usable; create one with New. It is not safe for concurrent use.
type Coordinator struct {
	policy     Policy
	defTimeout int64
	retry      int64 // first redelivery interval; 0: off
	retryMax   int64
	epoch      time.Time
	hasEpoch   bool
	entries    map[string]*entry
	index      *btree.BTreeG[*entry] // every entry, ordered by key (index.go)
	probe      entry                 // the search key of an index look-up
	heap       []*entry              // entries with a next action, min-heap on entry.due
	counts     [Quiesced + 1]int
	unacked    int // Draining entries that were sent a quiesce (attempt > 0)
	lastGen    uint64
	forget     int64            // Policy.ForgetAfter; 0: never
	perInst    map[string]int32 // tracked backends per instance, with Policy.MaxPerInstance
}

// New returns an empty Coordinator governed by p.
func New(p Policy) *Coordinator {
	c := &Coordinator{
		policy:     p,
		defTimeout: int64(clamp(p.DefaultIdleTimeout)),
		entries:    make(map[string]*entry),
		forget:     int64(max(p.ForgetAfter, 0)),
		index:      newIndex(),
	}
	if p.MaxPerInstance > 0 {
		c.perInst = make(map[string]int32)
	}
	if p.RetryInterval > 0 {
		c.retry = int64(p.RetryInterval)
		c.retryMax = int64(p.RetryMaxInterval)
		if c.retryMax <= 0 {
			c.retryMax = 16 * c.retry
		}
		c.retryMax = max(c.retryMax, c.retry)
	}
	return c
}

// Policy returns the policy the Coordinator was created with.
func (c *Coordinator) Policy() Policy { return c.policy }

// clamp applies the MinTimeout floor.
func clamp(d time.Duration) time.Duration {
	if d < MinTimeout {
		return MinTimeout
	}
	return d
}

// ClampTimeout returns d with the MinTimeout floor applied, as the model
// stores it.
func ClampTimeout(d time.Duration) time.Duration { return clamp(d) }

func (c *Coordinator) offset(now time.Time) int64 {
	if !c.hasEpoch {
		c.epoch, c.hasEpoch = now, true
	}
	return int64(now.Sub(c.epoch))
}

func (c *Coordinator) at(off int64) time.Time { return c.epoch.Add(time.Duration(off)) }

func addSat(a, b int64) int64 {
	if b > 0 && a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// idleSince returns t - last, saturating at zero when t is earlier and at
// math.MaxInt64 when the difference does not fit (times more than 292 years
// apart), as time.Time.Sub does.
func idleSince(t, last int64) int64 {
	if t <= last {
		return 0
	}
	if last < 0 && t > math.MaxInt64+last {
		return math.MaxInt64
	}
	return t - last
}

// retryDelay is the wait after attempt n (n >= 1) of key: retry * 2^(n-1),
// capped, plus up to a quarter more, spread by key and attempt so that a
// mass drain is not re-sent in one burst.
func (c *Coordinator) retryDelay(n uint16, key string) int64 {
	d := c.retry
	for i := uint16(1); i < n && d < c.retryMax; i++ {
		if d > c.retryMax/2 {
			d = c.retryMax // doubling would pass the cap, or overflow
			break
		}
		d *= 2
	}
	d = min(d, c.retryMax)
	return addSat(d, jitter(d/4, key, n))
}

// MarkActivity records activity of key at now with the policy's default
// timeout. See MarkActivityWithTimeout.
func (c *Coordinator) MarkActivity(key string, now time.Time) (Change, error) {
	return c.mark(key, now, c.defTimeout)
}

// MarkActivityWithTimeout records activity of key at now with its own idle
// timeout (clamped to MinTimeout). It inserts or replaces the entry: last
// activity = now, timeout = timeout, state = Running, so fresh activity
// re-arms a Draining or Quiesced backend. It returns ErrFull, changing
// nothing, when key is new and the policy's MaxBackends or MaxPerInstance
// is reached.
func (c *Coordinator) MarkActivityWithTimeout(key string, now time.Time, timeout time.Duration) (Change, error) {
	return c.mark(key, now, int64(clamp(timeout)))
}

func (c *Coordinator) mark(key string, now time.Time, timeout int64) (Change, error) {
	t := c.offset(now)
	e, ok := c.entries[key]
	if !ok {
		if err := c.admit(key); err != nil {
			return 0, err
		}
		c.lastGen++
		// Clone: callers often pass a substring of a larger buffer (a
		// message subject) that the map would otherwise keep alive.
		e = &entry{key: strings.Clone(key), last: t, touched: t, timeout: timeout, gen: c.lastGen, state: Running, idx: -1}
		c.insert(e)
		c.push(e, e.deadline())
		return Added, nil
	}
	var ch Change
	if e.timeout != timeout {
		ch |= TimeoutChanged
	}
	e.last, e.timeout = t, timeout
	e.touched = max(e.touched, t)
	if e.state != Running {
		c.leaveDraining(e)
		c.setState(e, Running)
		c.lastGen++
		e.gen = c.lastGen
		e.attempt, e.reason = 0, 0
		c.schedule(e, e.deadline())
		return ch | Rearmed, nil
	}
	// Running: the heap key may stay a stale lower bound, unless the new
	// deadline is earlier (shorter timeout, or time went backwards). A
	// forced drain stays asked for.
	if dl := e.deadline(); dl < e.due && e.forced == 0 {
		e.due = dl
		c.up(int(e.idx))
	}
	return ch, nil
}

// schedule puts e in the heap at due, or moves it there.
func (c *Coordinator) schedule(e *entry, due int64) {
	if e.idx < 0 {
		c.push(e, due)
		return
	}
	e.due = due
	c.fix(int(e.idx))
}

// unschedule takes e out of the heap if it is there.
func (c *Coordinator) unschedule(e *entry) {
	if e.idx >= 0 {
		c.remove(e)
	}
}

// leaveDraining keeps the unacknowledged count right when e leaves Draining.
func (c *Coordinator) leaveDraining(e *entry) {
	if e.state == Draining && e.attempt > 0 {
		c.unacked--
	}
}

func (c *Coordinator) setState(e *entry, s State) {
	c.counts[e.state]--
	c.counts[s]++
	e.state = s
}

// MarkDraining moves key to Draining. It returns false when key is not
// tracked. A Running backend marked Draining this way gets no quiesce (its
// broker already knows); a backend already Draining keeps its redelivery
// schedule.
func (c *Coordinator) MarkDraining(key string, now time.Time) bool {
	e, ok := c.entries[key]
	if !ok {
		return false
	}
	e.touched = max(e.touched, c.offset(now))
	if e.state != Draining {
		c.setState(e, Draining)
		// Drained by a report, not an emission: nothing to redeliver, and
		// a restored record must not look like an unacknowledged drain.
		e.reason, e.forced, e.attempt = 0, 0, 0
		c.park(e, 0)
	}
	return true
}

// MarkQuiesced moves key to Quiesced, which ends any redelivery. It returns
// false when key is not tracked.
func (c *Coordinator) MarkQuiesced(key string, now time.Time) bool {
	e, ok := c.entries[key]
	if !ok {
		return false
	}
	e.touched = max(e.touched, c.offset(now))
	if e.state != Quiesced {
		c.leaveDraining(e)
		c.setState(e, Quiesced)
		e.attempt, e.forced = 0, 0
		c.park(e, 0)
	}
	return true
}

// Remove forgets key. It returns whether key was tracked.
func (c *Coordinator) Remove(key string) bool {
	e, ok := c.entries[key]
	if !ok {
		return false
	}
	c.delete(e)
	return true
}

// State returns key's state, and false when key is not tracked.
func (c *Coordinator) State(key string) (State, bool) {
	e, ok := c.entries[key]
	if !ok {
		return 0, false
	}
	return e.state, true
}

// CollectDue returns every Running backend whose idle time at now is at least
// its timeout, with Reason IdleTimeout and Attempt 1, and moves each to
// Draining, so a second call returns nothing for it until fresh activity.
// Backends forced with Force come out with their Reason as soon as they were
// asked for. With redelivery on (Policy.RetryInterval), it also returns
// each Draining backend whose next attempt is due, with its original Reason
// and Generation and Attempt incremented. With forgetting on
// (Policy.ForgetAfter), it removes each Draining or Quiesced backend left
// untouched that long and returns it with Forgotten set. Backends come out
// in order of their due times.
func (c *Coordinator) CollectDue(now time.Time) []Due {
	return c.AppendDueN(nil, now, 0)
}

// AppendDue is CollectDue appending to dst and returning the extended
// slice, so that a caller can reuse one slice between calls.
func (c *Coordinator) AppendDue(dst []Due, now time.Time) []Due {
	return c.AppendDueN(dst, now, 0)
}

// AppendDueN is AppendDue returning at most n Dues (no limit when n <= 0):
// the n earliest. The rest stay due, in order, for the next call, so a
// caller can pace emissions (never early: a held-back backend comes out
// later, with the deadline it had) and bound the work of one call.
func (c *Coordinator) AppendDueN(dst []Due, now time.Time, n int) []Due {
	t := c.offset(now)
	out := dst
	for len(c.heap) > 0 && (n <= 0 || len(out)-len(dst) < n) {
		e := c.heap[0]
		if e.due > t {
			break
		}
		switch {
		case e.state != Running:
			if d, ok := c.settle(e, t); ok {
				out = append(out, d)
			}
		case e.forced != 0:
			out = append(out, c.drain(e, t, e.forced))
		case e.deadline() != e.due:
			// Stale lower bound: the backend was refreshed since. Re-key it
			// even when it is due, so backends come out in deadline order.
			e.due = e.deadline()
			c.down(0)
		default:
			out = append(out, c.drain(e, t, IdleTimeout))
		}
	}
	return out
}

// settle handles the top of the heap, a Draining or Quiesced entry whose
// action time has come: it forgets it, re-sends its drain, or re-keys a
// stale forgetting time. It returns the Due to report, if any.
func (c *Coordinator) settle(e *entry, t int64) (Due, bool) {
	resend := e.state == Draining && e.attempt > 0 && c.retry > 0
	if forgetAt := addSat(e.touched, c.forget); !resend && e.due != forgetAt {
		// Stale lower bound: touched moved since. Re-key it even when it
		// is due, so backends come out in order of their due times.
		c.schedule(e, forgetAt)
		return Due{}, false
	}
	if c.forget > 0 && t >= addSat(e.touched, c.forget) {
		d := c.due(e, t)
		d.Forgotten = true
		c.delete(e)
		return d, true
	}
	// Only a re-send is left: any other entry is in the heap to be
	// forgotten, and its time has come.
	e.attempt = min(e.attempt+1, math.MaxUint16-1)
	d := c.due(e, t)
	c.schedule(e, addSat(t, c.retryDelay(e.attempt, e.key)))
	return d, true
}

// drain moves the Running entry e to Draining for reason r and describes the
// first emission as a Due.
func (c *Coordinator) drain(e *entry, t int64, r Reason) Due {
	c.setState(e, Draining)
	e.reason, e.attempt, e.forced = r, 1, 0
	e.touched = max(e.touched, t)
	c.unacked++
	c.park(e, addSat(t, c.retryDelay(1, e.key)))
	return c.due(e, t)
}

func (c *Coordinator) due(e *entry, t int64) Due {
	return Due{
		Key:               e.key,
		IdleFor:           time.Duration(idleSince(t, e.last)),
		ConfiguredTimeout: time.Duration(e.timeout),
		Reason:            e.reason,
		Deadline:          c.at(e.deadline()),
		Generation:        e.gen,
		Attempt:           int(e.attempt),
	}
}

// Force asks for the Running backend key to be drained with reason r, as an
// operator's drain does: the next CollectDue at or after now returns it
// (after the backends already due, so a paced caller keeps deadline order),
// even if it is active meanwhile. It returns false, changing nothing, when
// key is not tracked or not Running, or r is zero.
func (c *Coordinator) Force(key string, now time.Time, r Reason) bool {
	t := c.offset(now)
	e, ok := c.entries[key]
	if !ok || e.state != Running || r == 0 { // forced 0 means none asked
		return false
	}
	if e.forced == 0 || e.due > t {
		c.schedule(e, t)
	}
	e.forced = r
	return true
}

// NextDeadline returns the earliest time at which CollectDue has work: the
// earliest deadline (last activity + timeout) of a Running backend, forced
// drain, or, with redelivery on, next attempt of a Draining one, or, with
// forgetting on, time a backend is forgotten. It returns false when there
// is none. It may tidy the deadline index, so it is a mutating call like
// the others.
func (c *Coordinator) NextDeadline() (time.Time, bool) {
	for len(c.heap) > 0 {
		e := c.heap[0]
		var at int64 // the exact time of e's next action
		switch {
		case e.state == Running && e.forced == 0:
			at = e.deadline()
		case e.state != Running && (e.state != Draining || e.attempt == 0 || c.retry == 0):
			at = addSat(e.touched, c.forget)
		default:
			return c.at(e.due), true // a forced drain or a re-send: exact
		}
		if at == e.due {
			return c.at(at), true
		}
		e.due = at // a stale lower bound
		c.down(0)
	}
	return time.Time{}, false
}

// Extend pushes every scheduled action d later, as of now: Running
// backends are treated as if their last activity were d later, but no later
// than now (nor earlier than it was): one whose heartbeat was applied during
// the outage is drained one timeout after now at the latest, not a whole
// outage after that; pending redeliveries wait d longer, and forgetting
// counts d less. The
// worker calls it after a NATS outage of length d, during which heartbeats
// and reports could not arrive. It costs O(n) in scheduled backends.
func (c *Coordinator) Extend(d time.Duration, now time.Time) {
	if d <= 0 {
		return
	}
	t := c.offset(now)
	for _, e := range c.heap {
		switch {
		case e.state == Running:
			e.last = min(addSat(e.last, int64(d)), max(e.last, t))
			if e.forced == 0 {
				e.due = e.deadline()
			}
		case e.state == Draining && e.attempt > 0 && c.retry > 0:
			e.due = addSat(e.due, int64(d))
			e.touched = min(addSat(e.touched, int64(d)), max(e.touched, t))
		default:
			e.touched = min(addSat(e.touched, int64(d)), max(e.touched, t))
			e.due = addSat(e.touched, c.forget)
		}
	}
	// Capping at now can reorder entries: rebuild the heap.
	for i := len(c.heap)/2 - 1; i >= 0; i-- {
		c.down(i)
	}
}

// Restore inserts a backend from a registry at now, replacing any entry of
// the same key. A Running backend gets a full timeout of grace from now; a
// Draining one stays Draining (its next redelivery, if on, is one retry
// interval from now); a Quiesced one stays Quiesced. The generation counter
// moves past rec.Generation so it is never reused. It returns ErrFull when
// the key is new and MaxBackends or MaxPerInstance is reached.
func (c *Coordinator) Restore(rec Record, now time.Time) error {
	t := c.offset(now)
	if rec.State < Running || rec.State > Quiesced {
		rec.State = Running
	}
	if old, ok := c.entries[rec.Key]; ok {
		c.delete(old)
	} else if err := c.admit(rec.Key); err != nil {
		return err
	}
	e := &entry{key: strings.Clone(rec.Key), last: t, touched: t, timeout: int64(clamp(rec.IdleTimeout)), gen: rec.Generation, state: rec.State, reason: rec.Reason, idx: -1}
	c.insert(e)
	c.SetGenerationFloor(rec.Generation)
	switch {
	case e.state == Running:
		c.push(e, e.deadline())
	case e.state == Draining && e.reason != 0:
		e.attempt = 1
		c.unacked++
		c.park(e, addSat(t, c.retryDelay(1, e.key)))
	default:
		c.park(e, 0)
	}
	return nil
}

// SetGenerationFloor makes every future generation greater than g. A worker
// that persists generations calls it with a high-water mark it stored, so
// generations are never reused across restarts.
func (c *Coordinator) SetGenerationFloor(g uint64) { c.lastGen = max(c.lastGen, g) }

// Generation returns the last generation handed out.
func (c *Coordinator) Generation() uint64 { return c.lastGen }

// Record returns what a registry should keep of key.
func (c *Coordinator) Record(key string) (Record, bool) {
	e, ok := c.entries[key]
	if !ok {
		return Record{}, false
	}
	return Record{Key: e.key, IdleTimeout: time.Duration(e.timeout), State: e.state, Generation: e.gen, Reason: e.reason}, true
}

// Get returns a snapshot of key at now.
func (c *Coordinator) Get(key string, now time.Time) (Backend, bool) {
	e, ok := c.entries[key]
	if !ok {
		return Backend{}, false
	}
	return c.snapshot(e, c.offset(now)), true
}

func (c *Coordinator) snapshot(e *entry, t int64) Backend {
	return Backend{
		Key:         e.key,
		State:       e.state,
		LastActive:  c.at(e.last),
		IdleFor:     time.Duration(idleSince(t, e.last)),
		IdleTimeout: time.Duration(e.timeout),
		Generation:  e.gen,
		Reason:      e.reason,
		Attempts:    int(e.attempt),
	}
}

// List returns a snapshot at now of the backends whose key satisfies match
// (all of them when match is nil), sorted by key, at most limit of them
// (all when limit <= 0), and the number that matched. It visits every
// backend, in key order, in one call: it is meant for tests and small
// populations; the worker lists in slices with Scan.
func (c *Coordinator) List(now time.Time, match func(key string) bool, limit int) ([]Backend, int) {
	t := c.offset(now)
	out := []Backend{}
	total := 0
	c.index.Ascend(func(e *entry) bool {
		if match == nil || match(e.key) {
			total++
			if limit <= 0 || len(out) < limit {
				out = append(out, c.snapshot(e, t))
			}
		}
		return true
	})
	return out, total
}

// Len returns the number of tracked backends.
func (c *Coordinator) Len() int { return len(c.entries) }

// Unacknowledged returns the number of Draining backends that were sent a
// quiesce and have had no MarkQuiesced, Remove or activity since.
func (c *Coordinator) Unacknowledged() int { return c.unacked }

// Count returns the number of tracked backends in state s.
func (c *Coordinator) Count(s State) int {
	if s < Running || s > Quiesced {
		return 0
	}
	return c.counts[s]
}
