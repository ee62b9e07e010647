package coordinator

import (
	"math"
	"time"
)

// Collection: what is due, in order, and when the next thing will be.

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
// key is not tracked or not Running, already forced (the first request
// stands, so a repeated operator request counts nothing twice), or r is
// zero.
func (c *Coordinator) Force(key string, now time.Time, r Reason) bool {
	t := c.offset(now)
	e, ok := c.entries[key]
	if !ok || e.state != Running || e.forced != 0 || r == 0 { // forced 0 means none asked
		return false
	}
	c.schedule(e, t)
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

// dueCountLimit bounds the entries DueCount visits, so that counting a
// large herd costs about a millisecond at most.
const dueCountLimit = 100_000

// DueCount returns how many drains are due at now: first emissions and
// re-sends that CollectDue would return, counting at most about 100 000. A
// running backend refreshed since its deadline index was set is not due and
// is not counted. It costs O(k)
// for the k entries whose index time has come.
func (c *Coordinator) DueCount(now time.Time) int {
	t := c.offset(now)
	n, visited := 0, 0
	var walk func(i int)
	walk = func(i int) {
		if i >= len(c.heap) || c.heap[i].due > t || visited >= dueCountLimit {
			return
		}
		visited++
		switch e := c.heap[i]; {
		case e.state == Running && (e.forced != 0 || e.deadline() <= t):
			n++ // a first emission
		case e.state == Draining && e.attempt > 0 && c.retry > 0:
			n++ // a re-send (forgetting, which sends nothing, is not counted)
		}
		walk(2*i + 1)
		walk(2*i + 2)
	}
	walk(0)
	return n
}
