package main

import (
	"fmt"
	"io"
)

// judgeFunc records one target: its name, what is wanted, what was got,
// and whether it was met.
type judgeFunc func(name, want, got string, met bool)

// baseline returns the phase without admin calls, if any.
func (a *adminResult) baseline() (adminPhase, bool) {
	for _, p := range a.Phases {
		if p.Match == "" {
			return p, true
		}
	}
	return adminPhase{}, false
}

// judge checks the admin section's targets: heartbeats within 5 ms at p99
// and 20 ms at most during each list loop and during the pattern quiesce,
// every list exact, the quiesce answered within a second and every event
// delivered once.
func (a *adminResult) judge(add judgeFunc) {
	rtt := func(phase string, h rttSummary, lost int) {
		ok := h.Count > 0 && lost == 0
		add("heartbeat RTT p99 during "+phase, "<= 5 ms", fmt.Sprintf("%.2f ms", h.P99MS), ok && h.P99MS <= 5)
		add("heartbeat RTT max during "+phase, "<= 20 ms", fmt.Sprintf("%.2f ms", h.MaxMS), ok && h.MaxMS <= 20)
	}
	for _, p := range a.Phases {
		if p.Match == "" {
			continue
		}
		rtt(p.Name, p.Heartbeats, p.HeartbeatErrors)
		add("lists during "+p.Name+": answered and exact", "> 0, 0 wrong",
			fmt.Sprintf("%d, %d wrong", p.Lists.Count, p.ListErrors), p.Lists.Count > 0 && p.ListErrors == 0)
	}
	if q := a.Quiesce; q != nil {
		name := fmt.Sprintf("pattern quiesce (%s of %s, %s)", count(float64(q.Want)), count(float64(a.Backends)), q.Kind)
		add(name+": reply", "<= 1 s", fmt.Sprintf("%.1f ms", q.ReplyMS), q.ReplyOK && q.ReplyMS <= 1000)
		rtt(name, q.Heartbeats, q.HeartbeatErrors)
		bad := q.Missing + q.Duplicates + q.Unexpected
		add(name+": events", fmt.Sprintf("%d, each once", q.Want),
			fmt.Sprintf("%d (quiesced %d; %d missing, %d duplicate, %d unexpected) in %.0f ms",
				q.Events, q.Quiesced, q.Missing, q.Duplicates, q.Unexpected, q.AllEventsMS),
			q.ReplyOK && q.Quiesced == q.Want && q.Events == q.Want && bad == 0)
	}
}

// print writes the admin section's tables.
func (a *adminResult) print(out io.Writer, t *table) {
	fmt.Fprintf(out, "\n6. Admin under load: %s backends; a heartbeat request every %.0f ms from one connection; %d client(s) listing {\"limit\":%d} in a loop; %.1f s per phase%s\n\n",
		count(float64(a.Backends)), a.IntervalMS, a.Clients, adminListLimit, a.PhaseSeconds, loadNote(a.OtherCPUPercent))
	t.row("phase", "match", "heartbeats", "RTT mean ms", "p50 ms", "p99 ms", "max ms", "lists", "list p50 ms", "list max ms", "list total", "GC cycles (pause ms)")
	for _, p := range a.Phases {
		h, l := p.Heartbeats, p.Lists
		list := []string{"", "", "", ""}
		if p.Match != "" {
			list = []string{fmt.Sprintf("%d (%d wrong)", l.Count, p.ListErrors), f2(l.P50MS), f2(l.MaxMS), count(float64(p.ListTotal))}
		}
		row := append([]string{p.Name, p.Match, fmt.Sprintf("%d (%d lost)", h.Count, p.HeartbeatErrors),
			f2(h.MeanMS), f2(h.P50MS), f2(h.P99MS), f2(h.MaxMS)}, list...)
		t.row(append(row, fmt.Sprintf("%d (%.2f)", p.GCCycles, p.GCPauseMS))...)
	}
	t.flush()
	q := a.Quiesce
	if q == nil {
		return
	}
	fmt.Fprintf(out, "\nPattern quiesce, last: one P.admin.quiesce {\"match\":%q} (%s: the walk visits all %s keys) matching %s running backends with a 1 h timeout, QuiesceRate %s; the prober runs from the request to the last event's arrival\n\n",
		q.Match, q.Kind, count(float64(a.Backends)), count(float64(q.Want)), quiesceRate(q.QuiesceRate))
	t.row("reply ms", "quiesced", "first event ms", "last event ms", "events/s", "arrived (missing, dup, unexpected)", "draining after",
		"heartbeats", "RTT p50 ms", "p99 ms", "max ms", "GC cycles (pause ms)", "this process's CPU, % of the machine")
	rate := "-"
	if q.AllEventsMS > 0 {
		rate = count(float64(q.Events) / (q.AllEventsMS / 1000))
	}
	t.row(fmt.Sprintf("%.1f", q.ReplyMS), fmt.Sprint(q.Quiesced), fmt.Sprintf("%.1f", q.FirstEventMS), fmt.Sprintf("%.1f", q.AllEventsMS), rate,
		fmt.Sprintf("%d (%d, %d, %d)", q.Events, q.Missing, q.Duplicates, q.Unexpected), fmt.Sprint(q.Draining),
		fmt.Sprintf("%d (%d lost)", q.Heartbeats.Count, q.HeartbeatErrors), f2(q.Heartbeats.P50MS), f2(q.Heartbeats.P99MS), f2(q.Heartbeats.MaxMS),
		fmt.Sprintf("%d (%.2f)", q.GCCycles, q.GCPauseMS), fmt.Sprintf("%.0f", q.CPUPercent))
	if b, ok := a.baseline(); ok {
		t.row("", "", "", "", "", "", "", "over no admin calls", ratio2(q.Heartbeats.P50MS, b.Heartbeats.P50MS),
			ratio2(q.Heartbeats.P99MS, b.Heartbeats.P99MS), ratio2(q.Heartbeats.MaxMS, b.Heartbeats.MaxMS), "", "")
	}
	t.flush()
}

// ratio2 is a/b with two decimals, or "-" when b is not positive.
func ratio2(a, b float64) string {
	if b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

// quiesceRate describes a WorkerConfig.QuiesceRate.
func quiesceRate(r int) string {
	if r <= 0 {
		return "0 (unlimited)"
	}
	return count(float64(r)) + "/s"
}
