package main

import (
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/idle-worker/idle-worker/bus"
)

func TestSplitTakeover(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	kill := at(100)
	for _, tt := range []struct {
		name                       string
		arrived                    []time.Time // zero: none
		leaver                     []bool
		wantDue, wantOthers        []time.Duration
		wantDueMiss, wantOtherMiss int
		wantFirst, wantLast        time.Time
	}{
		{
			name:       "the leaver's after the kill are due, the rest are others",
			arrived:    []time.Time{at(150), at(120), at(130), at(90)},
			leaver:     []bool{true, false, true, true},
			wantDue:    []time.Duration{150 * time.Millisecond, 130 * time.Millisecond},
			wantOthers: []time.Duration{120 * time.Millisecond, 90 * time.Millisecond},
			wantFirst:  at(130), wantLast: at(150),
		},
		{
			name:          "missing ones count where they belong",
			arrived:       []time.Time{{}, {}, at(200)},
			leaver:        []bool{true, false, true},
			wantDue:       []time.Duration{200 * time.Millisecond},
			wantDueMiss:   1,
			wantOtherMiss: 1,
			wantFirst:     at(200), wantLast: at(200),
		},
		{
			name:      "an event at the kill is due",
			arrived:   []time.Time{at(100)},
			leaver:    []bool{true},
			wantDue:   []time.Duration{100 * time.Millisecond},
			wantFirst: at(100), wantLast: at(100),
		},
		{
			name:       "no leaver's backend: nothing due",
			arrived:    []time.Time{at(300)},
			leaver:     []bool{false},
			wantOthers: []time.Duration{300 * time.Millisecond},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			deadlines := make([]time.Time, len(tt.arrived))
			for i := range deadlines {
				deadlines[i] = t0
			}
			s := splitTakeover(tt.arrived, deadlines, func(i int) bool { return tt.leaver[i] }, kill, kill)
			wantCount := len(tt.wantDue) + tt.wantDueMiss
			if !slices.Equal(s.due, tt.wantDue) || !slices.Equal(s.others, tt.wantOthers) || s.dueCount != wantCount ||
				s.dueMissing != tt.wantDueMiss || s.othersMissing != tt.wantOtherMiss || !s.first.Equal(tt.wantFirst) || !s.last.Equal(tt.wantLast) {
				t.Errorf("got %+v; want due %v (%d missing), others %v (%d missing), first %v, last %v",
					s, tt.wantDue, tt.wantDueMiss, tt.wantOthers, tt.wantOtherMiss, tt.wantFirst, tt.wantLast)
			}
		})
	}
}

// TestSplitTakeoverOverdue: of the due backends, those whose deadline came
// before the claim are overdue, and the takeover caught up with the last
// of their events; one due after the claim is neither.
func TestSplitTakeoverOverdue(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	kill, claimed := at(0), at(1000)
	arrived := []time.Time{at(1100), at(1050), at(1500), {}, at(1200)}
	deadlines := []time.Time{at(100), at(900), at(1400), at(500), at(300)}
	leaver := []bool{true, true, true, true, false}
	s := splitTakeover(arrived, deadlines, func(i int) bool { return leaver[i] }, kill, claimed)
	if s.dueCount != 4 || s.overdue != 3 || !s.caughtUp.Equal(at(1100)) || s.dueMissing != 1 || !s.last.Equal(at(1500)) {
		t.Errorf("got %d due, %d overdue, caught up at %v, %d missing, last %v; want 4, 3 (one missing), %v, 1, %v",
			s.dueCount, s.overdue, s.caughtUp, s.dueMissing, s.last, at(1100), at(1500))
	}
}

func TestIDArrivals(t *testing.T) {
	event := func(key, id string) []byte {
		return bus.QuiesceEvent{ID: id, Key: key, Reason: "idle_timeout", At: time.Unix(1000, 0), Attempt: 1}.AppendJSON(nil)
	}
	t0 := time.Unix(2000, 0)
	a := newIDArrivals("hk.", 3)
	for i, body := range [][]byte{
		event("hk.0", "a"),
		event("hk.0", "a"), // a re-send
		event("hk.0", "b"), // a second id
		event("hk.9", "c"), // beyond the run
		event("other.1", "d"),
		[]byte("{"), // not an event
		event("hk.1", "e"),
	} {
		a.record(body, t0.Add(time.Duration(i)*time.Millisecond))
	}
	if a.got != 2 || a.resent != 1 || a.duplicates != 1 || a.unexpected != 3 {
		t.Errorf("got %d first events, %d re-sent, %d duplicates, %d unexpected; want 2, 1, 1, 3", a.got, a.resent, a.duplicates, a.unexpected)
	}
	if !a.at[0].Equal(t0) || a.id[0] != "a" || !a.at[1].Equal(t0.Add(6*time.Millisecond)) || !a.at[2].IsZero() {
		t.Errorf("arrivals %v, ids %q; want hk.0 at t0 with id a, hk.1 at t0+6ms, hk.2 none", a.at, a.id)
	}
	select {
	case <-a.all:
		t.Error("all closed with one backend's event missing")
	default:
	}
	a.record(event("hk.2", "f"), t0)
	select {
	case <-a.all:
	default:
		t.Error("all not closed once every backend's event arrived")
	}
}

