package main

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
)

// adminListLimit is the page size of the lists of the admin section, the
// issue's {"limit":1000}.
const adminListLimit = 1000

// adminPhase is one phase of the admin section: heartbeat round trips
// while the admin clients run one kind of list in a loop (or none).
type adminPhase struct {
	Name string `json:"name"`
	// Match is the list's pattern ("" in the phase without lists).
	Match      string     `json:"match,omitempty"`
	Heartbeats rttSummary `json:"heartbeat_rtt"`
	// HeartbeatErrors counts heartbeat requests without a reply in time.
	HeartbeatErrors int        `json:"heartbeat_errors"`
	Lists           rttSummary `json:"list_rtt"`
	// ListErrors counts lists that failed or returned an unexpected total.
	ListErrors int `json:"list_errors"`
	// ListTotal is the total the lists reported, and WantTotal the number
	// of backends that match.
	ListTotal int `json:"list_total"`
	WantTotal int `json:"want_total"`
	// GC cycles and their stop-the-world pauses during the phase: the
	// worker, the server and the clients share this process.
	GCCycles  uint32  `json:"gc_cycles"`
	GCPauseMS float64 `json:"gc_pause_ms"`
}

// rttSummary describes round-trip times in milliseconds.
type rttSummary struct {
	Count  int     `json:"count"`
	MeanMS float64 `json:"mean_ms"`
	P50MS  float64 `json:"p50_ms"`
	P99MS  float64 `json:"p99_ms"`
	MaxMS  float64 `json:"max_ms"`
}

func summarizeRTT(rtt []time.Duration) rttSummary {
	slices.Sort(rtt)
	s := rttSummary{Count: len(rtt)}
	if len(rtt) == 0 {
		return s
	}
	var sum time.Duration
	for _, d := range rtt {
		sum += d
	}
	s.MeanMS = ms(sum) / float64(len(rtt))
	s.P50MS, s.P99MS, s.MaxMS = ms(percentile(rtt, 50)), ms(percentile(rtt, 99)), ms(rtt[len(rtt)-1])
	return s
}

type adminResult struct {
	Backends     int          `json:"backends"`
	Clients      int          `json:"admin_clients"`
	IntervalMS   float64      `json:"heartbeat_interval_ms"`
	PhaseSeconds float64      `json:"phase_seconds"`
	Phases       []adminPhase `json:"phases"`
	// Quiesce is the last phase: one P.admin.quiesce over a fifth of the
	// backends.
	Quiesce         *patternQuiesce `json:"pattern_quiesce,omitempty"`
	OtherCPUPercent float64         `json:"other_cpu_percent"`
}

// adminPools is how many pools the admin section's backends are spread
// over; the pattern quiesce drains pool 0 (adminQuiesceMatch), a fifth.
const adminPools = 5

// adminPool is backend i's pool: blocks of 1000 consecutive backends take
// turns, so every instance has backends in every pool.
func adminPool(i int) int { return i / 1000 % adminPools }

// adminKey is the key of backend i of the admin section, shaped like the
// README's with a pool token: 1000 instances, one service, 5 pools.
func adminKey(i int) string {
	return "adm-" + strconv.Itoa(i%1000) + ".gopls.p" + strconv.Itoa(adminPool(i)) + "." + strconv.Itoa(i)
}

// measureAdmin fills a worker with cfg.AdminBackends backends, then sends a
// heartbeat request every cfg.AdminInterval from one connection and
// measures its round trip, in three phases of cfg.AdminPhase: without
// admin calls, while cfg.AdminClients clients list a literal prefix
// ("adm-7.gopls.>") in a loop, and while they list a wildcard
// ("*.gopls.>", which visits every key) in a loop; both lists with limit
// 1000. Then, last, one pattern quiesce of a fifth of the backends (see
// measurePatternQuiesce).
func measureAdmin(ctx context.Context, url string, cfg config) (adminResult, error) {
	n := cfg.AdminBackends
	r := adminResult{Backends: n, Clients: cfg.AdminClients, IntervalMS: ms(cfg.AdminInterval), PhaseSeconds: cfg.AdminPhase.Seconds()}
	rw, err := startWorkerWith(url, bus.WorkerConfig{
		Policy:      coordinator.Policy{DefaultIdleTimeout: time.Hour},
		QueueLength: cfg.QueueLength,
		QuiesceRate: cfg.AdminQuiesceRate,
	}, nil)
	if err != nil {
		return r, err
	}
	defer rw.stop()
	subj := bus.MustSubjects(bus.DefaultPrefix)
	subjects := make([]string, n)
	for i := range subjects {
		subjects[i] = subj.Activity(adminKey(i))
	}
	fill := cfg
	fill.Keys, fill.Messages = n, n
	applied := func() uint64 { return rw.w.Stats().Heartbeats }
	droppedN := func() uint64 { return rw.w.Stats().Dropped }
	if _, err := pump(ctx, url, fill, subjects, nil, applied, droppedN); err != nil {
		return r, fmt.Errorf("filling the worker: %w", err)
	}
	for deadline := time.Now().Add(waitBound); rw.w.Stats().Running != int64(n); {
		if time.Now().After(deadline) {
			return r, fmt.Errorf("worker tracks %d backends; want %d", rw.w.Stats().Running, n)
		}
		time.Sleep(time.Millisecond)
	}

	hnc, err := nats.Connect(url, nats.Name("idle-bench admin heartbeats"))
	if err != nil {
		return r, err
	}
	defer hnc.Close()
	// The prober keeps away from the backends the pattern quiesce drains:
	// a heartbeat would make one running again before its event.
	probe := make([]string, 0, n)
	for i, s := range subjects {
		if adminPool(i) != 0 {
			probe = append(probe, s)
		}
	}
	if len(probe) == 0 {
		probe = subjects
	}
	prefixTotal := 0
	for i := 7; i < n; i += 1000 {
		prefixTotal++
	}
	for _, ph := range []struct {
		name, match string
		want        int
	}{
		{"no admin calls", "", 0},
		{"list, literal prefix", "adm-7.gopls.>", prefixTotal},
		{"list, wildcard", "*.gopls.>", n},
	} {
		if err := ctx.Err(); err != nil {
			return r, err
		}
		p, err := adminRunPhase(ctx, url, hnc, probe, cfg, ph.match, ph.want)
		p.Name = ph.name
		if err != nil {
			return r, fmt.Errorf("phase %q: %w", ph.name, err)
		}
		r.Phases = append(r.Phases, p)
	}
	// Last: it leaves a fifth of the backends draining.
	q, err := measurePatternQuiesce(ctx, url, hnc, probe, rw, cfg)
	if err != nil {
		return r, fmt.Errorf("pattern quiesce: %w", err)
	}
	r.Quiesce = &q
	return r, nil
}

