package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/store"
)

// Sizes of the durable section's bare publisher: the worker's quiesce
// stream window (store.OpenQuiesceStream's PublishAsyncMaxPending) and the
// size of each event.
const (
	limitWindow    = 16384
	limitEventSize = 200
)

// limitResult is the store's limit: a bare async JetStream publisher
// storing events into a stream configured as the worker's.
type limitResult struct {
	Events int `json:"events"`
	Rounds int `json:"rounds"`
	// SeenMS is the best round's time from the first publish until a core
	// subscriber saw the last event; StoredMS until every acknowledgement
	// had arrived, in that round.
	SeenMS   float64 `json:"seen_ms"`
	StoredMS float64 `json:"stored_ms"`
	// PerSecond is Events / SeenMS.
	PerSecond float64 `json:"events_per_second"`
	// StreamMsgs is what the stream held after the best round (want
	// Events); Missing, Duplicates and AckErrors count the subscriber's
	// gaps, its repeats and failed acknowledgements over every round.
	StreamMsgs uint64    `json:"stream_msgs"`
	Missing    int       `json:"missing"`
	Duplicates int       `json:"duplicates"`
	AckErrors  uint64    `json:"ack_errors"`
	RoundsMS   []float64 `json:"rounds_seen_ms"`
}

// durableTimely is one worker's events when Backends deadlines fall within
// SpanMS.
type durableTimely struct {
	Path     string `json:"path"`
	Backends int    `json:"backends"`
	// PerSecond is the events that arrived over the time from the first
	// deadline to the last arrival.
	PerSecond float64        `json:"events_per_second"`
	Lateness  latencySummary `json:"lateness"`
	// RegistryBacklog is how many records were not yet stored at the first
	// deadline (durable only).
	RegistryBacklog int64  `json:"registry_backlog_at_first_deadline"`
	StreamFailures  uint64 `json:"stream_failures"`
	WorkerDropped   uint64 `json:"worker_dropped"`
	PublishErrors   uint64 `json:"publish_errors"`
}

// durableResult is the durable section: the default configuration
// (JetStream registry and quiesce stream) beside the memory path, and the
// store's limit, in the same run.
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
var durablePersistence = fmt.Sprintf("JetStream as cmd/idle-worker runs it by default: registry bucket %s_<n>, quiesce stream %s_<n> (a fresh pair per measurement), store.Open defaults; memory path: no Registry, no Publisher (IDLE_PERSIST=off); both QuiesceRate 0 (unlimited)",
	store.DefaultRegistryBucket, store.DefaultStreamName)

// startPathWorker starts a worker with the operator's policy and QuiesceRate
// 0: with store.Open's registry and quiesce stream under names when
// durable (returned too), in memory otherwise.
func startPathWorker(ctx context.Context, url string, cfg config, durable bool, names store.Config) (*runningWorker, *store.KVRegistry, error) {
	wc := bus.WorkerConfig{Policy: operatorPolicy(), QueueLength: cfg.QueueLength}
	if !durable {
		rw, err := startWorkerWith(url, wc, nil)
		return rw, nil, err
	}
	var reg *store.KVRegistry
	rw, err := startWorkerWith(url, wc, func(nc *nats.Conn, wc *bus.WorkerConfig) error {
		octx, cancel := context.WithTimeout(ctx, waitBound)
		defer cancel()
		st, err := store.Open(octx, nc, bus.MustSubjects(bus.DefaultPrefix), names, nil)
		if err != nil {
			return fmt.Errorf("store: %w", err)
		}
		reg, wc.Registry, wc.Publisher = st.Registry, st.Registry, st.Stream
		return nil
	})
	return rw, reg, err
}

// pathName names the worker a measurement ran.
func pathName(durable bool) string {
	if durable {
		return "durable (JetStream)"
	}
	return "memory (IDLE_PERSIST=off)"
}

