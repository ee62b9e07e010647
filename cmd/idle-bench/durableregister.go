package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idle-worker/idle-worker/bus"
)

// registerBody is each new backend's heartbeat: an hour, so none falls
// due during the measurement.
const registerBody = `{"idle_timeout_ms":3600000}`

// registerResult is N new backends' first heartbeat requests on one worker.
type registerResult struct {
	Path        string `json:"path"`
	Backends    int    `json:"backends"`
	Connections int    `json:"connections"`
	Window      int    `json:"window_per_connection"`
	// AnsweredMS is the time from the first request to the last reply;
	// PerSecond is Backends over it.
	AnsweredMS float64 `json:"answered_ms"`
	PerSecond  float64 `json:"answered_per_second"`
	// StoredMS is the time from the first request until the registry had
	// written every record and had none pending (durable only).
	StoredMS float64 `json:"stored_ms,omitempty"`
	// Durable is, for Samples keys spread through the run, the time from
	// the reply's arrival to a watcher of the registry bucket (an ordered
	// consumer: it sees a record once stored) seeing its record.
	Samples int            `json:"samples,omitempty"`
	Durable latencySummary `json:"answered_to_durable,omitzero"`
	// Tracked is Stats().Running afterwards (want Backends).
	Tracked int64 `json:"tracked"`
}

// restartResult is the durable worker's restart on the registration's
// store: Run cancelled (as on SIGTERM), then a new worker started on the
// same store.
type restartResult struct {
	Backends int `json:"backends"`
	// StopMS is the time for the old worker's Run to return and its
	// connection to close; ReadyMS from connecting the new worker (store.Open
	// included) to Ready.
	StopMS   float64 `json:"stop_ms"`
	ReadyMS  float64 `json:"ready_ms"`
	Restored int64   `json:"restored"`
}

// sampleStride returns the distance between sampled indexes so that about
// samples of n are sampled (at least 1).
func sampleStride(n, samples int) int {
	if samples <= 0 || n <= 0 {
		return n + 1 // none
	}
	return max(1, n/samples)
}

// measureRegistration sends cfg.DurableRegister new backends' first
// heartbeats as requests from cfg.DurableConns connections, each keeping
// at most cfg.DurableWindow unanswered, and times the replies. On the
// durable worker it also times when every record was stored and, for a
// sample, each record's "answered -> durable" delay; then it restarts the
// worker on the same store.
func measureRegistration(ctx context.Context, url string, cfg config, durable bool) (registerResult, *restartResult, error) {
	n := cfg.DurableRegister
	r := registerResult{Path: pathName(durable), Backends: n, Connections: cfg.DurableConns, Window: cfg.DurableWindow}
	names := freshStore()
	defer removeStore(url, names)
	rw, reg, err := startPathWorker(ctx, url, cfg, durable, names)
	if err != nil {
		return r, nil, err
	}
	stopped := false
	defer func() {
		if !stopped {
			rw.stop()
		}
	}()
	subj := bus.MustSubjects(bus.DefaultPrefix)
	stride := sampleStride(n, cfg.DurableSamples)
	answered := make([]atomic.Int64, n/stride+1) // unix ns of each sample's reply
	var stored []atomic.Int64
	var watchDone chan struct{}
	if durable {
		r.Samples = (n + stride - 1) / stride
		stored = make([]atomic.Int64, len(answered))
		w, err := watchSamples(ctx, url, names.RegistryBucket, n, stride)
		if err != nil {
			return r, nil, err
		}
		defer w.Stop()
		watchDone = make(chan struct{})
		go func() {
			defer close(watchDone)
			for e := range w.Updates() {
				if e == nil {
					continue
				}
				if i, ok := keyIndex(e.Key(), "b.reg."); ok && i%stride == 0 && i/stride < len(stored) {
					stored[i/stride].CompareAndSwap(0, time.Now().UnixNano())
				}
			}
		}()
	}
	written0 := uint64(0)
	if reg != nil {
		written0 = reg.Counters().Written
	}
	t0 := time.Now()
	if err := sendRegistrations(ctx, url, cfg, subj, func(i int) {
		if i%stride == 0 {
			answered[i/stride].Store(time.Now().UnixNano())
		}
	}); err != nil {
		return r, nil, err
	}
	r.AnsweredMS = ms(time.Since(t0))
	r.PerSecond = eventsPerSecond(n, time.Since(t0))
	r.Tracked = rw.w.Stats().Running
	if !durable {
		return r, nil, nil
	}
	bound := waitBound + time.Duration(n)*10*time.Microsecond
	for reg.Counters().Written < written0+uint64(n) || reg.Pending() > 0 {
		if err := ctx.Err(); err != nil {
			return r, nil, err
		}
		if time.Since(t0) > bound {
			return r, nil, fmt.Errorf("registry stored %d of %d records in %v", reg.Counters().Written-written0, n, bound)
		}
		time.Sleep(time.Millisecond)
	}
	r.StoredMS = ms(time.Since(t0))
	var lag []time.Duration
	for deadline := time.Now().Add(waitBound); len(lag) < r.Samples && time.Now().Before(deadline); {
		lag = lag[:0]
		for k := range r.Samples {
			if s, a := stored[k].Load(), answered[k].Load(); s != 0 && a != 0 {
				lag = append(lag, time.Duration(s-a))
			}
		}
		if len(lag) < r.Samples {
			time.Sleep(5 * time.Millisecond)
		}
	}
	r.Durable = summarize(lag)
	r.Durable.Missing = r.Samples - len(lag)

	// Restart: cancel Run as SIGTERM does, then a new worker on the store.
	rs := &restartResult{Backends: n}
	t1 := time.Now()
	stopped = true
	if _, _, err := rw.stop(); err != nil {
		return r, nil, fmt.Errorf("stopping for the restart: %w", err)
	}
	rs.StopMS = ms(time.Since(t1))
	t2 := time.Now()
	rw2, _, err := startPathWorker(ctx, url, cfg, true, names)
	if err != nil {
		return r, nil, fmt.Errorf("restart: %w", err)
	}
	rs.ReadyMS = ms(time.Since(t2))
	rs.Restored = rw2.w.Stats().Restored
	if _, _, err := rw2.stop(); err != nil {
		return r, rs, fmt.Errorf("stopping after the restart: %w", err)
	}
	return r, rs, nil
}

