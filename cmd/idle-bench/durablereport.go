package main

import (
	"fmt"
	"io"
	"math"
	"strings"
)

// Targets of issue 10 for the durable path.
const (
	burstRateShare    = 0.8  // burst: durable events/s >= this x the limit's
	burstP99OverLimit = 1.25 // burst: durable p99 <= this x the limit's time
	burstMaxOverP99MS = 100  // burst: max <= p99 + this
	spreadP99Factor   = 1.5  // spread: durable p99 <= this x memory p99 + spreadP99SlackMS
	spreadP99SlackMS  = 5
	spreadMaxMS       = 50
	registerShare     = 0.8 // registration: durable/memory answered rate
	durableP99MS      = 50  // answered -> durable p99
	restartReadyMS    = 2000
)

// limitBurstMS is the time the limit needed for n events at its rate.
func (d *durableResult) limitBurstMS(n int) float64 {
	if d.Limit.PerSecond <= 0 {
		return 0
	}
	return 1000 * float64(n) / d.Limit.PerSecond
}

// paths returns the memory and durable entries of a pair, and false unless
// both are there.
func paths(p []durableTimely) (mem, dur durableTimely, ok bool) {
	if len(p) != 2 {
		return mem, dur, false
	}
	return p[0], p[1], true
}

// judge checks the durable section's targets.
func (d *durableResult) judge(add judgeFunc) {
	if mem, dur, ok := paths(d.Burst); ok {
		name := fmt.Sprintf("durable burst (%s due within %.0f ms)", count(float64(dur.Backends)), d.BurstMS)
		share := dur.PerSecond / math.Max(d.Limit.PerSecond, 1e-9)
		add(name+": events/s durable / limit", fmt.Sprintf(">= %.2f", burstRateShare),
			fmt.Sprintf("%.2f (%s / %s; memory %s)", share, count(dur.PerSecond), count(d.Limit.PerSecond), count(mem.PerSecond)),
			dur.Lateness.Count > 0 && share >= burstRateShare)
		lim := burstP99OverLimit * d.limitBurstMS(dur.Backends)
		l := dur.Lateness
		add(name+": durable p99", fmt.Sprintf("<= %.2f x %.0f = %.0f ms", burstP99OverLimit, d.limitBurstMS(dur.Backends), lim),
			fmt.Sprintf("%.0f ms (memory %.0f ms)", l.P99MS, mem.Lateness.P99MS), l.Count > 0 && lim > 0 && l.P99MS <= lim)
		add(name+": durable max", fmt.Sprintf("<= p99 + %d = %.0f ms", burstMaxOverP99MS, l.P99MS+burstMaxOverP99MS),
			fmt.Sprintf("%.0f ms", l.MaxMS), l.Count > 0 && l.MaxMS <= l.P99MS+burstMaxOverP99MS)
		bad := l.Early + l.Missing + l.Duplicates + l.Unexpected + int(dur.WorkerDropped+dur.PublishErrors)
		add(name+": durable events early/missing/duplicate", "0", fmt.Sprintf("%d early, %d missing, %d duplicate, %d unexpected, %d dropped",
			l.Early, l.Missing, l.Duplicates, l.Unexpected, dur.WorkerDropped+dur.PublishErrors), bad == 0)
	}
	if mem, dur, ok := paths(d.Spread); ok {
		name := fmt.Sprintf("durable spread (%s due within %.0f ms)", count(float64(dur.Backends)), d.SpreadMS)
		lim := spreadP99Factor*mem.Lateness.P99MS + spreadP99SlackMS
		l := dur.Lateness
		add(name+": durable p99", fmt.Sprintf("<= %.1f x %.2f + %d = %.2f ms", spreadP99Factor, mem.Lateness.P99MS, spreadP99SlackMS, lim),
			fmt.Sprintf("%.2f ms (%s)", l.P99MS, ratio2(l.P99MS, mem.Lateness.P99MS)), l.Count > 0 && mem.Lateness.Count > 0 && l.P99MS <= lim)
		add(name+": durable max", fmt.Sprintf("<= %d ms", spreadMaxMS), fmt.Sprintf("%.2f ms", l.MaxMS), l.Count > 0 && l.MaxMS <= spreadMaxMS)
		bad := l.Early + l.Missing + l.Duplicates + l.Unexpected
		add(name+": durable events early/missing/duplicate", "0",
			fmt.Sprintf("%d early, %d missing, %d duplicate", l.Early, l.Missing, l.Duplicates), bad == 0)
	}
	if len(d.Register) == 2 {
		mem, dur := d.Register[0], d.Register[1]
		name := fmt.Sprintf("durable registration (%s new backends)", count(float64(dur.Backends)))
		share := dur.PerSecond / math.Max(mem.PerSecond, 1e-9)
		add(name+": answered/s durable / memory", fmt.Sprintf(">= %.2f", registerShare),
			fmt.Sprintf("%.2f (%s / %s)", share, count(dur.PerSecond), count(mem.PerSecond)), share >= registerShare)
		l := dur.Durable
		add(name+": answered -> durable p99", fmt.Sprintf("<= %d ms", durableP99MS),
			fmt.Sprintf("%.1f ms (%d of %d samples)", l.P99MS, l.Count, dur.Samples), l.Count > 0 && l.Missing == 0 && l.P99MS <= durableP99MS)
	}
	if rs := d.Restart; rs != nil {
		name := fmt.Sprintf("durable restart (%s backends)", count(float64(rs.Backends)))
		add(name+": ready", fmt.Sprintf("<= %d ms (the issue's target, at 1M)", restartReadyMS), fmt.Sprintf("%.0f ms", rs.ReadyMS), rs.ReadyMS <= restartReadyMS)
		add(name+": restored", count(float64(rs.Backends)), count(float64(rs.Restored)), rs.Restored == int64(rs.Backends))
	}
}

