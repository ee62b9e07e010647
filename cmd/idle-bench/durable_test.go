package main

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/partition"
)

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
// p99 600 ms, the spread's p99 10 ms against the memory path's 5 ms, the
// durable registration at 0.9x the memory path's rate with replies 40 ms
// slower at p99, and every registered backend restored.
func durableFixture() durableResult {
	timely := func(perSecond, p99, maxMS float64) durableTimely {
		return durableTimely{Backends: 50_000, PerSecond: perSecond, Lateness: latencySummary{Count: 50_000, P99MS: p99, MaxMS: maxMS}}
	}
	return durableResult{
		Limit:  limitResult{Events: 50_000, Rounds: 1, PerSecond: 100_000},
		Burst:  []durableTimely{timely(400_000, 30, 35), timely(90_000, 600, 650)},
		Spread: []durableTimely{timely(50_000, 5, 9), timely(50_000, 10, 40)},
		Register: []registerResult{
			{Backends: 1000, PerSecond: 100_000, Reply: latencySummary{Count: 1000, P99MS: 20}},
			{Backends: 1000, PerSecond: 90_000, Reply: latencySummary{Count: 1000, P99MS: 60}},
		},
		Restart: &restartResult{Backends: 1000, ReadyMS: 100, Restored: 1000},
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
		{"a registration refused", func(d *durableResult) { d.Register[1].Refused = 1 }, "answered/s durable / memory"},
		{"durable reply p99 over memory's + 50 ms", func(d *durableResult) { d.Register[1].Reply.P99MS = 70.1 }, "reply p99, durable - memory"},
		{"a durable reply missing", func(d *durableResult) { d.Register[1].Reply.Count = 999 }, "reply p99, durable - memory"},
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

// TestDurableJudgeWithoutLimit: when -durable-parts leaves the limit out,
// the burst's two targets relative to it are not judged; the rest are.
func TestDurableJudgeWithoutLimit(t *testing.T) {
	d := durableFixture()
	d.Limit = limitResult{}
	var names, missed []string
	d.judge(func(name, _, _ string, met bool) {
		names = append(names, name)
		if !met {
			missed = append(missed, name)
		}
	})
	if len(names) != 9 || len(missed) > 0 {
		t.Errorf("got targets %q, missed %q; want 9, all met", names, missed)
	}
	for _, name := range names {
		if strings.Contains(name, "limit") || strings.Contains(name, "burst") && strings.Contains(name, "p99") {
			t.Errorf("judged %q without a limit", name)
		}
	}
}

func TestSyncKeys(t *testing.T) {
	for _, parts := range []int{1, 7, 64} {
		t.Run(strconv.Itoa(parts), func(t *testing.T) {
			keys := syncKeys("t", parts)
			if len(keys) != parts {
				t.Fatalf("got %d keys; want %d", len(keys), parts)
			}
			for p, k := range keys {
				if got := partition.Of(k, parts); k == "" || got != p {
					t.Errorf("key %d is %q, of partition %d; want a key of partition %d", p, k, got, p)
				}
			}
		})
	}
}

func TestLimitEvents(t *testing.T) {
	subj := bus.MustSubjects(bus.DefaultPrefix)
	const n, parts = 200, 64
	msgs, body := limitEvents(subj, n, parts)
	if len(msgs) != n || body <= 0 {
		t.Fatalf("got %d events of %v bytes; want %d", len(msgs), body, n)
	}
	ids := map[string]bool{}
	for i, m := range msgs {
		key := "dur." + strconv.Itoa(i)
		want := subj.Prefix() + ".store.qout." + strconv.Itoa(partition.Of(key, parts)) + "." + key
		if m.Subject != want {
			t.Errorf("event %d on %q; want %q", i, m.Subject, want)
		}
		ev, err := bus.ParseQuiesceEvent(m.Data)
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		id := m.Header.Get(bus.HeaderMsgID)
		if ev.Key != key || ev.ID != id || ev.Attempt != 1 || ids[id] {
			t.Errorf("event %d: got %+v with Nats-Msg-Id %q; want key %q, that id, attempt 1, ids unique", i, ev, id, key)
		}
		ids[id] = true
	}
}
