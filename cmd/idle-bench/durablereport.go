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
	// durableWaitMS bounds what waiting for durability adds to a first
	// heartbeat's reply (p99, durable - memory). The issue asks for
	// "answered -> durable" p99 <= 50 ms; with replies that wait for the
	// store's acknowledgement that delay is zero, and the wait moves into
	// the reply, where this bounds it instead.
	durableWaitMS  = 50
	restartReadyMS = 2000
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
func paths[T any](p []T) (mem, dur T, ok bool) {
	if len(p) != 2 {
		return mem, dur, false
	}
	return p[0], p[1], true
}

// judge checks the durable section's targets.
func (d *durableResult) judge(add judgeFunc) {
	if mem, dur, ok := paths(d.Burst); ok {
		name := fmt.Sprintf("durable burst (%s due within %.0f ms)", count(float64(dur.Backends)), d.BurstMS)
		l := dur.Lateness
		if d.Limit.Rounds > 0 { // not when -durable-parts left the limit out
			share := dur.PerSecond / math.Max(d.Limit.PerSecond, 1e-9)
			add(name+": events/s durable / limit", fmt.Sprintf(">= %.2f", burstRateShare),
				fmt.Sprintf("%.2f (%s / %s; memory %s)", share, count(dur.PerSecond), count(d.Limit.PerSecond), count(mem.PerSecond)),
				d.Limit.PerSecond > 0 && l.Count > 0 && share >= burstRateShare)
			lim := burstP99OverLimit * d.limitBurstMS(dur.Backends)
			add(name+": durable p99", fmt.Sprintf("<= %.2f x %.0f = %.0f ms", burstP99OverLimit, d.limitBurstMS(dur.Backends), lim),
				fmt.Sprintf("%.0f ms (memory %.0f ms)", l.P99MS, mem.Lateness.P99MS), l.Count > 0 && lim > 0 && l.P99MS <= lim)
		}
		add(name+": durable max", fmt.Sprintf("<= p99 + %d = %.0f ms", burstMaxOverP99MS, l.P99MS+burstMaxOverP99MS),
			fmt.Sprintf("%.0f ms", l.MaxMS), l.Count > 0 && l.MaxMS <= l.P99MS+burstMaxOverP99MS)
		add(name+": durable events early/missing/duplicate", "0", eventFaults(dur), eventFaultCount(dur) == 0)
	}
	if mem, dur, ok := paths(d.Spread); ok {
		name := fmt.Sprintf("durable spread (%s due within %.0f ms)", count(float64(dur.Backends)), d.SpreadMS)
		lim := spreadP99Factor*mem.Lateness.P99MS + spreadP99SlackMS
		l := dur.Lateness
		add(name+": durable p99", fmt.Sprintf("<= %.1f x %.2f + %d = %.2f ms", spreadP99Factor, mem.Lateness.P99MS, spreadP99SlackMS, lim),
			fmt.Sprintf("%.2f ms (%s)", l.P99MS, ratio2(l.P99MS, mem.Lateness.P99MS)), l.Count > 0 && mem.Lateness.Count > 0 && l.P99MS <= lim)
		add(name+": durable max", fmt.Sprintf("<= %d ms", spreadMaxMS), fmt.Sprintf("%.2f ms", l.MaxMS), l.Count > 0 && l.MaxMS <= spreadMaxMS)
		add(name+": durable events early/missing/duplicate", "0", eventFaults(dur), eventFaultCount(dur) == 0)
	}
	if mem, dur, ok := paths(d.Register); ok {
		name := fmt.Sprintf("durable registration (%s new backends)", count(float64(dur.Backends)))
		share := dur.PerSecond / math.Max(mem.PerSecond, 1e-9)
		add(name+": answered/s durable / memory", fmt.Sprintf(">= %.2f, none refused", registerShare),
			fmt.Sprintf("%.2f (%s / %s), %d refused", share, count(dur.PerSecond), count(mem.PerSecond), mem.Refused+dur.Refused),
			share >= registerShare && mem.Refused+dur.Refused == 0)
		wait := dur.Reply.P99MS - mem.Reply.P99MS
		add(name+": first-heartbeat reply p99, durable - memory (answered implies durable)", fmt.Sprintf("<= %d ms", durableWaitMS),
			fmt.Sprintf("%.1f ms (%.1f - %.1f)", wait, dur.Reply.P99MS, mem.Reply.P99MS),
			dur.Reply.Count == dur.Backends && mem.Reply.Count > 0 && wait <= durableWaitMS)
	}
	if rs := d.Restart; rs != nil {
		name := fmt.Sprintf("durable restart (%s backends)", count(float64(rs.Backends)))
		add(name+": ready", fmt.Sprintf("<= %d ms (the issue's target, at 1M)", restartReadyMS), fmt.Sprintf("%.0f ms", rs.ReadyMS), rs.ReadyMS <= restartReadyMS)
		add(name+": restored / N", "1", fmt.Sprintf("%.4f (%s of %s)", rs.restoredShare(), count(float64(rs.Restored)), count(float64(rs.Backends))),
			rs.Restored == int64(rs.Backends))
	}
}

