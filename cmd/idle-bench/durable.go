package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/store"
)

// durableTimely is one worker's events when Backends deadlines fall within
// SpanMS.
type durableTimely struct {
	Path     string `json:"path"`
	Backends int    `json:"backends"`
	// PerSecond is the events that arrived over the time from the first
	// deadline to the last arrival.
	PerSecond float64        `json:"events_per_second"`
	Lateness  latencySummary `json:"lateness"`
	// CaughtUpMS is the time from the last heartbeat's publish until the
	// store had stored every record they changed (see syncStore), and
	// CaughtUpEarly whether that was before the first deadline (durable
	// only): the events did not queue behind records.
	CaughtUpMS    float64 `json:"store_caught_up_ms,omitempty"`
	CaughtUpEarly bool    `json:"store_caught_up_before_first_deadline,omitempty"`
	// The worker's counters afterwards.
	StoreWrites   uint64 `json:"store_writes"`
	StoreFailures uint64 `json:"store_write_failures"`
	StoreFenced   uint64 `json:"store_fenced"`
	WorkerDropped uint64 `json:"worker_dropped"`
	PublishErrors uint64 `json:"publish_errors"`
}

// durableResult is the durable section: the default configuration (the
// store on one JetStream stream) beside the memory path, and the store's
// limit, in the same run.
type durableResult struct {
	Persistence string      `json:"persistence"`
	QuiesceRate int         `json:"quiesce_rate"`
	Limit       limitResult `json:"limit"`
	// Burst and Spread hold the memory worker, then the durable one.
	BurstMS  float64          `json:"burst_ms"`
	Burst    []durableTimely  `json:"burst"`
	SpreadMS float64          `json:"spread_ms"`
	Spread   []durableTimely  `json:"spread"`
	Register []registerResult `json:"registration"`
	Restart  *restartResult   `json:"restart,omitempty"`

	OtherCPUPercent float64 `json:"other_cpu_percent"`
}

// durablePersistence describes the durable worker's store.
var durablePersistence = fmt.Sprintf("the store as cmd/idle-worker runs it by default: one stream %s_<n> (fresh per measurement) on P.store.>, store.Open defaults (%d partitions); memory path: no Store (IDLE_PERSIST=off); both QuiesceRate 0 (unlimited)",
	store.DefaultStreamName, store.DefaultPartitions)

// startPathWorker starts a worker with the operator's policy and QuiesceRate
// 0: on a store opened with names when durable (returned too), in memory
// otherwise. The worker loads the store in Run and closes it when Run
// returns.
func startPathWorker(ctx context.Context, url string, cfg config, durable bool, names store.Config) (*runningWorker, *store.Store, error) {
	wc := bus.WorkerConfig{Policy: operatorPolicy(), QueueLength: cfg.QueueLength}
	if !durable {
		rw, err := startWorkerWith(url, wc, nil)
		return rw, nil, err
	}
	var st *store.Store
	rw, err := startWorkerWith(url, wc, func(nc *nats.Conn, wc *bus.WorkerConfig) error {
		var err error
		st, err = openStore(ctx, nc, names)
		wc.Store = st
		return err
	})
	return rw, st, err
}

// openStore opens the store of names on nc, as cmd/idle-worker does.
func openStore(ctx context.Context, nc *nats.Conn, names store.Config) (*store.Store, error) {
	octx, cancel := context.WithTimeout(ctx, waitBound)
	defer cancel()
	st, err := store.Open(octx, nc, bus.MustSubjects(bus.DefaultPrefix), names)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return st, nil
}

// pathName names the worker a measurement ran.
func pathName(durable bool) string {
	if durable {
		return "durable (JetStream)"
	}
	return "memory (IDLE_PERSIST=off)"
}

