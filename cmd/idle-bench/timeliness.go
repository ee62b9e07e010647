package main

import (
	"context"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
)

// arrivals records when each of n numbered events first arrived.
type arrivals struct {
	mu         sync.Mutex
	at         []time.Time
	got, dups  int
	unexpected int
	all        chan struct{}
}

func newArrivals(n int) *arrivals {
	return &arrivals{at: make([]time.Time, n), all: make(chan struct{})}
}

// keyIndex returns i for a key (or subject) prefix+i.
func keyIndex[T string | []byte](key T, prefix string) (int, bool) {
	if len(key) <= len(prefix) || len(key)-len(prefix) > 9 {
		return 0, false
	}
	for j := range len(prefix) {
		if key[j] != prefix[j] {
			return 0, false
		}
	}
	i := 0
	for j := len(prefix); j < len(key); j++ {
		c := key[j]
		if c < '0' || c > '9' {
			return 0, false
		}
		i = i*10 + int(c-'0')
	}
	return i, true
}

// record notes that event i arrived at now; ok false counts an unexpected
// event.
func (a *arrivals) record(i int, ok bool, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case !ok || i >= len(a.at):
		a.unexpected++
	case !a.at[i].IsZero():
		a.dups++
	default:
		a.at[i] = now
		a.got++
		if a.got == len(a.at) {
			close(a.all)
		}
	}
}

// wait waits until every event arrived, until the bound, or ctx is done.
func (a *arrivals) wait(ctx context.Context, until time.Time) error {
	return waitClosed(ctx, a.all, until)
}

