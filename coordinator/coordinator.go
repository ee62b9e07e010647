package coordinator

import (
	"math"
	"slices"
	"strings"
	"time"

	"github.com/google/btree"
)

// entry is one tracked backend. Times are nanoseconds since Coordinator.epoch.
type entry struct {
	key     string
	last    int64 // last activity
	timeout int64 // idle timeout, >= MinTimeout
	// due is the heap key. Running: a lower bound of last+timeout (it may be
	// stale after a refresh). Draining with redelivery on: exactly the next
	// attempt's time.
	due     int64
	gen     uint64
	idx     int32 // position in Coordinator.heap, -1 when not in it
	attempt uint16
	state   State
	reason  Reason
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
}

// New returns an empty Coordinator governed by p.
func New(p Policy) *Coordinator {
	c := &Coordinator{
		policy:     p,
		defTimeout: int64(clamp(p.DefaultIdleTimeout)),
		entries:    make(map[string]*entry),
		index:      newIndex(),
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

// retryDelay is the wait after attempt n (n >= 1): retry * 2^(n-1), capped.
func (c *Coordinator) retryDelay(n uint16) int64 {
	d := c.retry
	for i := uint16(1); i < n && d < c.retryMax; i++ {
		if d > c.retryMax/2 {
			return c.retryMax // doubling would pass the cap, or overflow
		}
		d *= 2
	}
	return min(d, c.retryMax)
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
// nothing, when key is new and the policy's MaxBackends is reached.
func (c *Coordinator) MarkActivityWithTimeout(key string, now time.Time, timeout time.Duration) (Change, error) {
	return c.mark(key, now, int64(clamp(timeout)))
}

func (c *Coordinator) mark(key string, now time.Time, timeout int64) (Change, error) {
	t := c.offset(now)
	e, ok := c.entries[key]
	if !ok {
		if c.policy.MaxBackends > 0 && len(c.entries) >= c.policy.MaxBackends {
			return 0, ErrFull
		}
		c.lastGen++
		// Clone: callers often pass a substring of a larger buffer (a
		// message subject) that the map would otherwise keep alive.
		e = &entry{key: strings.Clone(key), last: t, timeout: timeout, gen: c.lastGen, state: Running, idx: -1}
		c.entries[e.key] = e
		c.index.ReplaceOrInsert(e)
		c.counts[Running]++
		c.push(e, e.deadline())
		return Added, nil
	}
	var ch Change
	if e.timeout != timeout {
		ch |= TimeoutChanged
	}
	e.last, e.timeout = t, timeout
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
	// deadline is earlier (shorter timeout, or time went backwards).
	if dl := e.deadline(); dl < e.due {
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
func (c *Coordinator) MarkDraining(key string) bool {
	e, ok := c.entries[key]
	if !ok {
		return false
	}
	if e.state != Draining {
		c.unschedule(e)
		c.setState(e, Draining)
		// Drained by a report, not an emission: nothing to redeliver, and
		// a restored record must not look like an unacknowledged drain.
		e.reason = 0
	}
	return true
}

// MarkQuiesced moves key to Quiesced, which ends any redelivery. It returns
// false when key is not tracked.
func (c *Coordinator) MarkQuiesced(key string) bool {
	e, ok := c.entries[key]
	if !ok {
		return false
	}
	c.unschedule(e)
	c.leaveDraining(e)
	c.setState(e, Quiesced)
	e.attempt = 0
	return true
}

// Remove forgets key. It returns whether key was tracked.
func (c *Coordinator) Remove(key string) bool {
	e, ok := c.entries[key]
	if !ok {
		return false
	}
	c.unschedule(e)
	c.leaveDraining(e)
	c.counts[e.state]--
	delete(c.entries, key)
	c.index.Delete(e)
	return true
}

// CollectDue returns every Running backend whose idle time at now is at least
// its timeout, with Reason IdleTimeout and Attempt 1, and moves each to
// Draining, so a second call returns nothing for it until fresh activity.
// With redelivery on (Policy.RetryInterval), it also returns each Draining
// backend whose next attempt is due, with its original Reason and Generation
// and Attempt incremented. Backends come out in order of their due times.
func (c *Coordinator) CollectDue(now time.Time) []Due {
	return c.AppendDue(nil, now)
}

// AppendDue is CollectDue appending to dst and returning the extended
// slice, so that a caller can reuse one slice between calls.
func (c *Coordinator) AppendDue(dst []Due, now time.Time) []Due {
	t := c.offset(now)
	out := dst
	for len(c.heap) > 0 {
		e := c.heap[0]
		if e.due > t {
			break
		}
		if e.state == Draining {
			e.attempt = min(e.attempt+1, math.MaxUint16-1)
			out = append(out, c.due(e, t))
			e.due = addSat(t, c.retryDelay(e.attempt))
			c.down(0)
			continue
		}
		if dl := e.deadline(); dl != e.due {
			// Stale lower bound: the backend was refreshed since. Re-key it
			// even when it is due, so backends come out in deadline order.
			e.due = dl
			c.down(0)
			continue
		}
		out = append(out, c.drain(e, t, IdleTimeout))
	}
	return out
}

// drain moves the Running entry e to Draining for reason r and describes the
// first emission as a Due.
func (c *Coordinator) drain(e *entry, t int64, r Reason) Due {
	c.setState(e, Draining)
	e.reason, e.attempt = r, 1
	c.unacked++
	if c.retry > 0 {
		c.schedule(e, addSat(t, c.retryDelay(1)))
	} else {
		c.unschedule(e)
	}
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

// Quiesce forces the Running backend key to Draining with reason r, as an
// operator's drain does. It returns false, changing nothing, when key is not
// tracked or not Running.
func (c *Coordinator) Quiesce(key string, now time.Time, r Reason) (Due, bool) {
	t := c.offset(now)
	e, ok := c.entries[key]
	if !ok || e.state != Running {
		return Due{}, false
	}
	return c.drain(e, t, r), true
}

// QuiesceMatching forces every Running backend whose key satisfies match to
// Draining with reason r and returns them sorted by key. It visits every
// scheduled backend: it is meant for operator requests, not the hot path.
func (c *Coordinator) QuiesceMatching(now time.Time, r Reason, match func(key string) bool) []Due {
	t := c.offset(now)
	var hit []*entry
	for _, e := range c.heap {
		if e.state == Running && match(e.key) {
			hit = append(hit, e)
		}
	}
	slices.SortFunc(hit, func(a, b *entry) int { return strings.Compare(a.key, b.key) })
	out := make([]Due, 0, len(hit))
	for _, e := range hit {
		out = append(out, c.drain(e, t, r))
	}
	return out
}

// NextDeadline returns the earliest time at which CollectDue has work: the
// earliest deadline (last activity + timeout) of a Running backend or, with
// redelivery on, the earliest next attempt of a Draining one. It returns
// false when there is none. It may tidy the deadline index, so it is a
// mutating call like the others.
func (c *Coordinator) NextDeadline() (time.Time, bool) {
	for len(c.heap) > 0 {
		e := c.heap[0]
		if e.state != Running {
			return c.at(e.due), true
		}
		dl := e.deadline()
		if dl == e.due {
			return c.at(dl), true
		}
		e.due = dl
		c.down(0)
	}
	return time.Time{}, false
}

// Extend pushes every scheduled action d later: Running backends are treated
// as if their last activity were d later, and pending redeliveries wait d
// longer. The worker calls it after a NATS outage of length d, during which
// heartbeats could not arrive. It costs O(n) in scheduled backends and keeps
// the heap order.
func (c *Coordinator) Extend(d time.Duration) {
	if d <= 0 {
		return
	}
	for _, e := range c.heap {
		if e.state == Running {
			e.last = addSat(e.last, int64(d))
		}
		e.due = addSat(e.due, int64(d))
	}
}

// Restore inserts a backend from a registry at now, replacing any entry of
// the same key. A Running backend gets a full timeout of grace from now; a
// Draining one stays Draining (its next redelivery, if on, is one retry
// interval from now); a Quiesced one stays Quiesced. The generation counter
// moves past rec.Generation so it is never reused. It returns ErrFull when
// the key is new and MaxBackends is reached.
func (c *Coordinator) Restore(rec Record, now time.Time) error {
	t := c.offset(now)
	if rec.State < Running || rec.State > Quiesced {
		rec.State = Running
	}
	if old, ok := c.entries[rec.Key]; ok {
		c.unschedule(old)
		c.leaveDraining(old)
		c.counts[old.state]--
		delete(c.entries, rec.Key)
	} else if c.policy.MaxBackends > 0 && len(c.entries) >= c.policy.MaxBackends {
		return ErrFull
	}
	e := &entry{key: strings.Clone(rec.Key), last: t, timeout: int64(clamp(rec.IdleTimeout)), gen: rec.Generation, state: rec.State, reason: rec.Reason, idx: -1}
	c.entries[e.key] = e
	c.index.ReplaceOrInsert(e) // replaces the old entry of the key, if any
	c.counts[e.state]++
	c.SetGenerationFloor(rec.Generation)
	switch {
	case e.state == Running:
		c.push(e, e.deadline())
	case e.state == Draining && e.reason != 0:
		e.attempt = 1
		c.unacked++
		if c.retry > 0 {
			c.push(e, addSat(t, c.retryDelay(1)))
		}
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