// measureDurable runs the durable section's parts that cfg.DurableParts
// names, in order of priority.
func measureDurable(ctx context.Context, url string, cfg config) (durableResult, error) {
	r := durableResult{Persistence: durablePersistence, BurstMS: ms(cfg.DurableBurst), SpreadMS: ms(cfg.DurableSpread)}
	var err error
	if cfg.durableRuns("limit") {
		if r.Limit, err = measureLimit(ctx, url, cfg.DurableBackends, cfg.DurableLimitRounds); err != nil {
			return r, fmt.Errorf("limit: %w", err)
		}
	}
	for _, part := range []struct {
		name string
		span time.Duration
		into *[]durableTimely
	}{{"burst", cfg.DurableBurst, &r.Burst}, {"spread", cfg.DurableSpread, &r.Spread}} {
		if !cfg.durableRuns(part.name) {
			continue
		}
		for _, durable := range []bool{false, true} {
			d, err := measurePathTimely(ctx, url, cfg, durable, part.span)
			if err != nil {
				return r, fmt.Errorf("%s, deadlines within %v: %w", pathName(durable), part.span, err)
			}
			*part.into = append(*part.into, d)
		}
	}
	if cfg.DurableRegister > 0 && cfg.durableRuns("register") {
		for _, durable := range []bool{false, true} {
			reg, rs, err := measureRegistration(ctx, url, cfg, durable)
			if err != nil {
				return r, fmt.Errorf("registration, %s: %w", pathName(durable), err)
			}
			r.Register = append(r.Register, reg)
			if rs != nil {
				r.Restart = rs
			}
		}
	}
	return r, nil
}

// measurePathTimely makes cfg.DurableBackends backends heartbeat once so
// that their deadlines fall within span, cfg.DurableLead after the start,
// on a memory or a durable worker (QuiesceRate 0), and stamps each event at
// a subscriber.
func measurePathTimely(ctx context.Context, url string, cfg config, durable bool, span time.Duration) (durableTimely, error) {
	n := cfg.DurableBackends
	d := durableTimely{Path: pathName(durable), Backends: n}
	subj := bus.MustSubjects(bus.DefaultPrefix)
	names := freshStore()
	defer removeStore(url, names)
	rw, st, err := startPathWorker(ctx, url, cfg, durable, names)
	if err != nil {
		return d, err
	}
	defer rw.stop()
	got := newArrivals(n)
	prefix := subj.Quiesce("dur.")
	rs, err := rawSubscribe(url, subj.Quiesce(">"), func(subject []byte, at time.Time) {
		i, ok := keyIndex(subject, prefix)
		got.record(i, ok, at)
	})
	if err != nil {
		return d, err
	}
	defer rs.Close()
	pnc, err := nats.Connect(url, nats.Name("idle-bench durable heartbeats"))
	if err != nil {
		return d, err
	}
	defer pnc.Close()
	subjects := make([]string, n)
	for i := range subjects {
		subjects[i] = subj.Activity("dur." + strconv.Itoa(i))
	}
	beats0 := rw.w.Stats().Heartbeats
	base := time.Now()
	deadlines, err := publishTimed(ctx, pnc, subjects, func(i int) time.Time {
		return base.Add(cfg.DurableLead + time.Duration(int64(span)*int64(i)/int64(n)))
	}, cfg.TimelyWindow, func() uint64 { return rw.w.Stats().Heartbeats - beats0 })
	if err != nil {
		return d, err
	}
	first, last := deadlines[0], deadlines[0]
	for _, dl := range deadlines {
		first, last = minTime(first, dl), maxTime(last, dl)
	}
	if st != nil {
		sent := time.Now()
		if err := syncStore(ctx, pnc, subj, st.Partitions(), "dur"); err != nil {
			return d, err
		}
		d.CaughtUpMS, d.CaughtUpEarly = ms(time.Since(sent)), time.Now().Before(first)
	}
	if err := got.wait(ctx, last.Add(waitBound)); err != nil {
		return d, err
	}
	late, missing := got.lateness(deadlines)
	d.Lateness = summarize(late)
	d.Lateness.Missing, d.Lateness.DeadlineSpanMS = missing, ms(last.Sub(first))
	got.mu.Lock()
	d.Lateness.Duplicates, d.Lateness.Unexpected = got.dups, got.unexpected
	var lastAt time.Time
	for _, at := range got.at {
		lastAt = maxTime(lastAt, at)
	}
	got.mu.Unlock()
	d.PerSecond = eventsPerSecond(d.Lateness.Count, lastAt.Sub(first))
	s := rw.w.Stats()
	d.StoreWrites, d.StoreFailures, d.StoreFenced = s.StoreWrites, s.StoreWriteFailures, s.StoreFenced
	d.WorkerDropped, d.PublishErrors = s.Dropped, s.PublishErrors
	return d, nil
}

// eventsPerSecond is n over d, 0 when d is not positive.
func eventsPerSecond(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}
