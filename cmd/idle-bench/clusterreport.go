package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// takeoverSlackMS is what issue 11 allows a failover beyond
// IDLE_OWNER_TIMEOUT: a dead worker's backend is quiesced at most
// IDLE_OWNER_TIMEOUT + 1 s after its deadline.
const takeoverSlackMS = 1000

// label names a takeover in the tables and targets.
func (t takeoverResult) label() string {
	if t.Mapped {
		return t.Mode + ", IDLE_MAPPED (no warm state)"
	}
	return t.Mode
}

// faults counts what must not happen in a takeover: an event missing,
// early, with a second id or for no backend of the run, a heartbeat
// dropped, an event not published or refused by the store.
func (t takeoverResult) faults() int {
	l, o := t.Lateness, t.Others
	return l.Missing + l.Early + l.Duplicates + l.Unexpected + o.Missing + o.Early +
		int(t.WorkerDropped+t.PublishErrors+t.StoreFenced)
}

// faultText describes faults.
func (t takeoverResult) faultText() string {
	l, o := t.Lateness, t.Others
	return fmt.Sprintf("%d missing, %d early, %d duplicate ids, %d unexpected, %d dropped, %d not sent",
		l.Missing+o.Missing, l.Early+o.Early, l.Duplicates, l.Unexpected, t.WorkerDropped, t.PublishErrors+t.StoreFenced)
}

// judge checks the cluster section's targets.
func (c *clusterResult) judge(add judgeFunc) {
	for _, t := range c.Takeovers {
		name := fmt.Sprintf("cluster %s (%s backends)", t.label(), count(float64(t.Backends)))
		if !t.Mapped && t.Mode == modeKill.String() {
			limit := c.OwnerTimeoutMS + takeoverSlackMS
			l := t.Lateness
			add(name+": the dead worker's due backends, lateness max", fmt.Sprintf("<= IDLE_OWNER_TIMEOUT + 1 s = %.0f ms", limit),
				fmt.Sprintf("%.0f ms (%s due, first event %.0f ms after the kill)", l.MaxMS, count(float64(t.Due)), t.FirstEventMS),
				t.Due > 0 && l.Count == t.Due && l.MaxMS <= limit)
		}
		add(name+": events missing/early/duplicate", "0", t.faultText(), t.Due > 0 && t.faults() == 0)
	}
	var dropped uint64
	for _, in := range c.Ingest {
		dropped += in.Dropped
		if !in.Mapped || in.Workers < 2 {
			continue
		}
		var sum uint64
		shares := make([]string, len(in.Received))
		for i, g := range in.Received {
			sum += g
			shares[i] = fmt.Sprintf("%.2f", float64(g)/float64(max(in.Messages, 1)))
		}
		add(fmt.Sprintf("cluster ingest, mappings, %d workers: each heartbeat received once, by its owner", in.Workers),
			fmt.Sprintf("foreign 0, received %s in all", count(float64(in.Messages))),
			fmt.Sprintf("foreign %d, received %s (shares %s)", in.Foreign, count(float64(sum)), strings.Join(shares, ", ")),
			in.Foreign == 0 && sum == uint64(in.Messages))
	}
	for _, l := range c.Limits {
		dropped += l.Best.Dropped
	}
	if len(c.Ingest) > 0 {
		add("cluster ingest: heartbeats dropped", "0", fmt.Sprint(dropped), dropped == 0)
	}
}