// eventFaults describes what went wrong with a path's events, and
// eventFaultCount counts it.
func eventFaults(p durableTimely) string {
	l := p.Lateness
	return fmt.Sprintf("%d early, %d missing, %d duplicate, %d unexpected, %d dropped, %d not sent",
		l.Early, l.Missing, l.Duplicates, l.Unexpected, p.WorkerDropped, p.PublishErrors+p.StoreFenced)
}

func eventFaultCount(p durableTimely) int {
	l := p.Lateness
	return l.Early + l.Missing + l.Duplicates + l.Unexpected + int(p.WorkerDropped+p.PublishErrors+p.StoreFenced)
}

// restoredShare is Restored / Backends.
func (rs *restartResult) restoredShare() float64 {
	if rs.Backends <= 0 {
		return 0
	}
	return float64(rs.Restored) / float64(rs.Backends)
}

// print writes the durable section's tables.
func (d *durableResult) print(out io.Writer, t *table) {
	fmt.Fprintf(out, "\n8. Durable path: %s%s\n", d.Persistence, loadNote(d.OtherCPUPercent))
	if l := d.Limit; l.Rounds > 0 {
		fmt.Fprintf(out, "\nThe limit: a stream made by store.Open, into which a bare jetstream.PublishMsgAsync publisher (window %s) stores %s events (the worker's JSON for keys dur.<i>, %.0f bytes on average) with Nats-Msg-Id, unfenced, on P.store.qout.<p>.<K>; the stream stores them as P.quiesce.<K> and republishes them there, to a core subscriber; best of %d round(s)\n\n",
			count(limitWindow), count(float64(l.Events)), l.BodyBytes, l.Rounds)
		t.row("events", "last seen by a core subscriber, ms", "all acknowledged, ms", "events/s (seen)", "stored in the stream", "missing", "duplicate", "ack errors", "rounds, ms")
		t.row(count(float64(l.Events)), f2(l.SeenMS), f2(l.StoredMS), count(l.PerSecond), count(float64(l.StreamMsgs)), fmt.Sprint(l.Missing),
			fmt.Sprint(l.Duplicates), fmt.Sprint(l.AckErrors), msList(l.RoundsMS))
		t.flush()
	}
	for _, part := range []struct {
		title  string
		spanMS float64
		p      []durableTimely
	}{{"Burst", d.BurstMS, d.Burst}, {"Spread", d.SpreadMS, d.Spread}} {
		mem, dur, ok := paths(part.p)
		if !ok {
			continue
		}
		fmt.Fprintf(out, "\n%s: %s backends due within %.0f ms; lateness = arrival - deadline; events/s = events over first deadline to last arrival (at most %s/s: the deadlines' own pace); store caught up = heartbeats' records all stored, ms after the last heartbeat (before the first deadline?)\n\n",
			part.title, count(float64(dur.Backends)), part.spanMS, count(1000*float64(dur.Backends)/part.spanMS))
		t.row("path", "events/s", "p50 ms", "p99 ms", "max ms", "missing", "duplicate", "early", "store caught up ms", "store writes", "failed", "fenced")
		for _, p := range part.p {
			caught := "-"
			if p.CaughtUpMS > 0 {
				caught = fmt.Sprintf("%.1f (%s)", p.CaughtUpMS, yesNo(p.CaughtUpEarly))
			}
			t.row(p.Path, count(p.PerSecond), f2(p.Lateness.P50MS), f2(p.Lateness.P99MS), f2(p.Lateness.MaxMS), fmt.Sprint(p.Lateness.Missing),
				fmt.Sprint(p.Lateness.Duplicates), fmt.Sprint(p.Lateness.Early), caught, count(float64(p.StoreWrites)),
				fmt.Sprint(p.StoreFailures), fmt.Sprint(p.StoreFenced))
		}
		t.row("durable / memory", ratio2(dur.PerSecond, mem.PerSecond), ratio2(dur.Lateness.P50MS, mem.Lateness.P50MS),
			ratio2(dur.Lateness.P99MS, mem.Lateness.P99MS), ratio2(dur.Lateness.MaxMS, mem.Lateness.MaxMS), "", "", "", "", "", "", "")
		if part.title == "Burst" && d.Limit.PerSecond > 0 {
			lim := d.limitBurstMS(dur.Backends)
			t.row("limit (same events)", count(d.Limit.PerSecond), "", f2(lim)+" (time)", "", "", "", "", "", "", "", "")
			t.row("durable / limit", ratio2(dur.PerSecond, d.Limit.PerSecond), "", ratio2(dur.Lateness.P99MS, lim), "", "", "", "", "", "", "", "")
		}
		t.flush()
	}
	if mem, dur, ok := paths(d.Register); ok {
		fmt.Fprintf(out, "\nRegistration: %s new backends' first heartbeat requests from %d connections, at most %d unanswered each; reply = request publish to reply (a durable worker replies once the record's log message is acknowledged: answered implies durable)\n\n",
			count(float64(dur.Backends)), dur.Connections, dur.Window)
		t.row("path", "all answered ms", "answered/s", "reply p50 ms", "p99 ms", "max ms", "refused", "store writes (records each)", "tracked")
		for _, r := range d.Register {
			writes := "-"
			if r.StoreWrites > 0 {
				writes = fmt.Sprintf("%s (%.0f)", count(float64(r.StoreWrites)), float64(r.Backends)/float64(r.StoreWrites))
				if r.StoreFailures > 0 {
					writes += fmt.Sprintf(", %d failed", r.StoreFailures)
				}
			}
			t.row(r.Path, f2(r.AnsweredMS), count(r.PerSecond), f2(r.Reply.P50MS), f2(r.Reply.P99MS), f2(r.Reply.MaxMS),
				fmt.Sprint(r.Refused), writes, count(float64(r.Tracked)))
		}
		t.row("durable / memory", ratio2(dur.AnsweredMS, mem.AnsweredMS), ratio2(dur.PerSecond, mem.PerSecond),
			ratio2(dur.Reply.P50MS, mem.Reply.P50MS), ratio2(dur.Reply.P99MS, mem.Reply.P99MS), ratio2(dur.Reply.MaxMS, mem.Reply.MaxMS), "", "", "")
		t.flush()
	}
	if rs := d.Restart; rs != nil {
		fmt.Fprintf(out, "\nRestart on the registration's stream: Run cancelled (as on SIGTERM; the store closed with it), then a new worker (store.Open and Load included) until Ready\n\n")
		t.row("backends", "stop ms", "ready ms", "restored", "restored / N")
		t.row(count(float64(rs.Backends)), f2(rs.StopMS), f2(rs.ReadyMS), count(float64(rs.Restored)), fmt.Sprintf("%.4f", rs.restoredShare()))
		t.flush()
	}
}

// yesNo is "yes" or "no".
func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// msList formats milliseconds as "a, b, c".
func msList(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.0f", x)
	}
	return strings.Join(s, ", ")
}
