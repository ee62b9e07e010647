package coordinator_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/idle-worker/idle-worker/coordinator"
)

var benchSizes = []int{1_000, 100_000, 1_000_000}

var benchT0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// never is an idle timeout no benchmark reaches.
const never = 10 * 365 * 24 * time.Hour

func benchKeys(prefix string, n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = prefix + strconv.Itoa(i)
	}
	return keys
}

// fill tracks every key, key i active at t0+i ns, with timeout.
func fill(b *testing.B, keys []string, timeout time.Duration) *coordinator.Coordinator {
	b.Helper()
	c := coordinator.New(coordinator.Policy{DefaultIdleTimeout: timeout})
	for i, k := range keys {
		if _, err := c.MarkActivity(k, benchT0.Add(time.Duration(i))); err != nil {
			b.Fatal(err)
		}
	}
	return c
}

func sizeName(n int) string { return "n=" + strconv.Itoa(n) }

// BenchmarkMarkActivity measures a heartbeat: a refresh of a tracked,
// running backend, later than its last activity.
func BenchmarkMarkActivity(b *testing.B) {
	for _, n := range benchSizes {
		keys := benchKeys("svc.backend.", n)
		b.Run(sizeName(n), func(b *testing.B) {
			c := fill(b, keys, time.Hour)
			base := benchT0.Add(time.Second)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := c.MarkActivity(keys[i%n], base.Add(time.Duration(i))); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkMarkActivityNew measures the first activity of a key among n
// tracked ones. The new keys are removed, off the clock, every len(extra)
// operations so the population stays between n and n+len(extra).
func BenchmarkMarkActivityNew(b *testing.B) {
	for _, n := range benchSizes {
		keys := benchKeys("svc.backend.", n)
		extra := benchKeys("svc.new.", min(n, 10_000))
		b.Run(sizeName(n), func(b *testing.B) {
			c := fill(b, keys, time.Hour)
			base := benchT0.Add(time.Second)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				j := i % len(extra)
				if j == 0 && i > 0 {
					b.StopTimer()
					for _, k := range extra {
						c.Remove(k)
					}
					b.StartTimer()
				}
				ch, err := c.MarkActivity(extra[j], base.Add(time.Duration(i)))
				if err != nil || ch != coordinator.Added {
					b.Fatalf("got %03b, %v; want Added", ch, err)
				}
			}
		})
	}
}

// BenchmarkCollectDue measures one CollectDue call that finds k backends due
// among n running ones; ns/due is the cost per returned backend. The hot keys
// are armed in batches off the clock, each round with its own deadline, and
// at most half the backends are hot, so the index holds n/2..n entries.
func BenchmarkCollectDue(b *testing.B) {
	for _, n := range benchSizes {
		keys := benchKeys("svc.backend.", n)
		for _, k := range []int{1, 100} {
			b.Run(sizeName(n)+"/k="+strconv.Itoa(k), func(b *testing.B) {
				rounds := max(1, n/2/k)
				hot := keys[:rounds*k]
				c := fill(b, keys, never)
				base := benchT0.Add(time.Second)
				arm := func() {
					for r := range rounds {
						for _, key := range hot[r*k : (r+1)*k] {
							if _, err := c.MarkActivityWithTimeout(key, base, time.Duration(r+1)*time.Millisecond); err != nil {
								b.Fatal(err)
							}
						}
					}
				}
				arm()
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					r := i % rounds
					if r == 0 && i > 0 {
						b.StopTimer()
						base = base.Add(time.Duration(rounds+1) * time.Millisecond)
						arm()
						b.StartTimer()
					}
					if got := c.CollectDue(base.Add(time.Duration(r+1) * time.Millisecond)); len(got) != k {
						b.Fatalf("round %d: got %d due; want %d", r, len(got), k)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*k), "ns/due")
			})
		}
	}
}

// BenchmarkNextDeadline measures NextDeadline when the earliest deadline is
// already exact ("fresh"), and after the earliest backend has just sent a
// heartbeat, so its stale heap key must be fixed first ("refreshed"; the
// heartbeat, an O(1) store, is included).
func BenchmarkNextDeadline(b *testing.B) {
	for _, n := range benchSizes {
		keys := benchKeys("svc.backend.", n)
		b.Run(sizeName(n)+"/fresh", func(b *testing.B) {
			c := fill(b, keys, time.Hour)
			want := benchT0.Add(time.Hour)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if dl, ok := c.NextDeadline(); !ok || !dl.Equal(want) {
					b.Fatalf("got %v, %v; want %v", dl, ok, want)
				}
			}
		})
		b.Run(sizeName(n)+"/refreshed", func(b *testing.B) {
			c := fill(b, keys, time.Hour)
			// Keys are refreshed round-robin at ever later times, so the
			// refreshed key is always the one with the earliest deadline.
			base := benchT0.Add(time.Duration(n))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				c.MarkActivity(keys[i%n], base.Add(time.Duration(i)))
				if _, ok := c.NextDeadline(); !ok {
					b.Fatal("got no deadline; want one")
				}
			}
		})
	}
}
