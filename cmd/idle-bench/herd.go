package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/store"
)

// herdProbeKeys is how many backends the herd section's prober heartbeats
// in turn; herdProbeBody is its heartbeat, an hour, so none falls due.
const (
	herdProbeKeys = 1000
	herdProbeBody = `{"idle_timeout_ms":3600000}`
)

// herdGuard ends the baseline this long before the herd's first deadline.
const herdGuard = 10 * time.Millisecond

// operatorPolicy is the coordinator policy cmd/idle-worker runs with its
// defaults: IDLE_DEFAULT_TIMEOUT 30s, IDLE_MAX_BACKENDS 1000000,
// IDLE_QUIESCE_RETRY 30s, IDLE_QUIESCE_RETRY_MAX 10m, IDLE_FORGET_AFTER 1h.
func operatorPolicy() coordinator.Policy {
	return coordinator.Policy{
		DefaultIdleTimeout: 30 * time.Second,
		MaxBackends:        1_000_000,
		RetryInterval:      30 * time.Second,
		RetryMaxInterval:   10 * time.Minute,
		ForgetAfter:        time.Hour,
	}
}

// herdResult is the herd section: many backends due at once, paced by
// WorkerConfig.QuiesceRate, with the default JetStream persistence.
type herdResult struct {
	Backends    int `json:"backends"`
	QuiesceRate int `json:"quiesce_rate"`
	// Burst is the pacer's bucket, a tenth of a second's worth: that many
	// events may leave at once.
	Burst       int    `json:"burst"`
	Persistence string `json:"persistence"`
	// PublishSeconds is the time to send the herd's heartbeats.
	PublishSeconds float64 `json:"publish_seconds"`
	// CaughtUpMS is the time from the end of the herd's heartbeats until
	// the store had stored every record they changed (see syncStore), and
	// CaughtUpEarly whether that was before the baseline began.
	CaughtUpMS    float64 `json:"store_caught_up_ms"`
	CaughtUpEarly bool    `json:"store_caught_up_before_baseline"`
	// Lateness is arrival - deadline of each event (deadline: heartbeat
	// publish time + its timeout, on this program's clock); it grows
	// through the herd by design, to about (Backends-Burst)/QuiesceRate.
	Lateness latencySummary `json:"lateness"`
	// SpreadMS is the time from the first event's arrival to the last's;
	// ExpectedSpreadMS is (Backends-Burst)/QuiesceRate.
	SpreadMS         float64 `json:"emission_spread_ms"`
	ExpectedSpreadMS float64 `json:"expected_spread_ms"`
	// PeakPerSecond is the most events that arrived within any one second.
	PeakPerSecond int `json:"peak_events_per_second"`
	// HeldBackMax is the largest Stats().HeldBack seen during the herd.
	HeldBackMax int64 `json:"held_back_max"`
	// Baseline is the prober without a herd, just before it; During is
	// the same prober from the first deadline to the last event. Each
	// sends a heartbeat request every IntervalMS.
	IntervalMS      float64    `json:"heartbeat_interval_ms"`
	BaselineSeconds float64    `json:"baseline_seconds"`
	Baseline        rttSummary `json:"baseline_heartbeat_rtt"`
	BaselineLost    int        `json:"baseline_heartbeats_lost"`
	During          rttSummary `json:"herd_heartbeat_rtt"`
	DuringLost      int        `json:"herd_heartbeats_lost"`
	// The worker's counters afterwards.
	StoreWrites   uint64 `json:"store_writes"`
	StoreFailures uint64 `json:"store_write_failures"`
	StoreFenced   uint64 `json:"store_fenced"`
	Redeliveries  uint64 `json:"redeliveries"`
	WorkerDropped uint64 `json:"worker_dropped"`
	PublishErrors uint64 `json:"publish_errors"`
	// CPU share of the machine (both cores: 100) this process (worker,
	// server, subscriber, prober) used during the baseline and the herd.
	BaselineCPUPercent float64 `json:"baseline_process_cpu_percent"`
	HerdCPUPercent     float64 `json:"herd_process_cpu_percent"`
	// GC cycles and their stop-the-world pauses during the herd.
	GCCycles        uint32  `json:"gc_cycles"`
	GCPauseMS       float64 `json:"gc_pause_ms"`
	OtherCPUPercent float64 `json:"other_cpu_percent"`
}

