package main

import (
	"strings"
	"testing"
	"time"
)

func TestSampleStride(t *testing.T) {
	for _, tt := range []struct {
		name       string
		n, samples int
		want       int
	}{
		{"even", 200_000, 200, 1000},
		{"more samples than keys", 10, 200, 1},
		{"rounds down", 1999, 200, 9},
		{"no samples", 100, 0, 101},
		{"no keys", 0, 10, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := sampleStride(tt.n, tt.samples); got != tt.want {
				t.Errorf("sampleStride(%d, %d) = %d; want %d", tt.n, tt.samples, got, tt.want)
			}
		})
	}
}

func TestEventsPerSecond(t *testing.T) {
	for _, tt := range []struct {
		name string
		n    int
		d    time.Duration
		want float64
	}{
		{"half a second", 50_000, 500 * time.Millisecond, 100_000},
		{"zero time", 10, 0, 0},
		{"negative time", 10, -time.Second, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := eventsPerSecond(tt.n, tt.d); got != tt.want {
				t.Errorf("eventsPerSecond(%d, %v) = %v; want %v", tt.n, tt.d, got, tt.want)
			}
		})
	}
}

func TestMsList(t *testing.T) {
	for _, tt := range []struct {
		in   []float64
		want string
	}{{nil, ""}, {[]float64{1.4}, "1"}, {[]float64{484.2, 371.6, 345}, "484, 372, 345"}} {
		if got := msList(tt.in); got != tt.want {
			t.Errorf("msList(%v) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

// durableFixture returns a durable section whose every target is met:
// limit 100k events/s (so 500 ms for 50k), the durable burst at 90k/s with
// p99 600 ms, the spread's p99 10 ms against the memory path's 5 ms.
func durableFixture() durableResult {
	timely := func(perSecond, p99, maxMS float64) durableTimely {
		return durableTimely{Backends: 50_000, PerSecond: perSecond, Lateness: latencySummary{Count: 50_000, P99MS: p99, MaxMS: maxMS}}
	}
	return durableResult{
		Limit:    limitResult{Events: 50_000, PerSecond: 100_000},
		Burst:    []durableTimely{timely(400_000, 30, 35), timely(90_000, 600, 650)},
		Spread:   []durableTimely{timely(50_000, 5, 9), timely(50_000, 10, 40)},
		Register: []registerResult{{Backends: 1000, PerSecond: 100_000}, {Backends: 1000, PerSecond: 90_000, Samples: 10, Durable: latencySummary{Count: 10, P99MS: 20}}},
		Restart:  &restartResult{Backends: 1000, ReadyMS: 100, Restored: 1000},
	}
}

func TestDurableJudge(t *testing.T) {
	for _, tt := range []struct {
		name   string
		change func(*durableResult)
		missed string // the one target missed, "" for none
	}{
		{"all met", func(*durableResult) {}, ""},
		{"burst slower than 0.8x the limit", func(d *durableResult) { d.Burst[1].PerSecond = 79_000 }, "events/s durable / limit"},
		{"burst p99 beyond 1.25x the limit's time", func(d *durableResult) { d.Burst[1].Lateness.P99MS = 626 }, "burst (50,000 due within 0 ms): durable p99"},
		{"burst max beyond p99 + 100 ms", func(d *durableResult) { d.Burst[1].Lateness.MaxMS = 701 }, "burst (50,000 due within 0 ms): durable max"},
		{"burst event missing", func(d *durableResult) { d.Burst[1].Lateness.Missing = 1 }, "burst (50,000 due within 0 ms): durable events"},
		{"spread p99 beyond 1.5x memory + 5 ms", func(d *durableResult) { d.Spread[1].Lateness.P99MS = 12.6 }, "spread (50,000 due within 0 ms): durable p99"},
		{"spread max beyond 50 ms", func(d *durableResult) { d.Spread[1].Lateness.MaxMS = 51 }, "spread (50,000 due within 0 ms): durable max"},
		{"registration slower than 0.8x memory", func(d *durableResult) { d.Register[1].PerSecond = 79_000 }, "answered/s durable / memory"},
		{"answered to durable p99 beyond 50 ms", func(d *durableResult) { d.Register[1].Durable.P99MS = 51 }, "answered -> durable p99"},
		{"a sample never durable", func(d *durableResult) { d.Register[1].Durable.Missing = 1 }, "answered -> durable p99"},
		{"restart slower than 2 s", func(d *durableResult) { d.Restart.ReadyMS = 2001 }, "restart (1,000 backends): ready"},
		{"restart restored fewer", func(d *durableResult) { d.Restart.Restored = 999 }, "restored"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := durableFixture()
			tt.change(&d)
			var missed []string
			n := 0
			d.judge(func(name, _, _ string, met bool) {
				n++
				if !met {
					missed = append(missed, name)
				}
			})
			if n != 11 {
				t.Errorf("got %d targets; want 11", n)
			}
			switch {
			case tt.missed == "" && len(missed) > 0:
				t.Errorf("missed %q; want every target met", missed)
			case tt.missed != "" && (len(missed) != 1 || !strings.Contains(missed[0], tt.missed)):
				t.Errorf("missed %q; want only one containing %q", missed, tt.missed)
			}
		})
	}
}