// watchSamples watches bucket's records of every stride-th of n backends
// reg.<i>, updates only.
func watchSamples(ctx context.Context, url, bucket string, n, stride int) (jetstream.KeyWatcher, error) {
	nc, err := nats.Connect(url, nats.Name("idle-bench registry watcher"))
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		nc.Close()
		return nil, err
	}
	var keys []string
	for i := 0; i < n; i += stride {
		keys = append(keys, "b."+bus.StoreKey("reg."+strconv.Itoa(i)))
	}
	w, err := kv.WatchFiltered(context.WithoutCancel(ctx), keys, jetstream.UpdatesOnly())
	if err != nil {
		nc.Close()
		return nil, err
	}
	return closingWatcher{w, nc}, nil
}

// closingWatcher closes its connection when stopped.
type closingWatcher struct {
	jetstream.KeyWatcher
	nc *nats.Conn
}

// Stop implements jetstream.KeyWatcher.
func (c closingWatcher) Stop() error {
	err := c.KeyWatcher.Stop()
	c.nc.Close()
	return err
}

// sendRegistrations sends a heartbeat request for each of
// cfg.DurableRegister backends reg.<i>, spread over cfg.DurableConns
// connections (backend i on connection i mod conns), each with at most
// cfg.DurableWindow unanswered, and calls onReply(i) from the connection's
// goroutine as each reply arrives. It returns when every reply has
// arrived, or fails when none arrived for waitBound.
func sendRegistrations(ctx context.Context, url string, cfg config, subj bus.Subjects, onReply func(i int)) error {
	n, conns := cfg.DurableRegister, cfg.DurableConns
	errs := make([]error, conns)
	var wg sync.WaitGroup
	for c := range conns {
		wg.Go(func() { errs[c] = sendOn(ctx, url, cfg.DurableWindow, subj, c, conns, n, onReply) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// sendOn is one connection of sendRegistrations: backends c, c+conns, ...
// below n.
func sendOn(ctx context.Context, url string, window int, subj bus.Subjects, c, conns, n int, onReply func(int)) error {
	nc, err := nats.Connect(url, nats.Name("idle-bench registrations "+strconv.Itoa(c)))
	if err != nil {
		return err
	}
	defer nc.Close()
	inbox := nats.NewInbox() + "."
	slots := make(chan struct{}, window)
	want := 0
	for i := c; i < n; i += conns {
		want++
	}
	all := make(chan struct{})
	var replies atomic.Int64
	sub, err := nc.Subscribe(inbox+"*", func(m *nats.Msg) {
		if i, err := strconv.Atoi(strings.TrimPrefix(m.Subject, inbox)); err == nil {
			onReply(i)
		}
		<-slots
		if replies.Add(1) == int64(want) {
			close(all)
		}
	})
	if err != nil {
		return err
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return err
	}
	if want == 0 {
		close(all)
	}
	body := []byte(registerBody)
	for i := c; i < n; i += conns {
		select {
		case slots <- struct{}{}:
		default:
			if err := waitSlot(ctx, slots); err != nil {
				return fmt.Errorf("connection %d: %w, %d of %d answered", c, err, replies.Load(), want)
			}
		}
		if err := nc.PublishRequest(subj.Activity("reg."+strconv.Itoa(i)), inbox+strconv.Itoa(i), body); err != nil {
			return err
		}
	}
	select {
	case <-all:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(waitBound):
		return fmt.Errorf("connection %d: %d of %d answered", c, replies.Load(), want)
	}
}

// waitSlot takes a slot of the window, failing when none frees up within
// waitBound or ctx is done.
func waitSlot(ctx context.Context, slots chan<- struct{}) error {
	t := time.NewTimer(waitBound)
	defer t.Stop()
	select {
	case slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return fmt.Errorf("no reply for %v", waitBound)
	}
}