// print writes the durable section's tables.
func (d *durableResult) print(out io.Writer, t *table) {
	fmt.Fprintf(out, "\n8. Durable path: %s%s\n", d.Persistence, loadNote(d.OtherCPUPercent))
	l := d.Limit
	fmt.Fprintf(out, "\nThe limit: a bare jetstream.PublishMsgAsync publisher (window %d) storing %s events of %d bytes with Nats-Msg-Id on P.quiesce.lim.<i> into a stream made by store.OpenQuiesceStream; best of %d round(s)\n\n",
		limitWindow, count(float64(l.Events)), limitEventSize, l.Rounds)
	t.row("events", "last seen by a core subscriber, ms", "all acknowledged, ms", "events/s (seen)", "stored in the stream", "missing", "duplicate", "ack errors", "rounds, ms")
	t.row(count(float64(l.Events)), f2(l.SeenMS), f2(l.StoredMS), count(l.PerSecond), count(float64(l.StreamMsgs)), fmt.Sprint(l.Missing),
		fmt.Sprint(l.Duplicates), fmt.Sprint(l.AckErrors), msList(l.RoundsMS))
	t.flush()
	for _, part := range []struct {
		title  string
		spanMS float64
		p      []durableTimely
	}{{"Burst", d.BurstMS, d.Burst}, {"Spread", d.SpreadMS, d.Spread}} {
		mem, dur, ok := paths(part.p)
		if !ok {
			continue
		}
		fmt.Fprintf(out, "\n%s: %s backends due within %.0f ms; lateness = arrival - deadline; events/s = events over first deadline to last arrival (at most %s/s: the deadlines' own pace)\n\n",
			part.title, count(float64(dur.Backends)), part.spanMS, count(1000*float64(dur.Backends)/part.spanMS))
		t.row("path", "events/s", "p50 ms", "p99 ms", "max ms", "missing", "duplicate", "early", "registry backlog at first deadline", "stream failures")
		for _, p := range part.p {
			t.row(p.Path, count(p.PerSecond), f2(p.Lateness.P50MS), f2(p.Lateness.P99MS), f2(p.Lateness.MaxMS), fmt.Sprint(p.Lateness.Missing),
				fmt.Sprint(p.Lateness.Duplicates), fmt.Sprint(p.Lateness.Early), fmt.Sprint(p.RegistryBacklog), fmt.Sprint(p.StreamFailures))
		}
		t.row("durable / memory", ratio2(dur.PerSecond, mem.PerSecond), ratio2(dur.Lateness.P50MS, mem.Lateness.P50MS),
			ratio2(dur.Lateness.P99MS, mem.Lateness.P99MS), ratio2(dur.Lateness.MaxMS, mem.Lateness.MaxMS), "", "", "", "", "")
		if part.title == "Burst" {
			t.row("limit (same events)", count(l.PerSecond), "", f2(d.limitBurstMS(dur.Backends))+" (time)", "", "", "", "", "", "")
			t.row("durable / limit", ratio2(dur.PerSecond, l.PerSecond), "", ratio2(dur.Lateness.P99MS, d.limitBurstMS(dur.Backends)), "", "", "", "", "", "")
		}
		t.flush()
	}
	if len(d.Register) == 2 {
		mem, dur := d.Register[0], d.Register[1]
		fmt.Fprintf(out, "\nRegistration: %s new backends' first heartbeat requests from %d connections, at most %d unanswered each; answered -> durable: reply to a KV watcher (ordered consumer) seeing the record, %d samples\n\n",
			count(float64(dur.Backends)), dur.Connections, dur.Window, dur.Samples)
		t.row("path", "all answered ms", "answered/s", "all stored ms", "answered -> durable p50 ms", "p99 ms", "max ms", "tracked")
		for _, r := range d.Register {
			stored, p50, p99, mx := "-", "-", "-", "-"
			if r.StoredMS > 0 {
				stored, p50, p99, mx = f2(r.StoredMS), f2(r.Durable.P50MS), f2(r.Durable.P99MS), f2(r.Durable.MaxMS)
			}
			t.row(r.Path, f2(r.AnsweredMS), count(r.PerSecond), stored, p50, p99, mx, count(float64(r.Tracked)))
		}
		t.row("durable / memory", ratio2(dur.AnsweredMS, mem.AnsweredMS), ratio2(dur.PerSecond, mem.PerSecond), "", "", "", "", "")
		t.flush()
	}
	if rs := d.Restart; rs != nil {
		fmt.Fprintf(out, "\nRestart on the registration's store: Run cancelled (as on SIGTERM), then a new worker (store.Open included) until Ready\n\n")
		t.row("backends", "stop ms", "ready ms", "restored")
		t.row(count(float64(rs.Backends)), f2(rs.StopMS), f2(rs.ReadyMS), count(float64(rs.Restored)))
		t.flush()
	}
}

// msList formats milliseconds as "a, b, c".
func msList(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.0f", x)
	}
	return strings.Join(s, ", ")
}
