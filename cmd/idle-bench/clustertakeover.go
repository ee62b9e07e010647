package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/partition"
	"github.com/idle-worker/idle-worker/store"
)

// dupWatch is how long the takeover keeps listening after every backend's
// event arrived, for a second event of any of them; missingGrace how long
// it waits for an event after the backend was due at the latest (well
// below the policy's RetryInterval, so that no re-send blurs the count).
const (
	dupWatch     = 500 * time.Millisecond
	missingGrace = 5 * time.Second
)

// takeoverMode is how the leaving worker goes.
type takeoverMode int

const (
	// modeKill closes the worker's connection: its partitions' owner is
	// gone, the others find out after IDLE_OWNER_TIMEOUT.
	modeKill takeoverMode = iota
	// modeHandOver stops its controller, as SIGTERM does: it releases its
	// partitions and leaves, and the others claim at once.
	modeHandOver
)

func (m takeoverMode) String() string {
	if m == modeHandOver {
		return "hand-over (SIGTERM: release, leave)"
	}
	return "kill -9 (connection closed)"
}

// takeoverResult is one worker of three leaving while its backends fall
// due, and the other two taking its partitions over.
type takeoverResult struct {
	Mode string `json:"mode"`
	// Mapped: the workers ran with the partition mappings and a Router
	// (IDLE_MAPPED): no warm state, a takeover gives a full timeout of
	// grace.
	Mapped   bool `json:"mapped"`
	Backends int  `json:"backends"`
	// LeadMS is the time from the start of the heartbeats to the first
	// deadline, PublishMS the time they took, DeadlineSpanMS the first
	// deadline to the last.
	LeadMS         float64 `json:"lead_ms"`
	PublishMS      float64 `json:"publish_ms"`
	DeadlineSpanMS float64 `json:"deadline_span_ms"`
	// KillAtMS is the kill (or the stop) minus the first deadline.
	KillAtMS float64 `json:"kill_at_ms"`
	// LeaverPartitions are the partitions the leaving worker owned; Due
	// its backends whose event had not arrived at the kill.
	LeaverPartitions int `json:"leaver_partitions"`
	Due              int `json:"due"`
	// Times from the kill: ReleasedMS until the leaving worker had
	// released and left (hand-over only); FirstClaimMS until another
	// worker owned one of its partitions, ClaimedMS all of them; First-
	// and LastEventMS until the first and the last event of its due
	// backends arrived; CaughtUpMS until the last event of those Overdue:
	// due before the others had claimed every partition (they waited for
	// the takeover; the rest fell due after it).
	ReleasedMS   float64 `json:"released_ms,omitempty"`
	FirstClaimMS float64 `json:"first_claim_ms"`
	ClaimedMS    float64 `json:"claimed_ms"`
	FirstEventMS float64 `json:"first_event_ms"`
	LastEventMS  float64 `json:"last_event_ms"`
	Overdue      int     `json:"overdue"`
	CaughtUpMS   float64 `json:"caught_up_ms"`
	// Lateness (arrival - deadline) of the due backends, and of every
	// other backend (the other workers' own, and the leaving worker's
	// quiesced before the kill). Duplicates count backends that got a
	// second event id; Resent events that repeated an id (allowed).
	Lateness latencySummary `json:"due_lateness"`
	Others   latencySummary `json:"others_lateness"`
	Resent   int            `json:"resent"`
	// The other two workers' counters since the kill.
	Claims        uint64 `json:"claims"`
	Restored      int64  `json:"restored"`
	StoreFenced   uint64 `json:"store_fenced"`
	WorkerDropped uint64 `json:"worker_dropped"`
	PublishErrors uint64 `json:"publish_errors"`
}

// idArrivals records, for each of n numbered backends (keys prefix+i), when
// its first quiesce event arrived and with which id. Another event with the
// same id is a re-send (allowed); one with another id is a duplicate.
type idArrivals struct {
	prefix string

	mu                     sync.Mutex
	at                     []time.Time
	id                     []string
	got, resent            int
	duplicates, unexpected int
	all                    chan struct{}
}

func newIDArrivals(prefix string, n int) *idArrivals {
	return &idArrivals{prefix: prefix, at: make([]time.Time, n), id: make([]string, n), all: make(chan struct{})}
}

// record notes an event body that arrived at now.
func (a *idArrivals) record(data []byte, now time.Time) {
	e, err := bus.ParseQuiesceEvent(data)
	i, ok := 0, false
	if err == nil {
		i, ok = keyIndex(e.Key, a.prefix)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case !ok || i >= len(a.at):
		a.unexpected++
	case a.id[i] == e.ID:
		a.resent++
	case a.id[i] != "":
		a.duplicates++
	default:
		a.at[i], a.id[i] = now, e.ID
		if a.got++; a.got == len(a.at) {
			close(a.all)
		}
	}
}

