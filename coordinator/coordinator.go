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