// waitFor polls cond every millisecond until it holds, failing after
// waitBound or when ctx is done.
func waitFor(ctx context.Context, what string, cond func() bool) error {
	for deadline := time.Now().Add(waitBound); !cond(); {
		if err := ctx.Err(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not within %v", what, waitBound)
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// measureHerd runs a worker as operators do by default (the store on one
// JetStream stream, store.Open's defaults, the default policy) with
// QuiesceRate cfg.HerdRate. A prober heartbeats herdProbeKeys
// backends every cfg.AdminInterval: first for cfg.HerdBaseline with no
// herd (the baseline), then while cfg.HerdBackends backends fall due
// together and leave at the rate. Each of them heartbeated once, asking for
// the time left until one common deadline (rounded up to a whole ms), so
// all deadlines fall within a millisecond however long the heartbeats took
// to send. A subscriber stamps each event.
func measureHerd(ctx context.Context, url string, cfg config) (herdResult, error) {
	n := cfg.HerdBackends
	r := herdResult{Backends: n, QuiesceRate: cfg.HerdRate, Burst: max(cfg.HerdRate/10, 1), IntervalMS: ms(cfg.AdminInterval),
		Persistence: fmt.Sprintf("JetStream (IDLE_PERSIST=auto): the store on stream %s_<n> (a fresh name) on file storage, store.Open defaults (%d partitions)",
			store.DefaultStreamName, store.DefaultPartitions)}
	if n > r.Burst {
		r.ExpectedSpreadMS = 1000 * float64(n-r.Burst) / float64(cfg.HerdRate)
	}
	subj := bus.MustSubjects(bus.DefaultPrefix)
	var st *store.Store
	names := freshStore()
	defer removeStore(url, names)
	rw, err := startWorkerWith(url, bus.WorkerConfig{Policy: operatorPolicy(), QuiesceRate: cfg.HerdRate, QueueLength: cfg.QueueLength},
		func(nc *nats.Conn, wc *bus.WorkerConfig) error {
			var err error
			st, err = openStore(ctx, nc, names)
			wc.Store = st
			return err
		})
	if err != nil {
		return r, err
	}
	defer rw.stop()

	got := newArrivals(n)
	prefix := subj.Quiesce("herd.")
	rs, err := rawSubscribe(url, subj.Quiesce(">"), func(subject []byte, at time.Time) {
		i, ok := keyIndex(subject, prefix)
		got.record(i, ok, at)
	})
	if err != nil {
		return r, err
	}
	defer rs.Close()
	pnc, err := nats.Connect(url, nats.Name("idle-bench herd heartbeats"))
	if err != nil {
		return r, err
	}
	defer pnc.Close()

	// The prober's backends, tracked and stored before anything is
	// measured: the worker answers each first heartbeat once its record is
	// stored.
	probe := make([]string, herdProbeKeys)
	for i := range probe {
		probe[i] = subj.Activity("probe." + strconv.Itoa(i))
	}
	if refused, err := requestAll(ctx, pnc, probe, []byte(herdProbeBody)); err != nil {
		return r, fmt.Errorf("probe backends: %w", err)
	} else if refused > 0 {
		return r, fmt.Errorf("probe backends: %d of %d heartbeats refused", refused, herdProbeKeys)
	}
	if err := waitFor(ctx, "probe backends tracked", func() bool { return rw.w.Stats().Running == herdProbeKeys }); err != nil {
		return r, err
	}

	// The herd: every deadline at target, rounded up to a whole ms.
	subjects := make([]string, n)
	for i := range subjects {
		subjects[i] = subj.Activity("herd." + strconv.Itoa(i))
	}
	beats0 := rw.w.Stats().Heartbeats
	base := time.Now()
	target := base.Add(cfg.HerdLead + cfg.HerdBaseline)
	deadlines, err := publishTimed(ctx, pnc, subjects, func(int) time.Time { return target },
		cfg.TimelyWindow, func() uint64 { return rw.w.Stats().Heartbeats - beats0 })
	if err != nil {
		return r, err
	}
	r.PublishSeconds = time.Since(base).Seconds()
	first, last := deadlines[0], deadlines[0]
	for _, dl := range deadlines {
		first, last = minTime(first, dl), maxTime(last, dl)
	}
	r.Lateness.DeadlineSpanMS = ms(last.Sub(first))

	// The baseline, once the store has stored the herd's records (later
	// than planned if that took longer than the lead), until just before
	// the first deadline.
	baselineStart := first.Add(-cfg.HerdBaseline)
	sent := time.Now()
	if err := syncStore(ctx, pnc, subj, st.Partitions(), "herd"); err != nil {
		return r, err
	}
	r.CaughtUpMS, r.CaughtUpEarly = ms(time.Since(sent)), time.Now().Before(baselineStart)
	time.Sleep(time.Until(baselineStart))
	b0, load := time.Now(), sampleCPU()
	base0, err := probeFor(ctx, pnc, probe, []byte(herdProbeBody), cfg.AdminInterval, time.Until(first.Add(-herdGuard)))
	if err != nil {
		return r, err
	}
	r.BaselineCPUPercent = selfLoad(load, sampleCPU())
	r.BaselineSeconds = time.Since(b0).Seconds()
	r.Baseline, r.BaselineLost = summarizeRTT(base0.rtt), base0.lost

	// The herd, probed the same way, watching the held-back gauge.
	time.Sleep(time.Until(first))
	var gc0, gc1 runtime.MemStats
	runtime.ReadMemStats(&gc0)
	load = sampleCPU()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			r.HeldBackMax = max(r.HeldBackMax, rw.w.Stats().HeldBack)
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	})
	var during heartbeatProbe
	var probeErr error
	wg.Go(func() {
		during, probeErr = probeHeartbeats(ctx, pnc, probe, []byte(herdProbeBody), cfg.AdminInterval, stop)
	})
	bound := last.Add(2*time.Duration(r.ExpectedSpreadMS*float64(time.Millisecond)) + waitBound)
	waitErr := got.wait(ctx, bound)
	close(stop)
	wg.Wait()
	r.HerdCPUPercent = selfLoad(load, sampleCPU())
	runtime.ReadMemStats(&gc1)
	r.GCCycles, r.GCPauseMS = gc1.NumGC-gc0.NumGC, ms(time.Duration(gc1.PauseTotalNs-gc0.PauseTotalNs))
	if err := errors.Join(waitErr, probeErr); err != nil {
		return r, err
	}
	r.During, r.DuringLost = summarizeRTT(during.rtt), during.lost

	late, missing := got.lateness(deadlines)
	span := r.Lateness.DeadlineSpanMS
	r.Lateness = summarize(late)
	r.Lateness.Missing, r.Lateness.DeadlineSpanMS = missing, span
	got.mu.Lock()
	r.Lateness.Duplicates, r.Lateness.Unexpected = got.dups, got.unexpected
	arrived := make([]time.Time, 0, got.got)
	for _, at := range got.at {
		if !at.IsZero() {
			arrived = append(arrived, at)
		}
	}
	got.mu.Unlock()
	r.SpreadMS, r.PeakPerSecond = arrivalSpread(arrived)
	s := rw.w.Stats()
	r.StoreWrites, r.StoreFailures, r.StoreFenced, r.Redeliveries = s.StoreWrites, s.StoreWriteFailures, s.StoreFenced, s.Redeliveries
	r.WorkerDropped, r.PublishErrors = s.Dropped, s.PublishErrors
	return r, nil
}

// arrivalSpread sorts arrived and returns the time from the first to the
// last, in ms, and the most arrivals within any one second.
func arrivalSpread(arrived []time.Time) (spreadMS float64, peak int) {
	if len(arrived) == 0 {
		return 0, 0
	}
	slices.SortFunc(arrived, func(a, b time.Time) int { return a.Compare(b) })
	for i, j := 0, 0; j < len(arrived); j++ {
		for arrived[j].Sub(arrived[i]) >= time.Second {
			i++
		}
		peak = max(peak, j-i+1)
	}
	return ms(arrived[len(arrived)-1].Sub(arrived[0])), peak
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
