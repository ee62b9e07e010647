package integration

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
)

// The client helpers against a real worker: a running Heartbeater keeps its
// backend alive, SubscribeQuiesce delivers the event once it stops, and
// ReportState reports, or returns ErrRejected for an unknown key.
func TestClientHelpers(t *testing.T) {
	t.Parallel()
	const timeout = 200 * time.Millisecond
	s := startServer(t)
	startWorker(t, s.ClientURL(), bus.WorkerConfig{Policy: coordinator.Policy{DefaultIdleTimeout: 30 * time.Second}, MaxTimeout: time.Minute})
	backend := connect(t, s.ClientURL())
	broker := connect(t, s.ClientURL())
	subjects := bus.MustSubjects("")
	key := mustKey(t, bus.BackendID{Instance: "cli-1", Service: "svc", Version: "1.0", ExeHash: "beef"})

	got := make(chan bus.QuiesceEvent, 16)
	sub, err := bus.SubscribeQuiesce(broker, subjects, "cli-1.>", func(ev bus.QuiesceEvent) { got <- ev })
	if err != nil {
		t.Fatalf("SubscribeQuiesce: %v", err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := broker.FlushTimeout(bound); err != nil {
		t.Fatal(err)
	}

	hb, err := bus.NewHeartbeater(backend, subjects, key, bus.WithIdleTimeout(timeout))
	if err != nil {
		t.Fatalf("NewHeartbeater: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	r, err := hb.Check(ctx)
	if err != nil || !r.OK || r.Key != key || r.IdleTimeoutMS != timeout.Milliseconds() {
		t.Fatalf("Check: got %+v, %v; want ok, key %q, idle_timeout_ms %d", r, err, key, timeout.Milliseconds())
	}

	runCtx, stopBeating := context.WithCancel(context.Background())
	defer stopBeating()
	runDone := make(chan error, 1)
	runStart := time.Now()
	go func() { runDone <- hb.Run(runCtx) }()
	window := time.After(3 * timeout)
	for running := true; running; {
		select {
		case ev := <-got:
			// The Heartbeater beats every timeout/3; only a stall of a good part of
			// a timeout can excuse a quiesce.
			if st := stalls.between(runStart, time.Now()); st < timeout/2 {
				t.Fatalf("got quiesce %+v while the Heartbeater ran (measured CPU starvation %v); want none", ev, st)
			}
			t.Logf("tolerating quiesce %s while the Heartbeater ran: the machine stalled", ev.ID)
		case <-window:
			running = false
		}
	}
	stopBeating()
	stopped := time.Now()
	select {
	case err := <-runDone:
		if err != nil {
			t.Errorf("Heartbeater.Run: got %v; want nil", err)
		}
	case <-time.After(bound):
		t.Fatalf("Heartbeater.Run did not return within %v of cancellation", bound)
	}
	select {
	case ev := <-got:
		if ev.Key != key || ev.Reason != "idle_timeout" || ev.ConfiguredTimeoutMS != timeout.Milliseconds() || ev.ID == "" {
			t.Errorf("event: got %+v; want key %q, idle_timeout, configured_timeout_ms %d, an id", ev, key, timeout.Milliseconds())
		}
		if late, allowed := time.Since(stopped), timeout+lateSlack+stalls.between(stopped, time.Now()); late > allowed {
			t.Errorf("event came %v after the Heartbeater stopped; want <= %v", late, allowed)
		}
	case <-time.After(timeout + bound):
		t.Fatalf("no quiesce within %v of stopping the Heartbeater", timeout+bound)
	}

	if err := bus.ReportState(ctx, broker, subjects, key, bus.StateQuiesced); err != nil {
		t.Errorf("ReportState(quiesced): %v", err)
	}
	if st := state(t, broker, key); st != "quiesced" {
		t.Errorf("state after ReportState: got %q; want quiesced", st)
	}
	err = bus.ReportState(ctx, broker, subjects, "cli-1.nobody", bus.StateRemoved)
	if !errors.Is(err, bus.ErrRejected) || !strings.Contains(err.Error(), "unknown") {
		t.Errorf("ReportState for an unknown key: got %v; want an error wrapping bus.ErrRejected that says unknown", err)
	}
	err = bus.ReportState(ctx, broker, subjects, key, "paused")
	if !errors.Is(err, bus.ErrRejected) {
		t.Errorf("ReportState(paused): got %v; want an error wrapping bus.ErrRejected", err)
	}

	// Check tells a backend that the worker refused its timeout.
	tooLong, err := bus.NewHeartbeater(backend, subjects, key, bus.WithIdleTimeout(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tooLong.Check(ctx); !errors.Is(err, bus.ErrRejected) {
		t.Errorf("Check with a timeout above the maximum: got %v; want an error wrapping bus.ErrRejected", err)
	}
}
