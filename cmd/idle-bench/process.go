package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/internal/workerproc"
)

// processBound bounds every wait of the process section for the binary:
// to serve, to stop, to restore.
const processBound = 2 * time.Minute

// restoreQuiet is how long the tracked count must stay put after a
// restart, short of the backends wanted, before the section takes it as
// final.
const restoreQuiet = time.Second

// processResult is the process section: the built idle-worker binary with
// its embedded nats-server and default store, driven only from outside.
type processResult struct {
	Binary   string  `json:"binary"`
	Backends int     `json:"backends"`
	Rate     int     `json:"target_rate"`
	Window   int     `json:"window"`
	Conns    int     `json:"connections"`
	SettleMS float64 `json:"settle_ms"`
	// Graceful is registered, measured, stopped with SIGTERM and
	// restarted; Crash is registered and killed with SIGKILL right after
	// its last reply, then restarted.
	Graceful processRun `json:"sigterm"`
	Crash    processRun `json:"sigkill"`
	// PeakHWM is the largest VmHWM of every process of the section.
	PeakHWM         int64   `json:"peak_hwm_bytes"`
	OtherCPUPercent float64 `json:"other_cpu_percent"`
}

// processRun is one binary registering the backends on a fresh store,
// stopped by Signal, and its restart on that store.
type processRun struct {
	Signal string `json:"signal"`
	// FirstReadyMS is the fresh process's time from its start to /readyz.
	FirstReadyMS float64 `json:"first_ready_ms"`
	// Registration is the first heartbeats' sender; its PerSecond is the
	// registration rate.
	Registration workerproc.SendResult `json:"registration"`
	// Answered is the memory right after the last reply; Settled after
	// the settle time (SIGTERM run only).
	Answered workerproc.Memory  `json:"memory_at_last_reply"`
	Settled  *workerproc.Memory `json:"memory_after_settle,omitempty"`
	// StopMS is from SIGTERM to the exit (SIGTERM run only).
	StopMS float64 `json:"stop_ms,omitempty"`
	// ReadyMS is the restart's time from the process start to /readyz;
	// RestoredMS to the tracked count reaching Outcome.Required (or its
	// final value, when it never does: AllRestored false).
	ReadyMS     float64 `json:"restart_ready_ms"`
	RestoredMS  float64 `json:"restart_restored_ms"`
	AllRestored bool    `json:"all_restored"`
	// Tracked is the restarted worker's count of backends (/metrics);
	// Outcome compares it key by key with the replies before the stop.
	Tracked int                `json:"tracked"`
	Outcome workerproc.Outcome `json:"outcome"`
	// Restarted is the restarted process's memory once restored.
	Restarted workerproc.Memory `json:"memory_after_restart"`
}

// processKeys names the section's backends.
var processKeys = workerproc.Keys{Instance: "proc"}

// measureProcess runs the process section: a SIGTERM run, then a SIGKILL
// run, each on a fresh store.
func measureProcess(ctx context.Context, cfg config) (processResult, error) {
	r := processResult{Binary: cfg.WorkerBin, Backends: cfg.ProcessBackends, Rate: cfg.ProcessRate,
		Window: cfg.ProcessWindow, Conns: cfg.ProcessConns, SettleMS: ms(cfg.ProcessSettle)}
	if _, err := os.Stat(cfg.WorkerBin); err != nil {
		return r, fmt.Errorf("no idle-worker binary (make build, which make bench runs first, puts it in bin/; or pass -worker-bin): %w", err)
	}
	var err error
	if r.Graceful, err = processRunOnce(ctx, cfg, false, &r.PeakHWM); err != nil {
		return r, fmt.Errorf("SIGTERM run: %w", err)
	}
	if r.Crash, err = processRunOnce(ctx, cfg, true, &r.PeakHWM); err != nil {
		return r, fmt.Errorf("SIGKILL run: %w", err)
	}
	return r, nil
}

