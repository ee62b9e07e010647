package coordinator

import (
	"math"
	"slices"
	"strings"
	"time"
)

// entry is one tracked backend. Times are nanoseconds since Coordinator.epoch.
type entry struct {
	key     string
	last    int64 // last activity
	timeout int64 // idle timeout, >= MinTimeout
	due     int64 // heap key: a lower bound of last+timeout while Running
	gen     uint64
	idx     int32 // position in Coordinator.heap, -1 when not Running
	state   State
}

func (e *entry) deadline() int64 { return addSat(e.last, e.timeout) }

// Coordinator is the idle-detection state machine. The zero value is not
// usable; create one with New. It is not safe for concurrent use.
type Coordinator struct {
	policy     Policy
	defTimeout int64
	epoch      time.Time
	hasEpoch   bool
	entries    map[string]*entry
	heap       []*entry // Running entries, min-heap on entry.due
	counts     [Quiesced + 1]int
	lastGen    uint64
}

// New returns an empty Coordinator governed by p.
func New(p Policy) *Coordinator {
	return &Coordinator{
		policy:     p,
		defTimeout: int64(clamp(p.DefaultIdleTimeout)),
		entries:    make(map[string]*entry),
	}
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
		c.counts[Running]++
		c.push(e)
		return Added, nil
	}
	var ch Change
	if e.timeout != timeout {
		ch |= TimeoutChanged
	}
	e.last, e.timeout = t, timeout
	if e.state != Running {
		c.counts[e.state]--
		c.counts[Running]++
		e.state = Running
		c.lastGen++
		e.gen = c.lastGen
		c.push(e)
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

// MarkDraining moves key to Draining. It returns false when key is not
// tracked.
func (c *Coordinator) MarkDraining(key string) bool { return c.setState(key, Draining) }

// MarkQuiesced moves key to Quiesced. It returns false when key is not
// tracked.
func (c *Coordinator) MarkQuiesced(key string) bool { return c.setState(key, Quiesced) }

func (c *Coordinator) setState(key string, s State) bool {
	e, ok := c.entries[key]
	if !ok {
		return false
	}
	if e.state == Running {
		c.remove(e)
	}
	c.counts[e.state]--
	c.counts[s]++
	e.state = s
	return true
}

// Remove forgets key. It returns whether key was tracked.
func (c *Coordinator) Remove(key string) bool {
	e, ok := c.entries[key]
	if !ok {
		return false
	}
	if e.state == Running {
		c.remove(e)
	}
	c.counts[e.state]--
	delete(c.entries, key)
	return true
}

// CollectDue returns every Running backend whose idle time at now is at least
// its timeout, with Reason IdleTimeout, and moves each to Draining, so a
// second call returns nothing for it until fresh activity. Backends come out
// in deadline order.
func (c *Coordinator) CollectDue(now time.Time) []Due {
	t := c.offset(now)
	var out []Due
	for len(c.heap) > 0 {
		e := c.heap[0]
		if e.due > t {
			break
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

// drain moves the running entry e to Draining and describes it as a Due.
func (c *Coordinator) drain(e *entry, t int64, r Reason) Due {
	c.remove(e)
	c.counts[Running]--
	c.counts[Draining]++
	e.state = Draining
	idle := idleSince(t, e.last)
	return Due{
		Key:               e.key,
		IdleFor:           time.Duration(idle),
		ConfiguredTimeout: time.Duration(e.timeout),
		Reason:            r,
		Deadline:          c.at(e.deadline()),
		Generation:        e.gen,
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
// running backend: it is meant for operator requests, not the hot path.
func (c *Coordinator) QuiesceMatching(now time.Time, r Reason, match func(key string) bool) []Due {
	t := c.offset(now)
	var hit []*entry
	for _, e := range c.heap {
		if match(e.key) {
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

// NextDeadline returns the earliest deadline (last activity + timeout) of a
// Running backend, and false when no backend is Running. The caller should
// call CollectDue at or after that time. It may tidy the deadline index, so
// it is a mutating call like the others.
func (c *Coordinator) NextDeadline() (time.Time, bool) {
	for len(c.heap) > 0 {
		e := c.heap[0]
		dl := e.deadline()
		if dl == e.due {
			return c.at(dl), true
		}
		e.due = dl
		c.down(0)
	}
	return time.Time{}, false
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
	idle := idleSince(t, e.last)
	return Backend{
		Key:         e.key,
		State:       e.state,
		LastActive:  c.at(e.last),
		IdleFor:     time.Duration(idle),
		IdleTimeout: time.Duration(e.timeout),
		Generation:  e.gen,
	}
}

// List returns a snapshot at now of the backends whose key satisfies match
// (all of them when match is nil), sorted by key, at most limit of them
// (all when limit <= 0), and the number that matched. It visits every
// backend: it is meant for operator requests, not the hot path.
func (c *Coordinator) List(now time.Time, match func(key string) bool, limit int) ([]Backend, int) {
	t := c.offset(now)
	var hit []*entry
	for _, e := range c.entries {
		if match == nil || match(e.key) {
			hit = append(hit, e)
		}
	}
	slices.SortFunc(hit, func(a, b *entry) int { return strings.Compare(a.key, b.key) })
	total := len(hit)
	if limit > 0 && len(hit) > limit {
		hit = hit[:limit]
	}
	out := make([]Backend, len(hit))
	for i, e := range hit {
		out[i] = c.snapshot(e, t)
	}
	return out, total
}

// Len returns the number of tracked backends.
func (c *Coordinator) Len() int { return len(c.entries) }

// Count returns the number of tracked backends in state s.
func (c *Coordinator) Count(s State) int {
	if s < Running || s > Quiesced {
		return 0
	}
	return c.counts[s]
}