// waitClosed waits until all is closed or until passes (nil either way),
// or ctx is done (its error).
func waitClosed(ctx context.Context, all <-chan struct{}, until time.Time) error {
	t := time.NewTimer(time.Until(until))
	defer t.Stop()
	select {
	case <-all:
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// lateness returns arrival - deadline for every event that arrived, and
// how many did not.
func (a *arrivals) lateness(deadlines []time.Time) (late []time.Duration, missing int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	late = make([]time.Duration, 0, len(deadlines))
	for i, dl := range deadlines {
		if !a.at[i].IsZero() {
			late = append(late, a.at[i].Sub(dl))
		}
	}
	return late, len(deadlines) - len(late)
}

// span returns the time from the earliest deadline to the latest.
func span(deadlines []time.Time) time.Duration {
	var first, last time.Time
	for _, dl := range deadlines {
		if first.IsZero() || dl.Before(first) {
			first = dl
		}
		if dl.After(last) {
			last = dl
		}
	}
	return last.Sub(first)
}

// timelyRound is the raw outcome of one timeliness round.
type timelyRound struct {
	late                   []time.Duration
	recv, fire, deliver    []time.Duration
	missing, dups, unexp   int
	span                   time.Duration
	publishSeconds         float64
	workerDrop, subscrDrop uint64
	probe                  []time.Duration
	gcCycles               uint32
	gcPause                time.Duration
}

// probeTimer arms a timer for every period until stop is closed and
// returns how late each one was read, by the same measure the worker uses
// (its clock read after the timer fired).
func probeTimer(every time.Duration, stop <-chan struct{}) []time.Duration {
	var late []time.Duration
	t := time.NewTimer(every)
	defer t.Stop()
	target := time.Now().Add(every)
	for {
		select {
		case <-stop:
			return late
		case <-t.C:
			now := time.Now()
			late = append(late, now.Sub(target))
			target = now.Add(every)
			t.Reset(every)
		}
	}
}

// measureTimeliness runs cfg.TimelyRounds rounds and pools their events.
func measureTimeliness(ctx context.Context, url string, cfg config) (timelinessResult, error) {
	r := timelinessResult{Backends: cfg.Timely, Rounds: cfg.TimelyRounds, SpreadMS: ms(cfg.Spread), Subscriber: cfg.Subscriber}
	var late, recv, fire, deliver, probe []time.Duration
	for range cfg.TimelyRounds {
		rd, err := measureTimelyRound(ctx, url, cfg)
		if err != nil {
			return r, err
		}
		round := summarize(rd.late)
		round.Missing, round.Duplicates, round.Unexpected = rd.missing, rd.dups, rd.unexp
		round.DeadlineSpanMS = ms(rd.span)
		r.PerRound = append(r.PerRound, round)
		late = append(late, rd.late...)
		recv, fire, deliver = append(recv, rd.recv...), append(fire, rd.fire...), append(deliver, rd.deliver...)
		r.PublishSeconds += rd.publishSeconds / float64(cfg.TimelyRounds)
		probe = append(probe, rd.probe...)
		r.GCCycles += rd.gcCycles
		r.GCPauseMS += ms(rd.gcPause)
		r.WorkerDropped += rd.workerDrop
		r.SubscriberDropped += rd.subscrDrop
	}
	r.Lateness = summarize(late)
	for _, round := range r.PerRound {
		r.Lateness.Missing += round.Missing
		r.Lateness.Duplicates += round.Duplicates
		r.Lateness.Unexpected += round.Unexpected
		r.Lateness.DeadlineSpanMS = max(r.Lateness.DeadlineSpanMS, round.DeadlineSpanMS)
	}
	r.Breakdown = latencyBreakdown{Receive: summarize(recv), Fire: summarize(fire), Deliver: summarize(deliver)}
	r.TimerProbe = summarize(probe)
	return r, nil
}

// measureTimelyRound makes cfg.Timely backends heartbeat once so that
// their deadlines fall within cfg.Spread, and measures when their quiesce
// events arrive at a subscriber.
func measureTimelyRound(ctx context.Context, url string, cfg config) (timelyRound, error) {
	n := cfg.Timely
	var rd timelyRound
	subj := bus.MustSubjects(bus.DefaultPrefix)
	obs := &dueObserver{prefix: "tl.", deadline: make([]time.Time, n), published: make([]time.Time, n)}
	rw, err := startWorker(url, cfg, time.Hour, obs)
	if err != nil {
		return rd, err
	}
	defer rw.stop()

	got := newArrivals(n)
	prefix := subj.Quiesce("tl.")
	if cfg.Subscriber == "raw" {
		rs, err := rawSubscribe(url, subj.Quiesce(">"), func(subject []byte, at time.Time) {
			i, ok := keyIndex(subject, prefix)
			got.record(i, ok, at)
		})
		if err != nil {
			return rd, err
		}
		defer rs.Close()
	} else {
		snc, err := nats.Connect(url, nats.Name("idle-bench quiesce subscriber"))
		if err != nil {
			return rd, err
		}
		defer snc.Close()
		sub, err := snc.Subscribe(subj.Quiesce(">"), func(m *nats.Msg) {
			at := time.Now()
			i, ok := keyIndex(m.Subject, prefix)
			got.record(i, ok, at)
		})
		if err != nil {
			return rd, err
		}
		if err := sub.SetPendingLimits(-1, -1); err != nil {
			return rd, err
		}
		if err := snc.FlushTimeout(waitBound); err != nil {
			return rd, err
		}
		defer func() { rd.subscrDrop = dropped(sub) }()
	}

	pnc, err := nats.Connect(url, nats.Name("idle-bench heartbeats"))
	if err != nil {
		return rd, err
	}
	defer pnc.Close()
	subjects := make([]string, n)
	for i := range subjects {
		subjects[i] = subj.Activity("tl." + strconv.Itoa(i))
	}
	base := time.Now()
	applied := func() uint64 { return rw.w.Stats().Heartbeats }
	deadlines, err := publishTimed(ctx, pnc, subjects, func(i int) time.Time {
		return base.Add(cfg.Lead + time.Duration(int64(cfg.Spread)*int64(i)/int64(n)))
	}, cfg.TimelyWindow, applied)
	if err != nil {
		return rd, err
	}
	rd.publishSeconds = time.Since(base).Seconds()

	// The floor: a bare timer in this process, re-armed every millisecond
	// while the deadlines fall, is itself this late.
	time.Sleep(time.Until(deadlines[0]))
	var gc0 runtime.MemStats
	runtime.ReadMemStats(&gc0)
	stopProbe := make(chan struct{})
	probed := make(chan []time.Duration, 1)
	go func() { probed <- probeTimer(time.Millisecond, stopProbe) }()
	err = got.wait(ctx, deadlines[n-1].Add(10*time.Second))
	close(stopProbe)
	rd.probe = <-probed
	var gc1 runtime.MemStats
	runtime.ReadMemStats(&gc1)
	rd.gcCycles = gc1.NumGC - gc0.NumGC
	rd.gcPause = time.Duration(gc1.PauseTotalNs - gc0.PauseTotalNs)
	if err != nil {
		return rd, err
	}
	rd.late, rd.missing = got.lateness(deadlines)
	got.mu.Lock()
	rd.dups, rd.unexp = got.dups, got.unexpected
	got.mu.Unlock()
	rd.span = span(deadlines)
	rd.recv, rd.fire, rd.deliver = obs.breakdown(deadlines, got)
	rd.workerDrop = rw.w.Stats().Dropped
	return rd, nil
}

// dueObserver records, for each quiesce the worker publishes, the deadline
// on the worker's clock and when the worker had published it. The worker
// runs in this process, so its clock is this program's clock.
type dueObserver struct {
	prefix    string
	mu        sync.Mutex
	deadline  []time.Time
	published []time.Time
}

// Quiesced implements bus.Observer.
func (o *dueObserver) Quiesced(d coordinator.Due, _ time.Duration) {
	now := time.Now()
	i, ok := keyIndex(d.Key, o.prefix)
	if !ok || i >= len(o.deadline) {
		return
	}
	o.mu.Lock()
	o.deadline[i], o.published[i] = d.Deadline, now
	o.mu.Unlock()
}

// breakdown splits each event's lateness into three parts: heartbeat
// publish to the worker's receipt (which moves the worker's deadline later
// than this program's), the worker's deadline to its publish of the event,
// and that publish to the subscriber's receipt.
func (o *dueObserver) breakdown(deadlines []time.Time, got *arrivals) (recv, fire, deliver []time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	got.mu.Lock()
	defer got.mu.Unlock()
	for i, dl := range deadlines {
		if o.deadline[i].IsZero() || got.at[i].IsZero() {
			continue
		}
		recv = append(recv, o.deadline[i].Sub(dl))
		fire = append(fire, o.published[i].Sub(o.deadline[i]))
		deliver = append(deliver, got.at[i].Sub(o.published[i]))
	}
	return recv, fire, deliver
}

func dropped(sub *nats.Subscription) uint64 {
	n, err := sub.Dropped()
	if err != nil || n < 0 {
		return 0
	}
	return uint64(n)
}
