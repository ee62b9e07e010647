package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

type machineInfo struct {
	CPUModel   string `json:"cpu_model"`
	CPUs       int    `json:"cpus"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	GoVersion  string `json:"go_version"`
	OS         string `json:"os"`
	Arch       string `json:"arch"`
}

// rate is one consumer's side of an ingest measurement.
type rate struct {
	Consumed  uint64  `json:"consumed"`
	Dropped   uint64  `json:"dropped"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"per_second"`
}

type ingestResult struct {
	Body       string `json:"body"`
	Keys       int    `json:"keys"`
	Messages   int    `json:"messages"`
	Publishers int    `json:"publishers"`
	Window     int    `json:"window"`
	// Limit is the plain subscriber's best round, Worker the worker's
	// (applied heartbeats); Dropped sums every round.
	Limit  rate    `json:"limit"`
	Worker rate    `json:"worker"`
	Ratio  float64 `json:"worker_over_limit"`
	// Every round, in order.
	LimitRounds     []rate  `json:"limit_rounds"`
	WorkerRounds    []rate  `json:"worker_rounds"`
	OtherCPUPercent float64 `json:"other_cpu_percent"`
}

// latencySummary describes lateness = arrival - deadline, in milliseconds.
type latencySummary struct {
	Count          int     `json:"count"`
	Missing        int     `json:"missing"`
	Duplicates     int     `json:"duplicates"`
	Unexpected     int     `json:"unexpected"`
	Early          int     `json:"early"`
	MinMS          float64 `json:"min_ms"`
	P50MS          float64 `json:"p50_ms"`
	P99MS          float64 `json:"p99_ms"`
	MaxMS          float64 `json:"max_ms"`
	DeadlineSpanMS float64 `json:"deadline_span_ms"`
}

// latencyBreakdown splits the worker's lateness (see dueObserver).
type latencyBreakdown struct {
	Receive latencySummary `json:"heartbeat_publish_to_worker_receipt"`
	Fire    latencySummary `json:"worker_deadline_to_event_publish"`
	Deliver latencySummary `json:"event_publish_to_subscriber"`
}

type timelinessResult struct {
	Backends int `json:"backends"`
	Rounds   int `json:"rounds"`
	// Subscriber is "raw" (protocol-level, allocation-free) or "nats"
	// (a nats.go subscription).
	Subscriber     string  `json:"subscriber"`
	SpreadMS       float64 `json:"spread_ms"`
	PublishSeconds float64 `json:"publish_seconds"`
	// Lateness pools the events of every round; PerRound has each round.
	Lateness          latencySummary   `json:"lateness"`
	PerRound          []latencySummary `json:"per_round"`
	Breakdown         latencyBreakdown `json:"breakdown"`
	WorkerDropped     uint64           `json:"worker_dropped"`
	SubscriberDropped uint64           `json:"subscriber_dropped"`
	// TimerProbe is the lateness of a bare 1 ms timer in this process
	// while the deadlines fell: the floor of any timer-driven decision.
	TimerProbe latencySummary `json:"timer_probe"`
	// GC cycles and their stop-the-world pauses while the deadlines fell.
	GCCycles        uint32  `json:"gc_cycles"`
	GCPauseMS       float64 `json:"gc_pause_ms"`
	OtherCPUPercent float64 `json:"other_cpu_percent"`
}

type kvResult struct {
	Keys          int            `json:"keys"`
	Concurrency   int            `json:"concurrency"`
	Storage       string         `json:"storage"`
	PutSeconds    float64        `json:"put_seconds"`
	PutsPerSecond float64        `json:"puts_per_second"`
	Lateness      latencySummary `json:"lateness"`
	// Ratios against the worker (set by judge).
	P99OverWorker     float64 `json:"p99_over_worker"`
	MaxOverWorker     float64 `json:"max_over_worker"`
	PutsOverHeartbeat float64 `json:"puts_over_worker_heartbeats"`
	OtherCPUPercent   float64 `json:"other_cpu_percent"`
}

type memoryResult struct {
	Backends        int     `json:"backends"`
	HeapBytes       uint64  `json:"heap_bytes"`
	BytesPerBackend float64 `json:"bytes_per_backend"`
	// KeyBytes is the mean key length, KeyHeapBytes what a copy of it
	// occupies on the heap (size classes round it up).
	KeyBytes     float64 `json:"key_bytes"`
	KeyHeapBytes float64 `json:"key_heap_bytes"`
	BeyondKey    float64 `json:"bytes_per_backend_beyond_key"`
}

type shutdownResult struct {
	Backends        int     `json:"backends"`
	RunReturnMS     float64 `json:"run_return_ms"`
	ClosedMS        float64 `json:"connection_closed_ms"`
	OtherCPUPercent float64 `json:"other_cpu_percent"`
}

type target struct {
	Name string `json:"name"`
	Want string `json:"want"`
	Got  string `json:"got"`
	Met  bool   `json:"met"`
}

type results struct {
	Machine    machineInfo       `json:"machine"`
	Config     config            `json:"config"`
	Ingest     []ingestResult    `json:"ingest"`
	Timeliness *timelinessResult `json:"timeliness,omitempty"`
	// TimelinessTunedGC is the timeliness section again with GOGC=off and
	// GOMEMLIMIT=Config.TunedMemLimit.
	TimelinessTunedGC *timelinessResult `json:"timeliness_tuned_gc,omitempty"`
	KV                *kvResult         `json:"kv_ttl,omitempty"`
	Memory            *memoryResult     `json:"memory,omitempty"`
	Shutdown          *shutdownResult   `json:"shutdown,omitempty"`
	Admin             *adminResult      `json:"admin_under_load,omitempty"`
	Herd              *herdResult       `json:"herd,omitempty"`
	Durable           *durableResult    `json:"durable,omitempty"`
	Process           *processResult    `json:"process,omitempty"`
	Cluster           *clusterResult    `json:"cluster,omitempty"`
	Targets           []target          `json:"targets"`
	WallSeconds       float64           `json:"wall_seconds"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted, and 0 when it is empty.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// summarize sorts late and describes it.
func summarize(late []time.Duration) latencySummary {
	slices.Sort(late)
	s := latencySummary{Count: len(late)}
	for _, d := range late {
		if d < 0 {
			s.Early++
		}
	}
	if len(late) > 0 {
		s.MinMS = ms(late[0])
		s.P50MS = ms(percentile(late, 50))
		s.P99MS = ms(percentile(late, 99))
		s.MaxMS = ms(late[len(late)-1])
	}
	return s
}

// judge computes the cross-section ratios and checks the targets.
func (r *results) judge() {
	add := func(name, want, got string, met bool) {
		r.Targets = append(r.Targets, target{Name: name, Want: want, Got: got, Met: met})
	}
	var hbRate float64
	for _, in := range r.Ingest {
		add("ingest "+in.Body+": worker/limit", ">= 0.80", fmt.Sprintf("%.2f", in.Ratio), in.Ratio >= 0.8)
		d := in.Limit.Dropped + in.Worker.Dropped
		add("ingest "+in.Body+": dropped", "0", fmt.Sprintf("%d (limit %d, worker %d)", d, in.Limit.Dropped, in.Worker.Dropped), d == 0)
		if in.Body == "timeout" {
			hbRate = in.Worker.PerSecond
		}
	}
	if t := r.Timeliness; t != nil {
		l := t.Lateness
		add("quiesce lateness p99", "<= 5 ms", fmt.Sprintf("%.2f ms", l.P99MS), l.Count > 0 && l.P99MS <= 5)
		add("quiesce lateness max", "<= 50 ms", fmt.Sprintf("%.2f ms", l.MaxMS), l.Count > 0 && l.MaxMS <= 50)
		bad := l.Early + l.Missing + l.Duplicates + l.Unexpected + int(t.WorkerDropped+t.SubscriberDropped)
		add("quiesce events early/missing/dropped", "0", fmt.Sprintf("%d early, %d missing, %d duplicate, %d dropped",
			l.Early, l.Missing, l.Duplicates, t.WorkerDropped+t.SubscriberDropped), bad == 0)
		if tg := r.TimelinessTunedGC; tg != nil {
			g := tg.Lateness
			limit := fmt.Sprintf("GOGC=off GOMEMLIMIT=%dMiB", r.Config.TunedMemLimit>>20)
			add("quiesce lateness p99, "+limit, "<= 5 ms", fmt.Sprintf("%.2f ms", g.P99MS), g.Count > 0 && g.P99MS <= 5)
			add("quiesce lateness max, "+limit, "<= 50 ms", fmt.Sprintf("%.2f ms", g.MaxMS), g.Count > 0 && g.MaxMS <= 50)
			bad := g.Early + g.Missing + g.Duplicates + g.Unexpected + int(tg.WorkerDropped+tg.SubscriberDropped)
			add("quiesce events early/missing/dropped, "+limit, "0", fmt.Sprintf("%d early, %d missing, %d duplicate, %d dropped",
				g.Early, g.Missing, g.Duplicates, tg.WorkerDropped+tg.SubscriberDropped), bad == 0)
		}
		if kv := r.KV; kv != nil && l.P99MS > 0 {
			kv.P99OverWorker = kv.Lateness.P99MS / l.P99MS
			kv.MaxOverWorker = kv.Lateness.MaxMS / math.Max(l.MaxMS, 1e-3)
			add("KV TTL p99 / worker p99", ">= 50", fmt.Sprintf("%.0f", kv.P99OverWorker), kv.P99OverWorker >= 50)
		}
	}
	if kv := r.KV; kv != nil && hbRate > 0 {
		kv.PutsOverHeartbeat = kv.PutsPerSecond / hbRate
	}
	if m := r.Memory; m != nil {
		add(fmt.Sprintf("heap bytes per backend beyond its key (%d)", m.Backends), "<= 200",
			fmt.Sprintf("%.0f", m.BeyondKey), m.BeyondKey <= 200)
	}
	if a := r.Admin; a != nil {
		a.judge(add)
	}
	if h := r.Herd; h != nil {
		h.judge(add)
	}
	if d := r.Durable; d != nil {
		d.judge(add)
	}
	if p := r.Process; p != nil {
		p.judge(add)
	}
	if c := r.Cluster; c != nil {
		c.judge(add)
	}
}

// count formats n with thousands separators.
func count(n float64) string {
	s := fmt.Sprintf("%.0f", n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// table writes a Markdown table.
type table struct {
	out  io.Writer
	rows [][]string
}

func (t *table) row(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) flush() {
	width := map[int]int{}
	for _, r := range t.rows {
		for i, c := range r {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	for n, r := range t.rows {
		var b strings.Builder
		for i, c := range r {
			fmt.Fprintf(&b, "| %-*s ", width[i], c)
		}
		fmt.Fprintln(t.out, b.String()+"|")
		if n == 0 {
			b.Reset()
			for i := range r {
				b.WriteString("|" + strings.Repeat("-", width[i]+2))
			}
			fmt.Fprintln(t.out, b.String()+"|")
		}
	}
	t.rows = nil
}

func f2(v float64) string { return fmt.Sprintf("%.2f", v) }

func loadNote(p float64) string {
	if p < 0 {
		return ""
	}
	return fmt.Sprintf(" (other processes used %.0f%% of the machine meanwhile)", p)
}

func (r *results) print(out io.Writer) {
	m := r.Machine
	fmt.Fprintf(out, "idle-bench: %s, %d CPUs (GOMAXPROCS %d), %s %s/%s\n", m.CPUModel, m.CPUs, m.GOMAXPROCS, m.GoVersion, m.OS, m.Arch)
	t := &table{out: out}
	if len(r.Ingest) > 0 {
		in := r.Ingest[0]
		fmt.Fprintf(out, "\n1. Ingest: %s keys, %s messages per run, %d publisher connection(s), window %d, best of %d round(s)%s\n\n",
			count(float64(in.Keys)), count(float64(in.Messages)), in.Publishers, in.Window, len(in.LimitRounds), loadNote(in.OtherCPUPercent))
		t.row("body", "limit: plain subscriber msg/s", "worker: applied heartbeats/s", "worker / limit", "dropped (limit, worker)")
		for _, in := range r.Ingest {
			t.row(in.Body, count(in.Limit.PerSecond), count(in.Worker.PerSecond), f2(in.Ratio),
				fmt.Sprintf("%d, %d", in.Limit.Dropped, in.Worker.Dropped))
		}
		t.flush()
	}
	if tl := r.Timeliness; tl != nil {
		fmt.Fprintf(out, "\n2-3. Timeliness: %s backends, deadlines within %.0f ms; lateness = arrival - deadline; worker: %d round(s) pooled, %s subscriber%s\n\n",
			count(float64(tl.Backends)), tl.SpreadMS, tl.Rounds, tl.Subscriber, loadNote(tl.OtherCPUPercent))
		t.row("path", "writes/s", "arrived", "missing", "early", "p50 ms", "p99 ms", "max ms", "deadline span ms")
		l := tl.Lateness
		t.row("worker quiesce events", count(float64(tl.Backends)/tl.PublishSeconds), fmt.Sprint(l.Count), fmt.Sprint(l.Missing),
			fmt.Sprint(l.Early), f2(l.P50MS), f2(l.P99MS), f2(l.MaxMS), fmt.Sprintf("%.0f", l.DeadlineSpanMS))
		if tg := r.TimelinessTunedGC; tg != nil {
			g := tg.Lateness
			t.row(fmt.Sprintf("worker, GOGC=off GOMEMLIMIT=%dMiB", r.Config.TunedMemLimit>>20), count(float64(tg.Backends)/tg.PublishSeconds),
				fmt.Sprint(g.Count), fmt.Sprint(g.Missing), fmt.Sprint(g.Early), f2(g.P50MS), f2(g.P99MS), f2(g.MaxMS),
				fmt.Sprintf("%.0f", g.DeadlineSpanMS))
		}
		if kv := r.KV; kv != nil {
			k := kv.Lateness
			t.row("KV TTL markers ("+kv.Storage+")", count(kv.PutsPerSecond), fmt.Sprint(k.Count), fmt.Sprint(k.Missing),
				fmt.Sprint(k.Early), f2(k.P50MS), f2(k.P99MS), f2(k.MaxMS), fmt.Sprintf("%.0f", k.DeadlineSpanMS))
			t.row("KV / worker", fmt.Sprintf("%.3f", kv.PutsOverHeartbeat), "", "", "",
				ratio(k.P50MS, l.P50MS), ratio(k.P99MS, l.P99MS), ratio(k.MaxMS, l.MaxMS), "")
		}
		t.flush()
		fmt.Fprintln(out, "\nWorker rounds:")
		fmt.Fprintln(out)
		t.row("round", "p50 ms", "p99 ms", "max ms", "early", "missing")
		for i, pr := range tl.PerRound {
			t.row(fmt.Sprint(i+1), f2(pr.P50MS), f2(pr.P99MS), f2(pr.MaxMS), fmt.Sprint(pr.Early), fmt.Sprint(pr.Missing))
		}
		t.flush()
		b := tl.Breakdown
		fmt.Fprintln(out, "\nWorker lateness split in three (one clock: the worker runs in this process):")
		fmt.Fprintln(out)
		t.row("part", "p50 ms", "p99 ms", "max ms")
		for _, part := range []struct {
			name string
			s    latencySummary
		}{
			{"heartbeat published -> worker received it", b.Receive},
			{"worker's deadline -> event published", b.Fire},
			{"event published -> subscriber read it", b.Deliver},
			{"floor: a bare 1 ms timer in this process, same time", tl.TimerProbe},
		} {
			t.row(part.name, f2(part.s.P50MS), f2(part.s.P99MS), f2(part.s.MaxMS))
		}
		t.flush()
		fmt.Fprintf(out, "\nWhile the deadlines fell: %d GC cycles, %.2f ms stop-the-world in total.\n", tl.GCCycles, tl.GCPauseMS)
		if kv := r.KV; kv != nil {
			fmt.Fprintf(out, "\nwrites/s: worker = heartbeats from one connection, fire and forget; KV = kv.Create with jetstream.KeyTTL from %d goroutines.\n", kv.Concurrency)
			fmt.Fprintf(out, "KV / worker writes/s: KV puts/s over the worker's applied heartbeats/s of section 1 ({\"idle_timeout_ms\"} bodies).%s\n", loadNote(kv.OtherCPUPercent))
		}
	}
	if mem := r.Memory; mem != nil {
		fmt.Fprintf(out, "\n4. Memory: %s backends in a coordinator (live heap after runtime.GC)\n\n", count(float64(mem.Backends)))
		t.row("live heap MB", "bytes/backend", "mean key length", "key copy on the heap, bytes", "bytes/backend beyond its key")
		t.row(fmt.Sprintf("%.1f", float64(mem.HeapBytes)/1e6), fmt.Sprintf("%.0f", mem.BytesPerBackend),
			fmt.Sprintf("%.1f", mem.KeyBytes), fmt.Sprintf("%.1f", mem.KeyHeapBytes), fmt.Sprintf("%.0f", mem.BeyondKey))
		t.flush()
	}
	if s := r.Shutdown; s != nil {
		fmt.Fprintf(out, "\n5. Shutdown: %s backends tracked%s\n\n", count(float64(s.Backends)), loadNote(s.OtherCPUPercent))
		t.row("Worker.Run returned, ms", "connection drained and closed, ms")
		t.row(fmt.Sprintf("%.1f", s.RunReturnMS), fmt.Sprintf("%.1f", s.ClosedMS))
		t.flush()
	}
	if a := r.Admin; a != nil {
		a.print(out, t)
	}
	if h := r.Herd; h != nil {
		h.print(out, t)
	}
	if d := r.Durable; d != nil {
		d.print(out, t)
	}
	if p := r.Process; p != nil {
		p.print(out, t)
	}
	if c := r.Cluster; c != nil {
		c.print(out, t, r.Machine)
	}
	fmt.Fprintln(out, "\nTargets")
	fmt.Fprintln(out)
	t.row("target", "want", "got", "verdict")
	for _, tg := range r.Targets {
		verdict := "MISSED"
		if tg.Met {
			verdict = "met"
		}
		t.row(tg.Name, tg.Want, tg.Got, verdict)
	}
	t.flush()
	fmt.Fprintf(out, "\nwall time %.1f s\n", r.WallSeconds)
}

func ratio(a, b float64) string {
	if b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0fx", a/b)
}
