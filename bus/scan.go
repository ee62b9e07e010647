package bus

import (
	"time"

	"github.com/idle-worker/idle-worker/coordinator"
)

// scanSlice is how many keys one slice of a pattern scan visits at most.
// A slice is one turn of the worker loop; between slices the loop handles
// heartbeats, timers and other calls, so a request over a million backends
// never holds the loop for longer than a slice. On a 2-core AMD EPYC with
// 1M backends a slice takes about 0.15 ms (BenchmarkScanSlice; 4096 keys:
// 0.6-0.75 ms). Smaller slices cost nothing measurable (a wildcard list of
// 1M took ~155 ms with 1024 or 4096) and cut the heartbeats' median round
// trip under a list loop to a third (idle-bench -only admin: 0.19 ms
// against 0.6 ms).
const scanSlice = 1024

// scanMatching walks the tracked backends whose keys match pat, in key
// order, in slices. Each slice runs on the loop (through w.do) and visits
// at most w.sliceSize() keys with pat's literal prefix, so the walk never
// looks at keys outside the prefix. During the slice's scan, visit gets a
// snapshot of each matching backend; it must not change the Coordinator.
// Then, still on the loop, after runs with done telling whether this was
// the last slice; it may change the Coordinator (the backends just visited
// included): the next slice resumes after the last key visited, tracked or
// not. Each tracked key is visited at most once; a key added meanwhile is
// visited only if it sorts after the walk's position. after runs at least
// once, with done true at the end, unless the worker shuts down: then
// scanMatching returns ErrShuttingDown after some slices.
func (w *Worker) scanMatching(pat Pattern, visit func(coordinator.Backend), after func(done bool)) error {
	s := newPatternScan(pat, visit)
	for done := false; !done; {
		err := w.do(func() {
			done = s.step(w.coord, w.now(), w.sliceSize())
			after(done)
		})
		if err != nil {
			return err
		}
		if w.afterSlice != nil && !done {
			w.afterSlice()
		}
	}
	return nil
}

// patternScan is the state of a scan of the backends matching a pattern,
// kept between slices: the pattern, its literal prefix, and the position.
type patternScan struct {
	pat    Pattern
	prefix string
	all    bool // every key with the prefix matches: skip Match
	pos    string
	visit  func(coordinator.Backend)
}

func newPatternScan(pat Pattern, visit func(coordinator.Backend)) *patternScan {
	return &patternScan{pat: pat, prefix: pat.LiteralPrefix(), all: pat.prefixOnly(), visit: visit}
}

// step visits at most maxVisit more keys of c, calls visit with a snapshot
// at now of each that matches, and reports whether the scan is done. A
// literal pattern is one look-up.
func (s *patternScan) step(c *coordinator.Coordinator, now time.Time, maxVisit int) (done bool) {
	if s.pat.Literal() {
		if b, ok := c.Get(s.pat.String(), now); ok {
			s.visit(b)
		}
		return true
	}
	var more bool
	s.pos, more = c.Scan(now, s.pos, s.prefix, maxVisit, s.match)
	return !more
}

func (s *patternScan) match(b coordinator.Backend) bool {
	if s.all || s.pat.Match(b.Key) {
		s.visit(b)
	}
	return true
}

// forEachMatching calls f on the loop with each tracked key that matches
// pat, in key order, in slices of at most w.sliceSize() keys visited (see
// scanMatching): "for each key matching pat, in slices, do f(key)". f gets
// the slice's time; it may change the Coordinator, remove or quiesce the
// key it is given included. forEachMatching returns the number of keys f
// was called with, and ErrShuttingDown when the worker stopped before the
// walk was done.
func (w *Worker) forEachMatching(pat Pattern, f func(key string, now time.Time)) (int, error) {
	var keys []string
	n := 0
	err := w.scanMatching(pat, func(b coordinator.Backend) {
		keys = append(keys, b.Key)
	}, func(bool) {
		now := w.now()
		for _, k := range keys {
			f(k, now)
		}
		n += len(keys)
		keys = keys[:0]
	})
	return n, err
}

// sliceSize is how many keys a slice of a pattern scan visits at most.
func (w *Worker) sliceSize() int {
	if w.scanSlice > 0 {
		return w.scanSlice
	}
	return scanSlice
}
