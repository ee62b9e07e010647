package main

import (
	"fmt"
	"io"

	"github.com/idle-worker/idle-worker/internal/workerproc"
)

// Targets of the process section (the issue's, at 1M backends).
const (
	processReadyMS = 2000
	processRSSMB   = 600
)

// mb formats bytes in MB (10^6 bytes).
func mb(b int64) string { return fmt.Sprintf("%.0f", float64(b)/1e6) }

// judge checks the process section's targets.
func (p *processResult) judge(add judgeFunc) {
	name := fmt.Sprintf("process (%s backends)", count(float64(p.Backends)))
	o := p.Crash.Outcome
	add(name+": kill -9 right after the last reply: restored / answered >= 50 ms before", "= 1",
		fmt.Sprintf("%s / %s (%s lost)", count(float64(o.RequiredTracked)), count(float64(o.Required)), count(float64(o.Lost()))),
		o.Required > 0 && o.Lost() == 0)
	add(name+": kill -9: restart ready", fmt.Sprintf("<= %d ms (at 1M)", processReadyMS), fmt.Sprintf("%.0f ms", p.Crash.ReadyMS),
		p.Crash.ReadyMS > 0 && p.Crash.ReadyMS <= processReadyMS)
	g := p.Graceful.Outcome
	add(name+": SIGTERM: restored / answered", "= 1", fmt.Sprintf("%s / %s", count(float64(g.RequiredTracked)), count(float64(g.Required))),
		g.Required == p.Backends && g.Lost() == 0)
	add(name+": SIGTERM: restart ready", fmt.Sprintf("<= %d ms (at 1M)", processReadyMS), fmt.Sprintf("%.0f ms", p.Graceful.ReadyMS),
		p.Graceful.ReadyMS > 0 && p.Graceful.ReadyMS <= processReadyMS)
	if s := p.Graceful.Settled; s != nil {
		add(name+": RSS after the last reply + settle", fmt.Sprintf("<= %d MB (at 1M)", processRSSMB), mb(s.RSS)+" MB",
			s.RSS > 0 && s.RSS <= processRSSMB*1e6)
	}
	add(name+": peak RSS (VmHWM, every process)", fmt.Sprintf("<= %d MB (at 1M)", processRSSMB), mb(p.PeakHWM)+" MB",
		p.PeakHWM > 0 && p.PeakHWM <= processRSSMB*1e6)
}

// print writes the process section's tables.
func (p *processResult) print(out io.Writer, t *table) {
	fmt.Fprintf(out, "\n9. Process: the idle-worker binary (%s) with its embedded nats-server and default store in a directory, driven from outside%s\n",
		p.Binary, loadNote(p.OtherCPUPercent))
	rate := count(float64(p.Rate)) + "/s"
	if p.Rate < 0 {
		rate = "unpaced"
	}
	fmt.Fprintf(out, "\nRegistration: %s new backends' first heartbeat requests at a target of %s from %d connections, at most %d unanswered; memory from /proc/<pid>/status (MB = 10^6 bytes)\n\n",
		count(float64(p.Backends)), rate, p.Conns, p.Window)
	t.row("run", "fresh start to ready ms", "all answered ms", "answered/s", "RSS at last reply MB", "VmHWM MB",
		fmt.Sprintf("RSS after %.0f ms MB", p.SettleMS), "VmHWM MB")
	for _, r := range []processRun{p.Graceful, p.Crash} {
		settledRSS, settledHWM := "-", "-"
		if s := r.Settled; s != nil {
			settledRSS, settledHWM = mb(s.RSS), mb(s.HWM)
		}
		t.row("then "+r.Signal, f2(r.FirstReadyMS), f2(ms(r.Registration.LastReply)), count(r.Registration.PerSecond),
			mb(r.Answered.RSS), mb(r.Answered.HWM), settledRSS, settledHWM)
	}
	t.flush()
	fmt.Fprintf(out, "\nRestart on the same store: SIGTERM after the settle time, or SIGKILL right after the last reply; times from the new process's start; required = answered at least %v before the signal (SIGTERM: every reply)\n\n",
		workerproc.DefaultMargin)
	t.row("stopped by", "stop ms", "ready ms", "restored count ms", "tracked", "required restored", "lost",
		"answered within the margin, restored", "RSS after restore MB", "VmHWM MB")
	for _, r := range []processRun{p.Graceful, p.Crash} {
		o := r.Outcome
		stop, restored := "-", f2(r.RestoredMS)
		if r.StopMS > 0 {
			stop = f2(r.StopMS)
		}
		if !r.AllRestored {
			restored += " (final count, short)"
		}
		t.row(r.Signal, stop, f2(r.ReadyMS), restored, count(float64(r.Tracked)),
			fmt.Sprintf("%s / %s", count(float64(o.RequiredTracked)), count(float64(o.Required))), count(float64(o.Lost())),
			fmt.Sprintf("%s / %s", count(float64(o.LateTracked)), count(float64(o.Late))), mb(r.Restarted.RSS), mb(r.Restarted.HWM))
	}
	t.flush()
	if o := p.Crash.Outcome; o.Lost() > 0 {
		fmt.Fprintf(out, "\nkill -9: %v\n", o)
	}
}
