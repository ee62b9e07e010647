package bus

import (
	"strconv"
	"testing"
	"time"

	"github.com/idle-worker/idle-worker/coordinator"
)

// BenchmarkScanSlice measures one slice of a pattern scan on the loop
// among 1M backends ("dev-<i%1000>.gopls.<i>"), which scanSlice is tuned
// by: ns/op is the time the loop is held. "wildcard-all" visits and
// matches scanSlice keys ("*.gopls.>"); "wildcard-few" visits as many and
// matches one in a thousand ("*.gopls.7"); "list-page" is the list
// handler's slice at its worst, a page of MaxListLimit backends still to
// fill, so every matched backend is also converted for the reply.
func BenchmarkScanSlice(b *testing.B) {
	const n = 1_000_000
	w := newHandleWorker(b)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range n {
		if _, err := w.coord.MarkActivity("dev-"+strconv.Itoa(i%1000)+".gopls."+strconv.Itoa(i), t0); err != nil {
			b.Fatal(err)
		}
	}
	for _, bc := range []struct {
		name, match string
		page        bool
	}{
		{"wildcard-all", "*.gopls.>", false},
		{"wildcard-few", "*.gopls.7", false},
		{"list-page", "*.gopls.>", true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			pat, err := ParsePattern(bc.match)
			if err != nil {
				b.Fatal(err)
			}
			page := make([]BackendInfo, 0, MaxListLimit)
			visit := func(coordinator.Backend) {}
			if bc.page {
				visit = func(bk coordinator.Backend) {
					if len(page) < MaxListLimit {
						page = append(page, info(bk))
					}
				}
			}
			s := newPatternScan(pat, visit)
			visited := 0
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				page = page[:0]
				done := s.step(w.coord, t0, scanSlice)
				visited += scanSlice
				if done {
					s = newPatternScan(pat, visit)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(visited), "ns/key")
		})
	}
}
