package store

import (
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/idle-worker/idle-worker/coordinator"
)

// Restored records are handed to the worker in ascending key order: the
// coordinator's index builds fastest that way.

// settle drops the tombstones and returns every record in ascending key
// order (the coordinator's index builds fastest that way): each partition
// sorted on its own, readWorkers at a time, then merged.
func (s *Store) settle(parts []int) []coordinator.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	sorted := make([][]coordinator.Record, len(s.parts))
	n := 0
	for _, p := range parts {
		n += len(s.parts[p].recs)
	}
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(readWorkers, runtime.GOMAXPROCS(0)) {
		wg.Go(func() {
			for pi := range next {
				p := s.parts[pi]
				recs := make([]coordinator.Record, 0, len(p.recs))
				for key, v := range p.recs {
					if v.tombstone() {
						delete(p.recs, key)
						continue
					}
					recs = append(recs, v.record(key))
				}
				slices.SortFunc(recs, byKey)
				sorted[pi] = recs
			}
		})
	}
	for _, pi := range parts {
		next <- pi
	}
	close(next)
	wg.Wait()
	return mergeSorted(sorted, n)
}

func byKey(a, b coordinator.Record) int { return strings.Compare(a.Key, b.Key) }

// mergeSorted merges sorted runs into one sorted slice, pairwise: log2(runs)
// rounds of two-way merges, the merges of a round on parallel goroutines.
func mergeSorted(runs [][]coordinator.Record, n int) []coordinator.Record {
	runs = slices.DeleteFunc(runs, func(r []coordinator.Record) bool { return len(r) == 0 })
	for len(runs) > 1 {
		next := make([][]coordinator.Record, (len(runs)+1)/2)
		var wg sync.WaitGroup
		for i := 0; i+1 < len(runs); i += 2 {
			wg.Go(func() { next[i/2] = merge2(runs[i], runs[i+1]) })
		}
		if len(runs)%2 == 1 {
			next[len(next)-1] = runs[len(runs)-1]
		}
		wg.Wait()
		runs = next
	}
	if len(runs) == 0 {
		return make([]coordinator.Record, 0, n)
	}
	return runs[0]
}

// merge2 merges two sorted runs.
func merge2(a, b []coordinator.Record) []coordinator.Record {
	out := make([]coordinator.Record, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		if b[0].Key < a[0].Key {
			out, b = append(out, b[0]), b[1:]
		} else {
			out, a = append(out, a[0]), a[1:]
		}
	}
	return append(append(out, a...), b...)
}
