package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/internal/natstest"
)

// waitBound bounds every wait for a worker or a subscription.
const waitBound = 30 * time.Second

// run measures every section cfg enables, prints the table to out, writes
// the JSON file and returns the results.
func run(ctx context.Context, cfg config, out io.Writer) (*results, error) {
	start := time.Now()
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, err
		}
		defer pprof.StopCPUProfile()
	}
	if cfg.MemProfile != "" {
		defer func() {
			if f, err := os.Create(cfg.MemProfile); err == nil {
				_ = pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	res := &results{Machine: machine(), Config: cfg}
	srv, err := natstest.Run(natstest.JetStream())
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	url := srv.ClientURL()

	for _, body := range []struct{ name, data string }{
		{"empty", ""},
		{"timeout", `{"idle_timeout_ms":60000}`},
	} {
		if !cfg.runs("ingest") {
			break
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		load := sampleCPU()
		r, err := measureIngest(ctx, url, cfg, body.name, []byte(body.data))
		r.OtherCPUPercent = otherLoad(load, sampleCPU())
		if err != nil {
			return nil, fmt.Errorf("ingest (%s bodies): %w", body.name, err)
		}
		res.Ingest = append(res.Ingest, r)
	}
	if cfg.Timely > 0 && cfg.runs("timeliness") {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		load := sampleCPU()
		r, err := measureTimeliness(ctx, url, cfg)
		r.OtherCPUPercent = otherLoad(load, sampleCPU())
		if err != nil {
			return nil, fmt.Errorf("timeliness: %w", err)
		}
		res.Timeliness = &r
		if cfg.TunedMemLimit > 0 {
			load := sampleCPU()
			r, err := measureTunedGC(ctx, url, cfg)
			r.OtherCPUPercent = otherLoad(load, sampleCPU())
			if err != nil {
				return nil, fmt.Errorf("timeliness with a memory-limit GC: %w", err)
			}
			res.TimelinessTunedGC = &r
		}
	}
	if cfg.KVKeys > 0 && cfg.runs("kv") {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		load := sampleCPU()
		r, err := measureKV(ctx, url, cfg)
		r.OtherCPUPercent = otherLoad(load, sampleCPU())
		if err != nil {
			return nil, fmt.Errorf("KV alternative: %w", err)
		}
		res.KV = &r
	}
	if cfg.MemoryBackends > 0 && cfg.runs("memory") {
		r := measureMemory(cfg.MemoryBackends)
		res.Memory = &r
	}
	if cfg.ShutdownBackends > 0 && cfg.runs("shutdown") {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		load := sampleCPU()
		r, err := measureShutdown(ctx, url, cfg)
		r.OtherCPUPercent = otherLoad(load, sampleCPU())
		if err != nil {
			return nil, fmt.Errorf("shutdown: %w", err)
		}
		res.Shutdown = &r
	}
	if cfg.AdminBackends > 0 && cfg.runs("admin") {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		load := sampleCPU()
		r, err := measureAdmin(ctx, url, cfg)
		r.OtherCPUPercent = otherLoad(load, sampleCPU())
		if err != nil {
			return nil, fmt.Errorf("admin under load: %w", err)
		}
		res.Admin = &r
	}
	if cfg.HerdBackends > 0 && cfg.runs("herd") {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		load := sampleCPU()
		r, err := measureHerd(ctx, url, cfg)
		r.OtherCPUPercent = otherLoad(load, sampleCPU())
		if err != nil {
			return nil, fmt.Errorf("herd: %w", err)
		}
		res.Herd = &r
	}
	if cfg.DurableBackends > 0 && cfg.runs("durable") {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		load := sampleCPU()
		r, err := measureDurable(ctx, url, cfg)
		r.OtherCPUPercent = otherLoad(load, sampleCPU())
		if err != nil {
			return nil, fmt.Errorf("durable: %w", err)
		}
		res.Durable = &r
	}
	if cfg.ProcessBackends > 0 && cfg.runs("process") {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		load := sampleCPU()
		r, err := measureProcess(ctx, cfg)
		r.OtherCPUPercent = otherLoad(load, sampleCPU())
		if err != nil {
			return nil, fmt.Errorf("process: %w", err)
		}
		res.Process = &r
	}
	if (cfg.ClusterBackends > 0 || cfg.ClusterMessages > 0) && cfg.runs("cluster") {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		load := sampleCPU()
		r, err := measureCluster(ctx, url, cfg)
		r.OtherCPUPercent = otherLoad(load, sampleCPU())
		if err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
		res.Cluster = &r
	}
	res.judge()
	res.WallSeconds = time.Since(start).Seconds()
	res.print(out)
	if cfg.Out != "" {
		b, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(cfg.Out, append(b, '\n'), 0o644); err != nil {
			return nil, err
		}
		fmt.Fprintf(out, "\nresults written to %s\n", cfg.Out)
	}
	return res, nil
}

// measureTunedGC repeats the timeliness section with the collector set as
// the README recommends for tight lateness: GOGC=off and a GOMEMLIMIT, so it
// runs when the heap nears the limit rather than every time it doubles. The
// previous settings are restored afterwards.
func measureTunedGC(ctx context.Context, url string, cfg config) (timelinessResult, error) {
	oldPercent := debug.SetGCPercent(-1)
	oldLimit := debug.SetMemoryLimit(cfg.TunedMemLimit)
	defer func() {
		debug.SetGCPercent(oldPercent)
		debug.SetMemoryLimit(oldLimit)
	}()
	runtime.GC() // start from a clean heap, as the default run did
	return measureTimeliness(ctx, url, cfg)
}

// runningWorker is a bus.Worker running on its own connection.
type runningWorker struct {
	w      *bus.Worker
	nc     *nats.Conn
	closed chan struct{}
	cancel context.CancelFunc
	done   chan error
}

// startWorker connects and runs a worker with an in-memory coordinator
// (no registry, no stream) and waits until it is ready.
func startWorker(url string, cfg config, defTimeout time.Duration, obs bus.Observer) (*runningWorker, error) {
	return startWorkerWith(url, bus.WorkerConfig{
		Policy:      coordinator.Policy{DefaultIdleTimeout: defTimeout},
		QueueLength: cfg.QueueLength,
		Observer:    obs,
	}, nil)
}

// startWorkerWith connects, lets prepare (when not nil) complete wc on the
// worker's connection (to open a store on it, say), then runs a worker with
// wc and waits until it is ready.
func startWorkerWith(url string, wc bus.WorkerConfig, prepare func(*nats.Conn, *bus.WorkerConfig) error) (*runningWorker, error) {
	rw := &runningWorker{closed: make(chan struct{}), done: make(chan error, 1)}
	nc, err := nats.Connect(url, nats.Name("idle-bench worker"),
		nats.ClosedHandler(func(*nats.Conn) { close(rw.closed) }))
	if err != nil {
		return nil, err
	}
	rw.nc = nc
	if prepare != nil {
		if err := prepare(nc, &wc); err != nil {
			nc.Close()
			return nil, err
		}
	}
	rw.w, err = bus.NewWorker(nc, wc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	rw.cancel = cancel
	go func() { rw.done <- rw.w.Run(ctx) }()
	select {
	case <-rw.w.Ready():
		return rw, nil
	case err := <-rw.done:
		cancel()
		nc.Close()
		return nil, fmt.Errorf("worker stopped before it was ready: %w", err)
	case <-time.After(waitBound):
		cancel()
		nc.Close()
		return nil, errors.New("worker not ready in time")
	}
}

// stop cancels the worker, waits for Run, then drains its connection. It
// returns the time Run took to return and the time until the connection
// was closed, both from the cancel.
func (rw *runningWorker) stop() (runDone, closed time.Duration, err error) {
	t0 := time.Now()
	rw.cancel()
	select {
	case err = <-rw.done:
	case <-time.After(waitBound):
		rw.nc.Close()
		return 0, 0, errors.New("worker did not stop in time")
	}
	runDone = time.Since(t0)
	if derr := rw.nc.Drain(); derr != nil && !errors.Is(derr, nats.ErrConnectionClosed) {
		err = errors.Join(err, derr)
	}
	select {
	case <-rw.closed:
	case <-time.After(waitBound):
		rw.nc.Close()
		err = errors.Join(err, errors.New("connection did not drain in time"))
	}
	return runDone, time.Since(t0), err
}

// machine describes where the run happened.
func machine() machineInfo {
	m := machineInfo{CPUs: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), GoVersion: runtime.Version(),
		OS: runtime.GOOS, Arch: runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if name, value, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(name) == "model name" {
				m.CPUModel = strings.TrimSpace(value)
				break
			}
		}
	}
	return m
}
