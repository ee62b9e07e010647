package coordinator

import (
	"fmt"
	"strings"
)

// Membership: which keys are tracked, the limits on them, and where a
// non-running entry waits for its next action.

// instance returns the instance a key belongs to: its first token.
func instance(key string) string {
	if i := strings.IndexByte(key, '.'); i >= 0 {
		return key[:i]
	}
	return key
}

// admit reports whether a new key may be tracked: ErrFull, wrapped with the
// limit that refused it, when the policy's MaxBackends or MaxPerInstance is
// reached.
func (c *Coordinator) admit(key string) error {
	if c.policy.MaxBackends > 0 && len(c.entries) >= c.policy.MaxBackends {
		return ErrFull
	}
	if c.perInst != nil {
		inst := instance(key)
		if n := c.perInst[inst]; int(n) >= c.policy.MaxPerInstance {
			return fmt.Errorf("%w: instance %q tracks %d backends", ErrFull, inst, n)
		}
	}
	return nil
}

// insert tracks the new entry e.
func (c *Coordinator) insert(e *entry) {
	c.entries[e.key] = e
	c.index.ReplaceOrInsert(e)
	c.counts[e.state]++
	if c.perInst != nil {
		inst := instance(e.key)
		if _, ok := c.perInst[inst]; !ok {
			inst = strings.Clone(inst) // not a view of this entry's key
		}
		c.perInst[inst]++
	}
}

// delete stops tracking e.
func (c *Coordinator) delete(e *entry) {
	c.unschedule(e)
	c.leaveDraining(e)
	c.counts[e.state]--
	delete(c.entries, e.key)
	c.index.Delete(e)
	if c.perInst != nil {
		inst := instance(e.key)
		if n := c.perInst[inst] - 1; n > 0 {
			c.perInst[inst] = n
		} else {
			delete(c.perInst, inst)
		}
	}
}

// park schedules the next action of a Draining or Quiesced entry: its
// redelivery at retryAt when it was sent a drain and redelivery is on, else
// its forgetting when that is on, else nothing.
func (c *Coordinator) park(e *entry, retryAt int64) {
	switch {
	case e.state == Draining && e.attempt > 0 && c.retry > 0:
		c.schedule(e, retryAt)
	case c.forget > 0:
		c.schedule(e, addSat(e.touched, c.forget))
	default:
		c.unschedule(e)
	}
}

// jitter returns a wait in [0, span) that depends only on key and attempt,
// so the model stays deterministic while re-sends of a mass drain spread
// out. FNV-1a over the key and the attempt (two bytes, little-endian).
func jitter(span int64, key string, attempt uint16) int64 {
	if span <= 0 {
		return 0
	}
	h := uint64(14695981039346656037)
	for i := 0; i < len(key); i++ {
		h = (h ^ uint64(key[i])) * 1099511628211
	}
	h = (h ^ uint64(attempt&0xff)) * 1099511628211 // little-endian bytes
	h = (h ^ uint64(attempt>>8)) * 1099511628211
	return int64(h % uint64(span))
}
