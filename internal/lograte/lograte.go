// Package lograte keeps repetitive log lines from flooding a log: a Limiter
// lets one line of each kind through per interval and counts the lines it
// held back, so the next line of that kind can say how many were
// suppressed. It is safe for concurrent use, for callbacks that run on other
// goroutines (nats.go's error handler, nats-server's logger). Clip keeps a
// single value a client controls from making a line long.
package lograte

import (
	"sync"
	"time"
)

// maxKinds bounds the kinds a Limiter remembers; past it, it forgets them
// all rather than grow with a hostile stream of distinct kinds.
const maxKinds = 1024

// Limiter decides which log lines to write. The zero value is not usable;
// create one with New.
type Limiter struct {
	interval time.Duration
	now      func() time.Time

	mu    sync.Mutex
	kinds map[string]*kind
}

type kind struct {
	last       time.Time
	suppressed uint64
}

// New returns a Limiter that lets one line per kind through per interval.
// now is its clock (nil: time.Now).
func New(interval time.Duration, now func() time.Time) *Limiter {
	if now == nil {
		now = time.Now
	}
	return &Limiter{interval: interval, now: now, kinds: make(map[string]*kind)}
}

// Allow reports whether a line of kind k may be written now and, when it
// may, how many lines of that kind were held back since the last one.
func (l *Limiter) Allow(k string) (ok bool, suppressed uint64) {
	t := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	st, seen := l.kinds[k]
	if seen && t.Sub(st.last) < l.interval {
		st.suppressed++
		return false, 0
	}
	if !seen {
		if len(l.kinds) >= maxKinds {
			clear(l.kinds)
		}
		st = &kind{}
		l.kinds[k] = st
	}
	n := st.suppressed
	st.last, st.suppressed = t, 0
	return true, n
}

// Clip shortens s to at most n bytes, marking the cut with "…", so a value
// a client controls (a subject, a stored key) cannot make a log line long.
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
