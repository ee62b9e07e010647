package coordinator

import (
	"time"
)

// Restarts and outages: restoring a registry's records, keeping generations
// unique across restarts, and shifting the schedule after an outage.

// Restore inserts a backend from a registry at now, replacing any entry of
// the same key. A Running backend gets a full timeout of grace from now; a
// Draining one stays Draining (its next redelivery, if on, is one retry
// interval from now); a Quiesced one stays Quiesced. The backend keeps
// rec.Generation, so that a drain sent before a restart or crash is re-sent
// with the same id, and the generation counter moves past it; a zero
// rec.Generation asks for a fresh one instead. Callers that persist
// generations set the floor (SetGenerationFloor) to their stored high-water
// mark first, so fresh generations are never ones handed out before. It
// returns ErrFull when the key is new and MaxBackends or MaxPerInstance is
// reached. The entry keeps rec.Key itself (no copy): pass a string that does
// not pin a larger buffer. Restoring many records is fastest in ascending
// key order, after Grow.
func (c *Coordinator) Restore(rec Record, now time.Time) error {
	return c.RestoreAt(rec, now, now)
}

// RestoreAt is Restore for a backend last active at lastActive (at most
// now, later ones count as now): a Running backend's deadline is
// lastActive plus its timeout, due at once when that has passed. A worker
// taking a partition over from a dead one passes the last heartbeat it saw
// itself, so the takeover adds no grace beyond what it could not see.
func (c *Coordinator) RestoreAt(rec Record, now, lastActive time.Time) error {
	t := c.offset(now)
	last := t
	if lastActive.Before(now) {
		last = c.offset(lastActive)
	}
	if rec.State < Running || rec.State > Quiesced {
		rec.State = Running
	}
	if old, ok := c.entries[rec.Key]; ok {
		c.delete(old)
	} else if err := c.admit(rec.Key); err != nil {
		return err
	}
	if rec.Generation != 0 {
		c.SetGenerationFloor(rec.Generation)
	} else {
		c.lastGen++
		rec.Generation = c.lastGen
	}
	e := &entry{key: rec.Key, last: last, touched: t, timeout: int64(clamp(rec.IdleTimeout)), gen: rec.Generation, state: rec.State, reason: rec.Reason, idx: -1}
	c.insert(e)
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

// SetGeneration sets the last generation handed out to g, lower or higher.
// A worker that hands out generations from blocks it reserved sets it back
// after restoring backends of other workers' blocks (Restore moves the
// counter past each restored generation).
func (c *Coordinator) SetGeneration(g uint64) { c.lastGen = g }

// Grow makes room for n more backends, so restoring n records does not
// grow the key map step by step.
func (c *Coordinator) Grow(n int) {
	if n <= 0 {
		return
	}
	m := make(map[string]*entry, len(c.entries)+n)
	for k, e := range c.entries {
		m[k] = e
	}
	c.entries = m
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
