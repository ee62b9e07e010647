package main

import (
	"context"
	"fmt"
	"runtime"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/partition"
	"github.com/idle-worker/idle-worker/store"
)

// clusterIngestBody is the heartbeat of the cluster ingest: an explicit
// timeout, as in section 1's "timeout" bodies.
const clusterIngestBody = `{"idle_timeout_ms":60000}`

// clusterIngestRate is the ingest of one configuration: Workers clustered
// workers sharing the partitions evenly, each receiving every heartbeat
// (no mappings) or only its partitions' (Mapped: the partition mappings
// loaded into the server, and a Router).
type clusterIngestRate struct {
	Workers  int  `json:"workers"`
	Mapped   bool `json:"mapped"`
	Keys     int  `json:"keys"`
	Messages int  `json:"messages"`
	// Best is the best round: heartbeats applied (by their partition's
	// owner, summed over the workers) per second; Rounds has every round.
	Best   rate   `json:"best"`
	Rounds []rate `json:"rounds"`
	// Received is what each worker received in the best round (applied,
	// foreign and dropped), KeyShare each worker's share of the keys (its
	// partitions'), Foreign the heartbeats of other workers' partitions
	// received in the best round.
	Received []uint64  `json:"received"`
	KeyShare []float64 `json:"key_share"`
	Foreign  uint64    `json:"foreign"`
	// Dropped sums every round.
	Dropped uint64 `json:"dropped"`
	// This process (server, publisher and every worker) in the best round:
	// its share of the machine (every core: 100) and its CPU time per
	// applied heartbeat.
	ProcessCPUPercent float64 `json:"process_cpu_percent"`
	CPUMicrosPerBeat  float64 `json:"cpu_us_per_heartbeat"`
}

// name describes the configuration.
func (c clusterIngestRate) name() string {
	return fmt.Sprintf("%d worker(s), %s", c.Workers, routingName(c.Mapped))
}

// clusterLimit is a plain subscriber's best round on the cluster ingest's
// stream: what one connection receives, through the mappings (Mapped) or
// not, with no worker's cost.
type clusterLimit struct {
	Mapped            bool    `json:"mapped"`
	Best              rate    `json:"best"`
	ProcessCPUPercent float64 `json:"process_cpu_percent"`
	CPUMicrosPerBeat  float64 `json:"cpu_us_per_heartbeat"`
}

// measureClusterLimit runs section 1's plain subscriber cfg.Rounds times on
// the cluster ingest's stream: on P.activity.> without the mappings, on
// every partition's subjects (P.p.>) with them.
func measureClusterLimit(ctx context.Context, url string, cfg config, mapped bool) (clusterLimit, error) {
	l := clusterLimit{Mapped: mapped}
	subj := bus.MustSubjects(bus.DefaultPrefix)
	wildcard := subj.Activity(">")
	if mapped {
		wildcard = subj.Prefix() + ".p.>"
	}
	keys := ingestKeys("dev", cfg.Keys)
	subjects := make([]string, len(keys))
	for i, k := range keys {
		subjects[i] = subj.Activity(k)
	}
	round := cfg
	round.Messages = cfg.ClusterMessages
	for range cfg.Rounds {
		cpu0 := sampleCPU()
		res, err := measurePlain(ctx, url, round, wildcard, subjects, []byte(clusterIngestBody))
		cpu1 := sampleCPU()
		if err != nil {
			return l, err
		}
		if res.Consumed+res.Dropped != uint64(round.Messages) {
			return l, fmt.Errorf("the plain subscriber received %d and dropped %d of %d", res.Consumed, res.Dropped, round.Messages)
		}
		if res.PerSecond >= l.Best.PerSecond {
			l.Best = res
			l.ProcessCPUPercent, l.CPUMicrosPerBeat = cpuPerBeat(selfLoad(cpu0, cpu1), res.Seconds, res.Consumed)
		}
	}
	return l, nil
}

// evenParts returns the partitions of worker i of n: every n-th from i.
func evenParts(i, n, partitions int) []int {
	var ps []int
	for p := i; p < partitions; p += n {
		ps = append(ps, p)
	}
	return ps
}

