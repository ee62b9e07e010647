package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
)

// adminQuiesceMatch is the pattern of the pattern quiesce: pool 0 of the
// admin section's backends, a fifth of them. Its first token is a
// wildcard, so the worker's walk visits every tracked key (it has no
// literal prefix to seek to) and forces the fifth that match.
const adminQuiesceMatch = "*.gopls.p0.>"

// patternQuiesce is the last phase of the admin section: one
// P.admin.quiesce whose pattern matches a fifth of the backends, with the
// heartbeat prober running from the request until every event arrived.
type patternQuiesce struct {
	Match string `json:"match"`
	// QuiesceRate is the worker's (0: unlimited).
	QuiesceRate int `json:"quiesce_rate"`
	// Kind says how the pattern selects: "wildcard" (the walk visits every
	// key) or "literal prefix".
	Kind string `json:"kind"`
	// Want is the number of backends the pattern matches, Quiesced the
	// reply's count, ReplyOK its "ok".
	Want     int  `json:"want"`
	Quiesced int  `json:"quiesced"`
	ReplyOK  bool `json:"reply_ok"`
	// ReplyMS is the request's round trip; FirstEventMS and AllEventsMS
	// are the arrival of the first and of the last event at a subscriber,
	// from the request.
	ReplyMS      float64 `json:"reply_ms"`
	FirstEventMS float64 `json:"first_event_ms"`
	AllEventsMS  float64 `json:"all_events_ms"`
	// Events counts the distinct backends whose event arrived.
	Events     int `json:"events"`
	Missing    int `json:"missing"`
	Duplicates int `json:"duplicates"`
	Unexpected int `json:"unexpected"`
	// Draining is the worker's count of draining backends afterwards.
	Draining        int64      `json:"draining_after"`
	Heartbeats      rttSummary `json:"heartbeat_rtt"`
	HeartbeatErrors int        `json:"heartbeat_errors"`
	GCCycles        uint32     `json:"gc_cycles"`
	GCPauseMS       float64    `json:"gc_pause_ms"`
	// CPUPercent is the share of the machine (both cores: 100) this
	// process (worker, server, subscriber, prober) used meanwhile.
	CPUPercent float64 `json:"process_cpu_percent"`
}

// lastNumber returns the number the subject's last token spells.
func lastNumber(subject []byte) (int, bool) {
	dot := bytes.LastIndexByte(subject, '.')
	return keyIndex(subject[dot+1:], "")
}

// measurePatternQuiesce sends one P.admin.quiesce for adminQuiesceMatch
// to rw, which tracks cfg.AdminBackends running backends of adminKey with
// an idle timeout of an hour (so only the forced drains fire), and measures
// its round trip and when each event reaches a subscriber, while hnc
// probes heartbeats to probe (none of them matched) every
// cfg.AdminInterval from the request until the last event.
func measurePatternQuiesce(ctx context.Context, url string, hnc *nats.Conn, probe []string, rw *runningWorker, cfg config) (patternQuiesce, error) {
	n := cfg.AdminBackends
	subj := bus.MustSubjects(bus.DefaultPrefix)
	q := patternQuiesce{Match: adminQuiesceMatch, Kind: "wildcard", QuiesceRate: cfg.AdminQuiesceRate}
	// want[j] is the event subject of the j-th matching backend, slot[i]
	// backend i's j (-1: not matched).
	slot := make([]int32, n)
	var want []string
	for i := range n {
		slot[i] = -1
		if adminPool(i) == 0 {
			slot[i] = int32(len(want))
			want = append(want, subj.Quiesce(adminKey(i)))
		}
	}
	q.Want = len(want)
	got := newArrivals(len(want))
	rs, err := rawSubscribe(url, subj.Quiesce(">"), func(subject []byte, at time.Time) {
		i, ok := lastNumber(subject)
		j := -1
		if ok && i < n {
			j = int(slot[i])
		}
		ok = j >= 0 && string(subject) == want[j]
		got.record(max(j, 0), ok, at)
	})
	if err != nil {
		return q, err
	}
	defer rs.Close()
	anc, err := nats.Connect(url, nats.Name("idle-bench admin quiesce"))
	if err != nil {
		return q, err
	}
	defer anc.Close()
	body, err := json.Marshal(bus.QuiesceRequest{Match: adminQuiesceMatch})
	if err != nil {
		return q, err
	}

	var gc0, gc1 runtime.MemStats
	runtime.ReadMemStats(&gc0)
	stop := make(chan struct{})
	probed := make(chan heartbeatProbe, 1)
	probeErr := make(chan error, 1)
	go func() {
		p, err := probeHeartbeats(ctx, hnc, probe, nil, cfg.AdminInterval, stop)
		probed <- p
		probeErr <- err
	}()
	load := sampleCPU()
	t0 := time.Now()
	m, reqErr := anc.Request(subj.AdminQuiesce(), body, waitBound)
	q.ReplyMS = ms(time.Since(t0))
	waitErr := got.wait(ctx, t0.Add(waitBound))
	close(stop)
	hb := <-probed
	q.CPUPercent = selfLoad(load, sampleCPU())
	runtime.ReadMemStats(&gc1)
	if err := <-probeErr; err != nil {
		return q, err
	}
	if waitErr != nil {
		return q, waitErr
	}
	if reqErr != nil {
		return q, fmt.Errorf("request: %w", reqErr)
	}
	var reply bus.QuiesceReply
	if err := json.Unmarshal(m.Data, &reply); err != nil {
		return q, fmt.Errorf("reply %q: %w", m.Data, err)
	}
	q.ReplyOK, q.Quiesced = reply.OK, reply.Quiesced
	q.Heartbeats, q.HeartbeatErrors = summarizeRTT(hb.rtt), hb.lost
	q.GCCycles, q.GCPauseMS = gc1.NumGC-gc0.NumGC, ms(time.Duration(gc1.PauseTotalNs-gc0.PauseTotalNs))

	got.mu.Lock()
	q.Events, q.Duplicates, q.Unexpected = got.got, got.dups, got.unexpected
	var first, last time.Time
	for _, at := range got.at {
		if at.IsZero() {
			continue
		}
		if first.IsZero() || at.Before(first) {
			first = at
		}
		if at.After(last) {
			last = at
		}
	}
	got.mu.Unlock()
	q.Missing = q.Want - q.Events
	if q.Events > 0 {
		q.FirstEventMS, q.AllEventsMS = ms(first.Sub(t0)), ms(last.Sub(t0))
	}
	q.Draining = rw.w.Stats().Draining
	return q, nil
}