func TestEvenParts(t *testing.T) {
	for _, tt := range []struct {
		i, n, parts int
		want        []int
	}{
		{0, 1, 4, []int{0, 1, 2, 3}},
		{0, 3, 8, []int{0, 3, 6}},
		{2, 3, 8, []int{2, 5}},
		{3, 4, 3, nil},
	} {
		if got := evenParts(tt.i, tt.n, tt.parts); !slices.Equal(got, tt.want) {
			t.Errorf("evenParts(%d, %d, %d) = %v; want %v", tt.i, tt.n, tt.parts, got, tt.want)
		}
	}
}

func TestCPUPerBeat(t *testing.T) {
	if p, us := cpuPerBeat(-1, 1, 100); p != -1 || us != -1 {
		t.Errorf("unknown load: got %v, %v; want -1, -1", p, us)
	}
	if p, us := cpuPerBeat(50, 1, 0); p != -1 || us != -1 {
		t.Errorf("nothing applied: got %v, %v; want -1, -1", p, us)
	}
	// 50% of the machine for 2 s is NumCPU seconds of CPU.
	p, us := cpuPerBeat(50, 2, 1_000_000)
	if want := float64(runtime.NumCPU()); p != 50 || us != want {
		t.Errorf("got %v%%, %v us; want 50%%, %v us", p, us, want)
	}
}

func TestRelative(t *testing.T) {
	for _, tt := range []struct {
		ms   float64
		want string
	}{{-100, "100ms before"}, {250.4, "250ms after"}, {0, "0s after"}} {
		if got := relative(tt.ms); got != tt.want {
			t.Errorf("relative(%v) = %q; want %q", tt.ms, got, tt.want)
		}
	}
}

// clusterFixture is a cluster section that meets every target.
func clusterFixture() clusterResult {
	takeover := func(mode takeoverMode, mapped bool) takeoverResult {
		return takeoverResult{Mode: mode.String(), Mapped: mapped, Backends: 30_000, Due: 10_000, FirstEventMS: 900,
			Lateness: latencySummary{Count: 10_000, P50MS: 800, P99MS: 1200, MaxMS: 1300}, Others: latencySummary{Count: 20_000}}
	}
	return clusterResult{
		Workers: 3, Partitions: 64, OwnerTimeoutMS: 1000,
		Takeovers: []takeoverResult{takeover(modeKill, false), takeover(modeHandOver, false), takeover(modeKill, true)},
		Limits:    []clusterLimit{{Best: rate{Consumed: 300}}, {Mapped: true, Best: rate{Consumed: 300}}},
		Ingest: []clusterIngestRate{
			{Workers: 1, Messages: 300, Received: []uint64{300}},
			{Workers: 3, Messages: 300, Received: []uint64{300, 300, 300}, Foreign: 600},
			{Workers: 1, Mapped: true, Messages: 300, Received: []uint64{300}},
			{Workers: 3, Mapped: true, Messages: 300, Received: []uint64{100, 90, 110}},
		},
	}
}

func TestClusterJudge(t *testing.T) {
	const (
		kill    = "kill -9 (connection closed) (30,000 backends): "
		handOff = "hand-over (SIGTERM: release, leave) (30,000 backends): "
		mapped  = "IDLE_MAPPED (no warm state) (30,000 backends): "
	)
	for _, tt := range []struct {
		name   string
		change func(*clusterResult)
		missed []string // what the targets missed contain, in order
	}{
		{"all met", func(*clusterResult) {}, nil},
		{"failover later than the owner timeout + 1 s", func(c *clusterResult) { c.Takeovers[0].Lateness.MaxMS = 2001 }, []string{kill + "the dead"}},
		{"a due backend missing", func(c *clusterResult) {
			c.Takeovers[0].Lateness.Count, c.Takeovers[0].Lateness.Missing = 9_999, 1
		}, []string{kill + "the dead", kill + "events"}},
		{"a hand-over event early", func(c *clusterResult) { c.Takeovers[1].Others.Early = 1 }, []string{handOff + "events"}},
		{"a second id after a mapped failover", func(c *clusterResult) { c.Takeovers[2].Lateness.Duplicates = 1 }, []string{mapped + "events"}},
		{"the mapped failover's lateness is not judged", func(c *clusterResult) { c.Takeovers[2].Lateness.MaxMS = 9000 }, nil},
		{"a fenced write", func(c *clusterResult) { c.Takeovers[0].StoreFenced = 1 }, []string{kill + "events"}},
		{"nothing due", func(c *clusterResult) { c.Takeovers[1].Due = 0 }, []string{handOff + "events"}},
		{"a mapped worker received another's heartbeat", func(c *clusterResult) { c.Ingest[3].Foreign = 1 }, []string{"each heartbeat received once"}},
		{"a mapped heartbeat received twice", func(c *clusterResult) { c.Ingest[3].Received[0] = 101 }, []string{"each heartbeat received once"}},
		{"a heartbeat dropped", func(c *clusterResult) { c.Ingest[1].Dropped = 1 }, []string{"dropped"}},
		{"a plain subscriber dropped", func(c *clusterResult) { c.Limits[1].Best.Dropped = 1 }, []string{"dropped"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := clusterFixture()
			tt.change(&c)
			var missed []string
			n := 0
			c.judge(func(name, _, _ string, met bool) {
				n++
				if !met {
					missed = append(missed, name)
				}
			})
			if n != 6 {
				t.Errorf("got %d targets; want 6", n)
			}
			ok := len(missed) == len(tt.missed)
			for i := 0; ok && i < len(missed); i++ {
				ok = strings.Contains(missed[i], tt.missed[i])
			}
			if !ok {
				t.Errorf("missed %q; want %q", missed, tt.missed)
			}
		})
	}
}
