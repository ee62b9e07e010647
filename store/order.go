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
// rounds of two-way merges, the merges of a round on parallel goroutines,
// between two buffers of n records (no allocation per round).
func mergeSorted(runs [][]coordinator.Record, n int) []coordinator.Record {
	src := make([]coordinator.Record, 0, n)
	var bounds []int // run i is src[bounds[i]:bounds[i+1]]
	for _, r := range runs {
		if len(r) > 0 {
			bounds = append(bounds, len(src))
			src = append(src, r...)
		}
	}
	bounds = append(bounds, len(src))
	dst := make([]coordinator.Record, len(src))
	for len(bounds) > 2 {
		next := []int{0}
		var wg sync.WaitGroup
		for i := 0; i+1 < len(bounds)-1; i += 2 {
			lo, mid, hi := bounds[i], bounds[i+1], bounds[i+2]
			wg.Go(func() { merge2(dst[lo:hi], src[lo:mid], src[mid:hi]) })
			next = append(next, hi)
		}
		if (len(bounds)-1)%2 == 1 { // an odd run out: copied as it is
			lo, hi := bounds[len(bounds)-2], bounds[len(bounds)-1]
			copy(dst[lo:hi], src[lo:hi])
			next = append(next, hi)
		}
		wg.Wait()
		src, dst, bounds = dst, src, next
	}
	return src
}

// merge2 merges the sorted runs a and b into out, len(a)+len(b) long.
func merge2(out, a, b []coordinator.Record) {
	i := 0
	for len(a) > 0 && len(b) > 0 {
		if b[0].Key < a[0].Key {
			out[i], b = b[0], b[1:]
		} else {
			out[i], a = a[0], a[1:]
		}
		i++
	}
	i += copy(out[i:], a)
	copy(out[i:], b)
}