// checkList checks a list reply of the admin section: ok, want backends in
// all, a full page. full also checks each backend's key and the order,
// which costs this process more CPU than the worker spent on the list, so
// the clients do it for their first list of a phase only; the others are
// decoded without their backends' fields.
func checkList(data []byte, want int, full bool) (total int, err error) {
	var light struct {
		OK       bool       `json:"ok"`
		Backends []struct{} `json:"backends"`
		Total    int        `json:"total"`
	}
	if err := json.Unmarshal(data, &light); err != nil {
		return 0, err
	}
	if !light.OK || light.Total != want || len(light.Backends) != min(want, adminListLimit) {
		return light.Total, fmt.Errorf("list: got ok %v, total %d, %d backends; want ok, %d, %d",
			light.OK, light.Total, len(light.Backends), want, min(want, adminListLimit))
	}
	if !full {
		return light.Total, nil
	}
	var reply bus.ListReply
	if err := json.Unmarshal(data, &reply); err != nil {
		return 0, err
	}
	for i, b := range reply.Backends {
		if b.State != "running" || i > 0 && b.Key <= reply.Backends[i-1].Key {
			return reply.Total, fmt.Errorf("list: backend %d is %+v after %q; want running, keys ascending", i, b, reply.Backends[max(i-1, 0)].Key)
		}
	}
	return reply.Total, nil
}

// adminRunPhase runs the admin clients (none when match is empty) and
// measures heartbeat round trips for cfg.AdminPhase meanwhile.
func adminRunPhase(ctx context.Context, url string, hnc *nats.Conn, subjects []string, cfg config, match string, want int) (adminPhase, error) {
	p := adminPhase{Match: match, WantTotal: want}
	pctx, stop := context.WithCancel(ctx)
	defer stop()
	var mu sync.Mutex // guards lists, p.ListErrors, p.ListTotal
	var lists []time.Duration
	var wg sync.WaitGroup
	if match != "" {
		body, err := json.Marshal(bus.ListRequest{Match: match, Limit: adminListLimit})
		if err != nil {
			return p, err
		}
		subject := bus.MustSubjects(bus.DefaultPrefix).AdminList()
		for range cfg.AdminClients {
			anc, err := nats.Connect(url, nats.Name("idle-bench admin client"))
			if err != nil {
				return p, err
			}
			defer anc.Close()
			wg.Go(func() {
				for i := 0; pctx.Err() == nil; i++ {
					t0 := time.Now()
					m, err := anc.Request(subject, body, waitBound)
					rtt := time.Since(t0)
					var total int
					if err == nil {
						total, err = checkList(m.Data, want, i == 0)
					}
					mu.Lock()
					if err != nil {
						p.ListErrors++
					} else {
						lists = append(lists, rtt)
					}
					p.ListTotal = total
					mu.Unlock()
				}
			})
		}
	}
	var gc0, gc1 runtime.MemStats
	runtime.ReadMemStats(&gc0)
	// Heartbeats on a steady beat, each to another backend.
	hb, err := probeFor(ctx, hnc, subjects, nil, cfg.AdminInterval, cfg.AdminPhase)
	runtime.ReadMemStats(&gc1)
	p.GCCycles, p.GCPauseMS = gc1.NumGC-gc0.NumGC, ms(time.Duration(gc1.PauseTotalNs-gc0.PauseTotalNs))
	stop()
	wg.Wait()
	if err != nil {
		return p, err
	}
	p.Heartbeats, p.HeartbeatErrors = summarizeRTT(hb.rtt), hb.lost
	p.Lists = summarizeRTT(lists)
	return p, nil
}