// wait waits until every backend's event arrived, until the bound, or ctx
// is done.
func (a *idArrivals) wait(ctx context.Context, until time.Time) error {
	return waitClosed(ctx, a.all, until)
}

// takeoverSplit is the backends of a takeover parted in two: the leaving
// worker's due ones (of its partitions, no event before the kill) and the
// others.
type takeoverSplit struct {
	due, others               []time.Duration // arrival - deadline
	dueCount                  int
	dueMissing, othersMissing int
	first, last               time.Time // the due backends' first and last arrival
	// overdue counts the due backends whose deadline came before claimed,
	// caughtUp is the last arrival among them.
	overdue  int
	caughtUp time.Time
}

// splitTakeover parts backends by leaver(i) and their arrival at[i]
// (zero: none) against the kill, and finds the due ones whose deadline
// passed before claimed.
func splitTakeover(at, deadlines []time.Time, leaver func(i int) bool, kill, claimed time.Time) takeoverSplit {
	var s takeoverSplit
	for i, dl := range deadlines {
		arrived := !at[i].IsZero()
		if !leaver(i) || arrived && at[i].Before(kill) {
			if arrived {
				s.others = append(s.others, at[i].Sub(dl))
			} else {
				s.othersMissing++
			}
			continue
		}
		s.dueCount++
		if dl.Before(claimed) {
			s.overdue++
			if arrived {
				s.caughtUp = maxTime(s.caughtUp, at[i])
			}
		}
		if !arrived {
			s.dueMissing++
			continue
		}
		s.due = append(s.due, at[i].Sub(dl))
		if s.first.IsZero() || at[i].Before(s.first) {
			s.first = at[i]
		}
		s.last = maxTime(s.last, at[i])
	}
	return s
}

