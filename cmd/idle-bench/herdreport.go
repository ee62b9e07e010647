package main

import (
	"fmt"
	"io"
	"math"
)

// herdSpreadTolerance is how far the emission spread may stray from
// (backends - burst) / rate and still meet its target.
const herdSpreadTolerance = 0.10

// judge checks the herd's targets: the events spread over (backends -
// burst) / rate, none early, missing or duplicated, and the prober's p99
// within 1.5x + 1 ms of its baseline.
func (h *herdResult) judge(add judgeFunc) {
	name := fmt.Sprintf("herd (%s due at once, QuiesceRate %s)", count(float64(h.Backends)), count(float64(h.QuiesceRate)))
	l := h.Lateness
	spreadOK := l.Count > 0 && math.Abs(h.SpreadMS-h.ExpectedSpreadMS) <= herdSpreadTolerance*max(h.ExpectedSpreadMS, 100)
	add(name+": emission spread", fmt.Sprintf("%.0f ms ±%.0f%%", h.ExpectedSpreadMS, 100*herdSpreadTolerance),
		fmt.Sprintf("%.0f ms", h.SpreadMS), spreadOK)
	bad := l.Early + l.Missing + l.Duplicates + l.Unexpected + int(h.WorkerDropped+h.PublishErrors+h.StoreFenced)
	add(name+": events early/missing/duplicate", "0", fmt.Sprintf("%d early, %d missing, %d duplicate, %d unexpected, %d dropped, %d not sent",
		l.Early, l.Missing, l.Duplicates, l.Unexpected, h.WorkerDropped, h.PublishErrors+h.StoreFenced), bad == 0)
	limit := 1.5*h.Baseline.P99MS + 1
	ok := h.During.Count > 0 && h.Baseline.Count > 0 && h.DuringLost+h.BaselineLost == 0
	add(name+": heartbeat RTT p99", fmt.Sprintf("<= 1.5 x %.2f + 1 = %.2f ms", h.Baseline.P99MS, limit),
		fmt.Sprintf("%.2f ms (%.2fx)", h.During.P99MS, h.During.P99MS/math.Max(h.Baseline.P99MS, 1e-3)), ok && h.During.P99MS <= limit)
}

// print writes the herd section's tables.
func (h *herdResult) print(out io.Writer, t *table) {
	fmt.Fprintf(out, "\n7. Herd: %s backends due at once (deadline span %.1f ms), QuiesceRate %s/s (burst %s); %s; heartbeats sent in %.2f s%s\n\n",
		count(float64(h.Backends)), h.Lateness.DeadlineSpanMS, count(float64(h.QuiesceRate)), count(float64(h.Burst)), h.Persistence,
		h.PublishSeconds, loadNote(h.OtherCPUPercent))
	l := h.Lateness
	t.row("events", "spread ms", "expected ms", "peak events in 1 s", "early", "missing", "duplicate", "lateness p50 ms", "p99 ms", "max ms", "held back max", "GC cycles (pause ms)")
	t.row(fmt.Sprint(l.Count), fmt.Sprintf("%.0f", h.SpreadMS), fmt.Sprintf("%.0f", h.ExpectedSpreadMS), count(float64(h.PeakPerSecond)),
		fmt.Sprint(l.Early), fmt.Sprint(l.Missing), fmt.Sprint(l.Duplicates), f2(l.P50MS), f2(l.P99MS), f2(l.MaxMS),
		count(float64(h.HeldBackMax)), fmt.Sprintf("%d (%.2f)", h.GCCycles, h.GCPauseMS))
	t.flush()
	when := "after the start of"
	if h.CaughtUpEarly {
		when = "before"
	}
	fmt.Fprintf(out, "\nHeartbeat prober (%d backends in turn, one request every %.0f ms): %.1f s without a herd just before (the store had stored the herd's records %.1f ms after its last heartbeat, %s the baseline), then from the first deadline to the last event\n\n",
		herdProbeKeys, h.IntervalMS, h.BaselineSeconds, h.CaughtUpMS, when)
	t.row("phase", "heartbeats", "RTT mean ms", "p50 ms", "p99 ms", "max ms", "this process's CPU, % of the machine")
	for _, p := range []struct {
		name string
		s    rttSummary
		lost int
		cpu  float64
	}{{"no herd", h.Baseline, h.BaselineLost, h.BaselineCPUPercent}, {"herd", h.During, h.DuringLost, h.HerdCPUPercent}} {
		t.row(p.name, fmt.Sprintf("%d (%d lost)", p.s.Count, p.lost), f2(p.s.MeanMS), f2(p.s.P50MS), f2(p.s.P99MS), f2(p.s.MaxMS),
			fmt.Sprintf("%.0f", p.cpu))
	}
	t.row("herd / no herd", "", ratio2(h.During.MeanMS, h.Baseline.MeanMS), ratio2(h.During.P50MS, h.Baseline.P50MS),
		ratio2(h.During.P99MS, h.Baseline.P99MS), ratio2(h.During.MaxMS, h.Baseline.MaxMS), "")
	t.flush()
	fmt.Fprintf(out, "\nAfterwards: %d store writes acknowledged, %d failed (each retried), %d fenced; %d redeliveries, %d dropped heartbeats.\n",
		h.StoreWrites, h.StoreFailures, h.StoreFenced, h.Redeliveries, h.WorkerDropped)
}
