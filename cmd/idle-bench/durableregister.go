package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
)

// registerBody is each new backend's heartbeat: an hour, so none falls
// due during the measurement.
const registerBody = `{"idle_timeout_ms":3600000}`

// registerResult is N new backends' first heartbeat requests on one worker.
// A durable worker answers each only once the store acknowledged the log
// message holding its record, so "answered" implies "durable": Reply is
// what that wait costs a client, beside the memory path's.
type registerResult struct {
	Path        string `json:"path"`
	Backends    int    `json:"backends"`
	Connections int    `json:"connections"`
	Window      int    `json:"window_per_connection"`
	// AnsweredMS is the time from the first request to the last reply;
	// PerSecond is Backends over it.
	AnsweredMS float64 `json:"answered_ms"`
	PerSecond  float64 `json:"answered_per_second"`
	// Reply is each request's time from its publish to its reply.
	Reply latencySummary `json:"first_heartbeat_reply"`
	// Refused counts replies that were not {"ok":true,...}: a record the
	// store could not store.
	Refused int `json:"refused"`
	// StoreWrites counts the store's acknowledged writes during the
	// registration (durable only): log messages, one per partition and
	// flush, each holding many records.
	StoreWrites   uint64 `json:"store_writes,omitempty"`
	StoreFailures uint64 `json:"store_write_failures,omitempty"`
	// Tracked is Stats().Running afterwards (want Backends).
	Tracked int64 `json:"tracked"`
}

// restartResult is the durable worker's restart on the registration's
// store: Run cancelled (as on SIGTERM), then a new worker started on the
// same stream.
type restartResult struct {
	Backends int `json:"backends"`
	// StopMS is the time for the old worker's Run to return (its store
	// closed) and its connection to close; ReadyMS from connecting the new
	// worker (store.Open and Load included) to Ready.
	StopMS   float64 `json:"stop_ms"`
	ReadyMS  float64 `json:"ready_ms"`
	Restored int64   `json:"restored"`
}

// measureRegistration sends cfg.DurableRegister new backends' first
// heartbeats as requests from cfg.DurableConns connections, each keeping
// at most cfg.DurableWindow unanswered, and times the replies. On the
// durable worker it then restarts the worker on the same stream.
func measureRegistration(ctx context.Context, url string, cfg config, durable bool) (registerResult, *restartResult, error) {
	n := cfg.DurableRegister
	r := registerResult{Path: pathName(durable), Backends: n, Connections: cfg.DurableConns, Window: cfg.DurableWindow}
	names := freshStore()
	defer removeStore(url, names)
	rw, _, err := startPathWorker(ctx, url, cfg, durable, names)
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
	s0 := rw.w.Stats()
	t0 := time.Now()
	lat, refused, err := sendRegistrations(ctx, url, cfg, subj)
	if err != nil {
		return r, nil, err
	}
	r.AnsweredMS = ms(time.Since(t0))
	r.PerSecond = eventsPerSecond(n, time.Since(t0))
	r.Reply, r.Refused = summarize(lat), refused
	s1 := rw.w.Stats()
	r.Tracked = s1.Running
	if !durable {
		return r, nil, nil
	}
	r.StoreWrites, r.StoreFailures = s1.StoreWrites-s0.StoreWrites, s1.StoreWriteFailures-s0.StoreWriteFailures

	// Restart: cancel Run as SIGTERM does, then a new worker on the stream.
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

// sendRegistrations sends a heartbeat request for each of
// cfg.DurableRegister backends reg.<i>, spread over cfg.DurableConns
// connections (backend i on connection i mod conns), each with at most
// cfg.DurableWindow unanswered. It returns when every reply has arrived
// (or fails when none arrived for waitBound) with each request's time from
// publish to reply, and how many replies were refusals.
func sendRegistrations(ctx context.Context, url string, cfg config, subj bus.Subjects) ([]time.Duration, int, error) {
	n, conns := cfg.DurableRegister, cfg.DurableConns
	errs := make([]error, conns)
	lats := make([][]time.Duration, conns)
	refused := make([]int, conns)
	var wg sync.WaitGroup
	for c := range conns {
		wg.Go(func() {
			lats[c], refused[c], errs[c] = sendOn(ctx, url, cfg.DurableWindow, subj, c, conns, n)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, 0, err
	}
	all := make([]time.Duration, 0, n)
	bad := 0
	for c := range conns {
		all, bad = append(all, lats[c]...), bad+refused[c]
	}
	return all, bad, nil
}

// sendOn is one connection of sendRegistrations: backends c, c+conns, ...
// below n.
func sendOn(ctx context.Context, url string, window int, subj bus.Subjects, c, conns, n int) ([]time.Duration, int, error) {
	nc, err := nats.Connect(url, nats.Name("idle-bench registrations "+strconv.Itoa(c)))
	if err != nil {
		return nil, 0, err
	}
	defer nc.Close()
	inbox := nats.NewInbox() + "."
	slots := make(chan struct{}, window)
	want := 0
	for i := c; i < n; i += conns {
		want++
	}
	// sentAt[k] is the publish time (unix ns) of this connection's k-th
	// request, backend c+k*conns; lat and bad are the handler's, read once
	// all is closed.
	sentAt := make([]atomic.Int64, want)
	lat := make([]time.Duration, 0, want)
	bad := 0
	all := make(chan struct{})
	var replies atomic.Int64
	sub, err := nc.Subscribe(inbox+"*", func(m *nats.Msg) {
		now := time.Now().UnixNano()
		if k, err := strconv.Atoi(strings.TrimPrefix(m.Subject, inbox)); err == nil && k >= 0 && k < want {
			lat = append(lat, time.Duration(now-sentAt[k].Load()))
		}
		if !bytes.HasPrefix(m.Data, replyOK) {
			bad++
		}
		<-slots
		if replies.Add(1) == int64(want) {
			close(all)
		}
	})
	if err != nil {
		return nil, 0, err
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return nil, 0, err
	}
	if want == 0 {
		close(all)
	}
	body := []byte(registerBody)
	for k, i := 0, c; i < n; k, i = k+1, i+conns {
		select {
		case slots <- struct{}{}:
		default:
			if err := waitSlot(ctx, slots); err != nil {
				return nil, 0, fmt.Errorf("connection %d: %w, %d of %d answered", c, err, replies.Load(), want)
			}
		}
		sentAt[k].Store(time.Now().UnixNano())
		if err := nc.PublishRequest(subj.Activity("reg."+strconv.Itoa(i)), inbox+strconv.Itoa(k), body); err != nil {
			return nil, 0, err
		}
	}
	select {
	case <-all:
		return lat, bad, nil
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	case <-time.After(waitBound):
		return nil, 0, fmt.Errorf("connection %d: %d of %d answered", c, replies.Load(), want)
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