// measureTakeover starts three clustered workers with their memberships
// and controllers on a fresh store, makes cfg.ClusterBackends backends
// heartbeat once with timeouts that put their deadlines within
// cfg.ClusterSpread, cfg.ClusterLead after the start (spread, their events
// stay below what one stream stores per second, so lateness measures the
// takeover, not a herd), and cfg.ClusterKillAt after the first deadline
// kills one worker or has it hand over. A subscriber (a nats.go
// subscription, which parses each event for its id) stamps every event.
func measureTakeover(ctx context.Context, url string, cfg config, mode takeoverMode, mapped bool) (takeoverResult, error) {
	n := cfg.ClusterBackends
	r := takeoverResult{Mode: mode.String(), Mapped: mapped, Backends: n, LeadMS: ms(cfg.ClusterLead)}
	subj := bus.MustSubjects(bus.DefaultPrefix)
	var router bus.Router
	tag := "hk"
	if mode == modeHandOver {
		tag = "hh"
	}
	if mapped {
		router, tag = partition.NewRouter(subj), tag+"m"
	}
	names := freshStore()
	defer removeStore(url, names)
	nodes, err := startNodes(ctx, url, cfg, names, tag, clusterWorkers, router)
	if err != nil {
		return r, err
	}
	defer func() { _ = stopNodes(nodes) }() // after an error; a node stopped already is left alone
	leaver, stayers := nodes[0], nodes[1:]
	if err := join(ctx, nodes, cfg.ClusterOwnerTimeout); err != nil {
		return r, err
	}

	prefix := tag + "."
	got := newIDArrivals(prefix, n)
	snc, err := nats.Connect(url, nats.Name("idle-bench takeover events"))
	if err != nil {
		return r, err
	}
	defer snc.Close()
	sub, err := snc.Subscribe(subj.Quiesce(">"), func(m *nats.Msg) { got.record(m.Data, time.Now()) })
	if err != nil {
		return r, err
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return r, err
	}
	if err := snc.FlushTimeout(waitBound); err != nil {
		return r, err
	}
	pnc, err := nats.Connect(url, nats.Name("idle-bench takeover heartbeats"))
	if err != nil {
		return r, err
	}
	defer pnc.Close()
	subjects := make([]string, n)
	for i := range subjects {
		subjects[i] = subj.Activity(prefix + strconv.Itoa(i))
	}
	applied := func() uint64 {
		var h uint64
		for _, node := range nodes {
			h += node.w.Stats().Heartbeats
		}
		return h
	}
	beats0 := applied()
	start := time.Now()
	deadlines, err := publishTimed(ctx, pnc, subjects, func(i int) time.Time {
		return start.Add(cfg.ClusterLead + time.Duration(int64(cfg.ClusterSpread)*int64(i)/int64(n)))
	}, cfg.TimelyWindow, func() uint64 { return applied() - beats0 })
	if err != nil {
		return r, err
	}
	r.PublishMS = ms(time.Since(start))
	first, last := deadlines[0], deadlines[0]
	for _, dl := range deadlines {
		first, last = minTime(first, dl), maxTime(last, dl)
	}
	r.DeadlineSpanMS = ms(last.Sub(first))
	// Every record stored before the kill: the takeover reads what the
	// heartbeats changed, not what a 2 ms flush window lost.
	if err := syncStore(ctx, pnc, subj, store.DefaultPartitions, tag); err != nil {
		return r, err
	}
	kill := first.Add(cfg.ClusterKillAt)
	wait := time.Until(kill)
	if wait < 0 {
		return r, fmt.Errorf("the heartbeats and the store sync ended %v after the kill was due: raise -cluster-timeout or -cluster-kill-at", -wait)
	}
	time.Sleep(wait)

	leaverParts := make([]bool, store.DefaultPartitions)
	owned := leaver.w.Owned()
	for _, p := range owned {
		leaverParts[p] = true
	}
	r.LeaverPartitions = len(owned)
	base := make([]bus.Stats, len(stayers))
	owned0 := 0
	for i, node := range stayers {
		base[i] = node.w.Stats()
		owned0 += int(base[i].PartitionsOwned)
	}
	// The kill closes the connection as the goroutine starts; the rest of
	// the teardown runs beside the takeover. A hand-over stops the
	// controller: it releases and leaves.
	type gone struct {
		released time.Time // hand-over: the controller released and left
		err      error
	}
	leaving := make(chan gone, 1)
	kill = time.Now()
	r.KillAtMS = ms(kill.Sub(first))
	go func() {
		if mode == modeKill {
			leaving <- gone{err: leaver.kill()}
			return
		}
		err := leaver.stopController()
		at := time.Now()
		leaving <- gone{released: at, err: errors.Join(err, leaver.leave())}
	}()
	firstClaim, claimed, err := watchClaims(ctx, stayers, owned0)
	if err != nil {
		return r, err
	}
	r.FirstClaimMS, r.ClaimedMS = ms(firstClaim.Sub(kill)), ms(claimed.Sub(kill))
	g := <-leaving // bounded: kill and leave wait at most waitBound for each part
	if g.err != nil {
		return r, fmt.Errorf("the leaving worker: %w", g.err)
	}
	if mode == modeHandOver {
		r.ReleasedMS = ms(g.released.Sub(kill))
	}
	// Every backend is due by the last deadline, or, with the mappings, a
	// whole timeout (at most lead + spread) after the claim; one whose
	// event has not come missingGrace later is missing.
	if err := got.wait(ctx, maxTime(last, claimed.Add(cfg.ClusterLead+cfg.ClusterSpread)).Add(missingGrace)); err != nil {
		return r, err
	}
	time.Sleep(dupWatch)

	got.mu.Lock()
	s := splitTakeover(got.at, deadlines, func(i int) bool {
		return leaverParts[partition.Of(prefix+strconv.Itoa(i), store.DefaultPartitions)]
	}, kill, claimed)
	r.Resent = got.resent
	dups, unexpected := got.duplicates, got.unexpected
	got.mu.Unlock()
	r.Due = s.dueCount
	r.Lateness, r.Others = summarize(s.due), summarize(s.others)
	r.Lateness.Missing, r.Others.Missing = s.dueMissing, s.othersMissing
	// Duplicates and strays are not told apart by owner: both count
	// against the takeover.
	r.Lateness.Duplicates, r.Lateness.Unexpected = dups, unexpected
	r.Lateness.DeadlineSpanMS, r.Others.DeadlineSpanMS = r.DeadlineSpanMS, r.DeadlineSpanMS
	if !s.first.IsZero() {
		r.FirstEventMS, r.LastEventMS = ms(s.first.Sub(kill)), ms(s.last.Sub(kill))
	}
	r.Overdue = s.overdue
	if !s.caughtUp.IsZero() {
		r.CaughtUpMS = ms(s.caughtUp.Sub(kill))
	}
	for i, node := range stayers {
		st := node.w.Stats()
		r.Claims += st.Claims - base[i].Claims
		r.Restored += st.Restored - base[i].Restored
		r.StoreFenced += st.StoreFenced - base[i].StoreFenced
		r.WorkerDropped += st.Dropped - base[i].Dropped
		r.PublishErrors += st.PublishErrors - base[i].PublishErrors
	}
	if err := stopNodes(stayers); err != nil {
		return r, fmt.Errorf("stopping the other workers: %w", err)
	}
	return r, nil
}

// watchClaims polls the workers that stay every millisecond until they own
// every partition, and returns when they first owned more than owned0
// (together) and when they owned all.
func watchClaims(ctx context.Context, stayers []*clusterNode, owned0 int) (first, all time.Time, err error) {
	err = waitFor(ctx, "the others claim every partition", func() bool {
		total := 0
		for _, node := range stayers {
			total += len(node.w.Owned())
		}
		now := time.Now()
		if total > owned0 && first.IsZero() {
			first = now
		}
		if total == store.DefaultPartitions {
			all = now
			return true
		}
		return false
	})
	return first, all, err
}