// measureClusterIngest starts n clustered workers on a fresh store at url
// (with a Router when mapped: url's server must hold the mappings), hands
// them the partitions evenly (Acquire, no membership), registers every key
// once, then sends cfg.ClusterMessages heartbeats over cfg.Keys keys
// (section 1's publisher, keys across every partition) cfg.Rounds times.
// A round ends when every heartbeat was received by every worker meant to
// receive it.
func measureClusterIngest(ctx context.Context, url string, cfg config, n int, mapped bool) (clusterIngestRate, error) {
	r := clusterIngestRate{Workers: n, Mapped: mapped, Keys: cfg.Keys, Messages: cfg.ClusterMessages}
	subj := bus.MustSubjects(bus.DefaultPrefix)
	var router bus.Router
	tag := fmt.Sprintf("in%d", n)
	if mapped {
		router, tag = partition.NewRouter(subj), tag+"m"
	}
	names := freshStore()
	defer removeStore(url, names)
	nodes, err := startNodes(ctx, url, cfg, names, tag, n, router)
	if err != nil {
		return r, err
	}
	defer func() { _ = stopNodes(nodes) }()
	actx, cancel := context.WithTimeout(ctx, waitBound)
	defer cancel()
	for i, node := range nodes {
		if err := node.w.Acquire(actx, evenParts(i, n, store.DefaultPartitions)); err != nil {
			return r, err
		}
	}
	keys := ingestKeys("dev", cfg.Keys)
	subjects := make([]string, len(keys))
	r.KeyShare = make([]float64, n)
	for i, k := range keys {
		subjects[i] = subj.Activity(k)
		r.KeyShare[partition.Of(k, store.DefaultPartitions)%n] += 1 / float64(len(keys))
	}

	// received returns what each worker received so far.
	received := func() []uint64 {
		got := make([]uint64, n)
		for i, node := range nodes {
			st := node.w.Stats()
			got[i] = st.Heartbeats + st.Foreign + st.Dropped
		}
		return got
	}
	// progress counts the heartbeats received by every worker meant to
	// receive them since base: the slowest worker's count when each
	// receives all, the sum with the mappings.
	progress := func(base []uint64) uint64 {
		var sum, low uint64
		for i, g := range received() {
			d := g - base[i]
			sum += d
			if i == 0 || d < low {
				low = d
			}
		}
		if mapped {
			return sum
		}
		return low
	}
	none := func() uint64 { return 0 }
	body := []byte(clusterIngestBody)
	warm := cfg
	warm.Messages = len(keys)
	base := received()
	if _, err := pump(ctx, url, warm, subjects, body, func() uint64 { return progress(base) }, none); err != nil {
		return r, fmt.Errorf("registering the keys: %w", err)
	}
	if err := waitFor(ctx, "every key tracked", func() bool {
		var running int64
		for _, node := range nodes {
			running += node.w.Stats().Running
		}
		return running == int64(len(keys))
	}); err != nil {
		return r, err
	}

	round := cfg
	round.Messages = cfg.ClusterMessages
	for range cfg.Rounds {
		before := make([]bus.Stats, n)
		for i, node := range nodes {
			before[i] = node.w.Stats()
		}
		base := received()
		cpu0 := sampleCPU()
		res, err := pump(ctx, url, round, subjects, body, func() uint64 { return progress(base) }, none)
		cpu1 := sampleCPU()
		if err != nil {
			return r, err
		}
		var applied, foreign, dropped uint64
		got := received()
		for i, node := range nodes {
			st := node.w.Stats()
			applied += st.Heartbeats - before[i].Heartbeats
			foreign += st.Foreign - before[i].Foreign
			dropped += st.Dropped - before[i].Dropped
			got[i] -= base[i]
		}
		res.Consumed, res.Dropped = applied, dropped
		res.PerSecond = float64(applied) / res.Seconds
		r.Rounds = append(r.Rounds, res)
		r.Dropped += dropped
		if res.PerSecond >= r.Best.PerSecond {
			r.Best, r.Received, r.Foreign = res, got, foreign
			r.ProcessCPUPercent, r.CPUMicrosPerBeat = cpuPerBeat(selfLoad(cpu0, cpu1), res.Seconds, applied)
		}
	}
	return r, stopNodes(nodes)
}

// cpuPerBeat turns this process's share of the machine over seconds into
// CPU microseconds per heartbeat of applied; both are -1 when unknown.
func cpuPerBeat(percent, seconds float64, applied uint64) (float64, float64) {
	if percent < 0 || applied == 0 {
		return -1, -1
	}
	cpuSeconds := percent / 100 * float64(runtime.NumCPU()) * seconds
	return percent, 1e6 * cpuSeconds / float64(applied)
}