// measureDurable runs the durable section's parts in order of priority.
func measureDurable(ctx context.Context, url string, cfg config) (durableResult, error) {
	r := durableResult{Persistence: durablePersistence, BurstMS: ms(cfg.DurableBurst), SpreadMS: ms(cfg.DurableSpread)}
	var err error
	if r.Limit, err = measureLimit(ctx, url, cfg.DurableBackends, cfg.DurableLimitRounds); err != nil {
		return r, fmt.Errorf("limit: %w", err)
	}
	for _, part := range []struct {
		span time.Duration
		into *[]durableTimely
	}{{cfg.DurableBurst, &r.Burst}, {cfg.DurableSpread, &r.Spread}} {
		for _, durable := range []bool{false, true} {
			d, err := measurePathTimely(ctx, url, cfg, durable, part.span)
			if err != nil {
				return r, fmt.Errorf("%s, deadlines within %v: %w", pathName(durable), part.span, err)
			}
			*part.into = append(*part.into, d)
		}
	}
	if cfg.DurableRegister > 0 {
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

// measureLimit stores n events of limitEventSize bytes, each with a
// Nats-Msg-Id, on per-key subjects P.quiesce.lim.<i>, into a fresh stream
// created by store.OpenQuiesceStream (so configured exactly as the
// worker's), from a bare jetstream.PublishMsgAsync publisher with the
// worker's window, rounds times; the round whose last event a core
// subscriber saw soonest counts.
func measureLimit(ctx context.Context, url string, n, rounds int) (limitResult, error) {
	r := limitResult{Events: n, Rounds: rounds}
	for round := range rounds {
		seen, stored, msgs, err := limitRound(ctx, url, n, round, &r)
		if err != nil {
			return r, err
		}
		r.RoundsMS = append(r.RoundsMS, ms(seen))
		if r.SeenMS == 0 || ms(seen) < r.SeenMS {
			r.SeenMS, r.StoredMS, r.StreamMsgs = ms(seen), ms(stored), msgs
		}
	}
	if r.SeenMS > 0 {
		r.PerSecond = float64(n) / (r.SeenMS / 1000)
	}
	return r, nil
}

// limitRound is one round of measureLimit; it adds the subscriber's gaps
// and repeats and the failed acknowledgements to r.
func limitRound(ctx context.Context, url string, n, round int, r *limitResult) (seen, stored time.Duration, msgs uint64, err error) {
	names := freshStore()
	defer removeStore(url, names)
	subj := bus.MustSubjects(bus.DefaultPrefix)
	nc, err := nats.Connect(url, nats.Name("idle-bench limit publisher"))
	if err != nil {
		return 0, 0, 0, err
	}
	defer nc.Close()
	octx, cancel := context.WithTimeout(ctx, waitBound)
	defer cancel()
	qs, err := store.OpenQuiesceStream(octx, nc, subj, names.Stream, nil)
	if err != nil {
		return 0, 0, 0, err
	}
	if err := qs.Close(octx); err != nil { // the stream stays; only its publisher goes
		return 0, 0, 0, err
	}
	var ackErrs atomic.Uint64
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(limitWindow),
		jetstream.WithPublishAsyncTimeout(5*time.Second),
		jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *nats.Msg, error) { ackErrs.Add(1) }))
	if err != nil {
		return 0, 0, 0, err
	}
	got := newArrivals(n)
	prefix := subj.Quiesce("lim.")
	rs, err := rawSubscribe(url, subj.Quiesce(">"), func(subject []byte, at time.Time) {
		i, ok := keyIndex(subject, prefix)
		got.record(i, ok, at)
	})
	if err != nil {
		return 0, 0, 0, err
	}
	defer rs.Close()
	body := make([]byte, limitEventSize)
	for i := range body {
		body[i] = 'x'
	}
	idPrefix := "lim" + strconv.Itoa(round) + "." + nats.NewInbox()[len(nats.InboxPrefix):] + "."
	t0 := time.Now()
	for i := range n {
		m := &nats.Msg{Subject: prefix + strconv.Itoa(i), Data: body,
			Header: nats.Header{bus.HeaderMsgID: []string{idPrefix + strconv.Itoa(i)}}}
		if _, err := js.PublishMsgAsync(m, jetstream.WithStallWait(waitBound)); err != nil {
			return 0, 0, 0, fmt.Errorf("publish %d: %w", i, err)
		}
	}
	werr := got.wait(ctx, t0.Add(waitBound))
	select {
	case <-js.PublishAsyncComplete():
		stored = time.Since(t0)
	case <-time.After(waitBound):
		return 0, 0, 0, errors.New("acknowledgements not all in")
	}
	if werr != nil {
		return 0, 0, 0, werr
	}
	got.mu.Lock()
	var last time.Time
	for _, at := range got.at {
		last = maxTime(last, at)
	}
	missing := n - got.got
	r.Missing, r.Duplicates = r.Missing+missing, r.Duplicates+got.dups+got.unexpected
	got.mu.Unlock()
	seen = stored // when something never arrived, the acknowledgements bound it
	if missing == 0 {
		seen = last.Sub(t0)
	}
	r.AckErrors += ackErrs.Load()
	st, err := js.Stream(octx, names.Stream.Name)
	if err != nil {
		return 0, 0, 0, err
	}
	info, err := st.Info(octx)
	if err != nil {
		return 0, 0, 0, err
	}
	return seen, stored, info.State.Msgs, nil
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
	rw, reg, err := startPathWorker(ctx, url, cfg, durable, names)
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
	if reg != nil { // let the registry store the records first, while there is time
		for reg.Pending() > 0 && time.Until(first) > 10*time.Millisecond {
			time.Sleep(time.Millisecond)
		}
		d.RegistryBacklog = int64(reg.Pending())
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
	d.StreamFailures, d.WorkerDropped, d.PublishErrors = s.StreamFailures, s.Dropped, s.PublishErrors
	return d, nil
}

// eventsPerSecond is n over d, 0 when d is not positive.
func eventsPerSecond(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}
