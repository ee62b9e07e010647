package coordinator_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/idle-worker/idle-worker/coordinator"
)

// listKeys returns n keys shaped like the README's, spread over 1000
// instances: "dev-<i%1000>.gopls.<i>".
func listKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "dev-" + strconv.Itoa(i%1000) + ".gopls." + strconv.Itoa(i)
	}
	return keys
}

// BenchmarkList measures one List of at most 1000 backends among n whose
// keys have the prefix "dev-7.gopls." (n/1000 of them match): a walk of
// every key, as the worker did on its loop before it scanned in slices.
func BenchmarkList(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(sizeName(n), func(b *testing.B) {
			c := fill(b, listKeys(n), never)
			match := func(k string) bool { return strings.HasPrefix(k, "dev-7.gopls.") }
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, total := c.List(benchT0, match, 1000); total != n/1000 {
					b.Fatalf("got total %d; want %d", total, n/1000)
				}
			}
		})
	}
}

// BenchmarkScan measures Scan among n backends: "prefix" visits the n/1000
// keys of "dev-7.gopls." (the index's answer to the List above); "slice"
// visits at most 4096 keys from a resumption point, one slice of a
// wildcard scan, and reports ns/key.
func BenchmarkScan(b *testing.B) {
	const slice = 4096
	for _, n := range benchSizes {
		keys := listKeys(n)
		b.Run(sizeName(n)+"/prefix", func(b *testing.B) {
			c := fill(b, keys, never)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				seen := 0
				if _, more := c.Scan(benchT0, "", "dev-7.gopls.", 0, func(coordinator.Backend) bool { seen++; return true }); more || seen != n/1000 {
					b.Fatalf("got %d keys, more %v; want %d, false", seen, more, n/1000)
				}
			}
		})
		b.Run(sizeName(n)+"/slice", func(b *testing.B) {
			c := fill(b, keys, never)
			after, seen := "", 0
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				next, more := c.Scan(benchT0, after, "", slice, func(coordinator.Backend) bool { seen++; return true })
				if after = next; !more {
					after = ""
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(seen), "ns/key")
		})
	}
}