// print writes the cluster section's tables.
func (c *clusterResult) print(out io.Writer, t *table, m machineInfo) {
	fmt.Fprintf(out, "\n10. Cluster: %d workers, %d partitions, IDLE_OWNER_TIMEOUT %.0f ms; %s%s\n",
		c.Workers, c.Partitions, c.OwnerTimeoutMS, c.How, loadNote(c.OtherCPUPercent))
	if len(c.Takeovers) > 0 {
		k := c.Takeovers[0]
		fmt.Fprintf(out, "\nTakeover: %s backends heartbeat once, with timeouts putting their deadlines within %.0f ms, %.0f ms after the first heartbeat; "+
			"one worker of %d (owning the partitions counted) leaves %s the first deadline. Times from the kill (or the SIGTERM); due = its backends "+
			"with no event before it; overdue = those due before the others had claimed all its partitions; caught up = the last overdue one's event\n\n",
			count(float64(k.Backends)), k.DeadlineSpanMS, k.LeadMS, c.Workers, relative(k.KillAtMS))
		t.row("how", "partitions", "due", "overdue", "released ms", "first claim ms", "all claimed ms", "first event ms", "caught up ms", "last event ms")
		for _, tk := range c.Takeovers {
			released := "-"
			if tk.ReleasedMS > 0 {
				released = fmt.Sprintf("%.0f", tk.ReleasedMS)
			}
			caughtUp := "-"
			if tk.Overdue > 0 {
				caughtUp = fmt.Sprintf("%.0f", tk.CaughtUpMS)
			}
			t.row(tk.label(), fmt.Sprint(tk.LeaverPartitions), count(float64(tk.Due)), count(float64(tk.Overdue)), released,
				fmt.Sprintf("%.0f", tk.FirstClaimMS), fmt.Sprintf("%.0f", tk.ClaimedMS), fmt.Sprintf("%.0f", tk.FirstEventMS),
				caughtUp, fmt.Sprintf("%.0f", tk.LastEventMS))
		}
		t.flush()
		fmt.Fprintf(out, "\nLateness = event arrival - deadline (heartbeat publish + timeout), of the due backends and of every other backend; "+
			"dup ids = backends with a second event id; resent = events repeating an id (allowed); restored = backends the others restored on their claims\n\n")
		t.row("how", "due p50 ms", "p99 ms", "max ms", "missing", "dup ids", "early", "resent", "others p50 ms", "p99 ms", "max ms", "restored")
		for _, tk := range c.Takeovers {
			l, o := tk.Lateness, tk.Others
			t.row(tk.label(), fmt.Sprintf("%.0f", l.P50MS), fmt.Sprintf("%.0f", l.P99MS), fmt.Sprintf("%.0f", l.MaxMS),
				fmt.Sprint(l.Missing+o.Missing), fmt.Sprint(l.Duplicates), fmt.Sprint(l.Early+o.Early), fmt.Sprint(tk.Resent),
				f2(o.P50MS), f2(o.P99MS), f2(o.MaxMS), count(float64(tk.Restored)))
		}
		t.flush()
		fmt.Fprintf(out, "\nA kill is found when the dead worker's membership heartbeats (every %.0f ms) have been missing for IDLE_OWNER_TIMEOUT; "+
			"the others then claim its partitions and restore its backends from the last heartbeat they saw (warm state), so a backend already due "+
			"leaves at once (at most QuiesceRate per second per worker). With IDLE_MAPPED no worker saw the others' heartbeats: a taken-over backend "+
			"gets a full timeout of grace from the claim, by design.\n", c.OwnerTimeoutMS/4)
	}
	if len(c.Ingest) > 0 {
		in := c.Ingest[0]
		fmt.Fprintf(out, "\nIngest: %s heartbeats ({\"idle_timeout_ms\"} bodies) over %s keys across every partition, section 1's publisher; the workers share the "+
			"partitions evenly (Acquire); every key registered first; best of %d round(s); heartbeats/s = applied by their owners, summed; "+
			"received = applied + foreign + dropped, per worker (share of the stream); CPU = this whole process (server, publisher, workers); "+
			"limit = section 1's plain subscriber (counts only) on the same stream, on P.activity.> or, through the mappings, on P.p.>\n\n",
			count(float64(in.Messages)), count(float64(in.Keys)), len(in.Rounds))
		t.row("workers", "routing", "heartbeats/s", "/ 1 worker", "received per worker (share)", "key share", "foreign", "dropped", "process CPU %", "CPU us/heartbeat")
		single := map[bool]float64{}
		for _, in := range c.Ingest {
			if in.Workers == 1 {
				single[in.Mapped] = in.Best.PerSecond
			}
		}
		for _, l := range c.Limits {
			t.row("limit: plain subscriber", routingName(l.Mapped), count(l.Best.PerSecond), "", "", "", "", fmt.Sprint(l.Best.Dropped),
				fmt.Sprintf("%.0f", l.ProcessCPUPercent), f2(l.CPUMicrosPerBeat))
		}
		for _, in := range c.Ingest {
			routing := routingName(in.Mapped)
			recv := make([]string, len(in.Received))
			keyShare := make([]string, len(in.KeyShare))
			for i, g := range in.Received {
				recv[i] = fmt.Sprintf("%s (%.2f)", count(float64(g)), float64(g)/float64(max(in.Messages, 1)))
			}
			for i, s := range in.KeyShare {
				keyShare[i] = fmt.Sprintf("%.2f", s)
			}
			t.row(fmt.Sprint(in.Workers), routing, count(in.Best.PerSecond), ratio2(in.Best.PerSecond, single[in.Mapped]),
				strings.Join(recv, ", "), strings.Join(keyShare, ", "), count(float64(in.Foreign)), fmt.Sprint(in.Dropped),
				fmt.Sprintf("%.0f", in.ProcessCPUPercent), f2(in.CPUMicrosPerBeat))
		}
		t.flush()
		fmt.Fprintf(out, "\nWhat these figures can show, and what not: every worker, the server and the publisher share this machine's %d CPUs (%s), "+
			"so heartbeats/s is what one machine does, not what workers on machines of their own would. What carries over is the work per "+
			"heartbeat: without the mappings every worker receives the whole stream (received shares of 1.00) and each adds its own decoding "+
			"and warm-state notes, so the aggregate can never exceed one worker's ingest; with the mappings each receives only its partitions' "+
			"share (about 1/%d), so on separate machines the aggregate grows with the workers until the NATS servers bound it. Per-worker CPU "+
			"cannot be told apart in one process; received per worker is its measure. The mappings also cost the servers: compare the two limits "+
			"(the server applies partition() to every message it routes; in production on the NATS servers' CPUs, here on the same two).\n", m.CPUs, m.CPUModel, c.Workers)
	}
}

// routingName names how heartbeats reach the workers.
func routingName(mapped bool) string {
	if mapped {
		return "partition mappings"
	}
	return "each receives all"
}

// relative says "X ms before" or "X ms after".
func relative(msOffset float64) string {
	d := time.Duration(msOffset * float64(time.Millisecond)).Round(time.Millisecond)
	if d < 0 {
		return fmt.Sprintf("%v before", -d)
	}
	return fmt.Sprintf("%v after", d)
}