// processRunOnce starts the binary on a fresh store, registers the
// backends, stops it (SIGKILL right after the last reply when kill, else
// SIGTERM after the settle time) and restarts it on the same store.
func processRunOnce(ctx context.Context, cfg config, kill bool, peak *int64) (processRun, error) {
	run := processRun{Signal: "SIGTERM"}
	if kill {
		run.Signal = "SIGKILL"
	}
	dir, err := os.MkdirTemp("", "idle-bench-process-")
	if err != nil {
		return run, err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(ctx, processBound+time.Duration(cfg.ProcessBackends)*20*time.Microsecond)
	defer cancel()
	p, err := workerproc.Start(workerproc.Config{Binary: cfg.WorkerBin, Dir: dir, Env: map[string]string{
		"IDLE_MAX_BACKENDS": strconv.Itoa(max(cfg.ProcessBackends, 1_000_000)),
	}})
	if err != nil {
		return run, err
	}
	defer p.Close()
	ready, err := p.WaitReady(ctx)
	if err != nil {
		return run, err
	}
	run.FirstReadyMS = ms(ready)
	s, err := workerproc.NewSender(workerproc.SendConfig{URL: p.URL(), Keys: processKeys, N: cfg.ProcessBackends,
		Rate: cfg.ProcessRate, Window: cfg.ProcessWindow, Conns: cfg.ProcessConns})
	if err != nil {
		return run, err
	}
	run.Registration, err = s.Run(ctx)
	if err != nil {
		return run, fmt.Errorf("registration: %w", err)
	}
	if run.Answered, err = p.Memory(); err != nil {
		return run, err
	}
	var stopped time.Duration // since the sender's start
	if kill {
		stopped = time.Since(s.Start())
		if err := p.Kill(); err != nil {
			return run, err
		}
	} else {
		select {
		case <-time.After(cfg.ProcessSettle):
		case <-ctx.Done():
			return run, ctx.Err()
		}
		m, err := p.Memory()
		if err != nil {
			return run, err
		}
		run.Settled = &m
		*peak = max(*peak, m.HWM)
		stopped = time.Since(s.Start())
		took, err := p.Terminate(processBound)
		if err != nil {
			return run, err
		}
		run.StopMS = ms(took)
	}
	*peak = max(*peak, run.Answered.HWM)
	margin := workerproc.DefaultMargin
	if !kill {
		margin = 0 // every reply came before the SIGTERM: all are required
	}
	want := workerproc.Tally(cfg.ProcessBackends, s.ReplyAt, nil, stopped, margin).Required
	q, err := p.Restart()
	if err != nil {
		return run, err
	}
	defer q.Close()
	if err := measureRestart(ctx, q, want, &run); err != nil {
		return run, err
	}
	nc, err := nats.Connect(q.URL(), nats.Name("idle-bench process lister"))
	if err != nil {
		return run, err
	}
	defer nc.Close()
	tracked, err := workerproc.TrackedKeys(ctx, nc, bus.MustSubjects(bus.DefaultPrefix), processKeys, cfg.ProcessBackends)
	if err != nil {
		return run, err
	}
	run.Outcome = workerproc.Tally(cfg.ProcessBackends, s.ReplyAt, tracked, stopped, margin)
	if run.Restarted, err = q.Memory(); err != nil {
		return run, err
	}
	*peak = max(*peak, run.Restarted.HWM)
	if _, err := q.Terminate(processBound); err != nil {
		return run, fmt.Errorf("stopping the restarted worker: %w", err)
	}
	return run, nil
}

// measureRestart waits for the restarted q to be ready, then polls its
// tracked count until it reaches want, or stays put for restoreQuiet.
func measureRestart(ctx context.Context, q *workerproc.Process, want int, run *processRun) error {
	ready, err := q.WaitReady(ctx)
	if err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	run.ReadyMS = ms(ready)
	last, lastAt := -1, time.Duration(0)
	for {
		n, err := q.Tracked(ctx)
		if err != nil && !errors.Is(err, workerproc.ErrNoMetric) {
			return fmt.Errorf("restart: %w", err)
		}
		at := time.Since(q.Started())
		if n != last {
			last, lastAt = n, at
		}
		if n >= want || at-lastAt >= restoreQuiet {
			run.Tracked, run.RestoredMS, run.AllRestored = n, ms(lastAt), n >= want
			return nil
		}
		select {
		case <-time.After(5 * time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("restart: %d of %d tracked: %w", n, want, ctx.Err())
		}
	}
}
