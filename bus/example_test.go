package bus_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
)

// ExampleSubjects prints every subject of the wire contract under the
// default prefix.
func ExampleSubjects() {
	s, err := bus.NewSubjects("idle")
	if err != nil {
		fmt.Println(err)
		return
	}
	const key = "dev-7.gopls.0%2E16%2E1.9f2c"
	fmt.Println(s.Activity(key))
	fmt.Println(s.State(key))
	fmt.Println(s.Quiesce(key))
	fmt.Println(s.Quiesce("dev-7.>"))
	fmt.Println(s.AdminList())
	fmt.Println(s.AdminGet())
	fmt.Println(s.AdminQuiesce())
	fmt.Println(s.AdminForget())
	fmt.Println(s.AdminMembers())
	fmt.Println(s.AdminGroup())
	fmt.Println(s.Store(">"))
	// Output:
	// idle.activity.dev-7.gopls.0%2E16%2E1.9f2c
	// idle.state.dev-7.gopls.0%2E16%2E1.9f2c
	// idle.quiesce.dev-7.gopls.0%2E16%2E1.9f2c
	// idle.quiesce.dev-7.>
	// idle.admin.list
	// idle.admin.get
	// idle.admin.quiesce
	// idle.admin.forget
	// idle.admin.members
	// idle.admin
	// idle.store.>
}

func ExampleBackendID_Key() {
	id := bus.BackendID{Instance: "dev-7", Service: "gopls", Version: "0.16.1", ExeHash: "9f2c"}
	key, err := id.Key()
	fmt.Println(key, err)

	_, err = bus.BackendID{Instance: "dev-7", Service: "gopls"}.Key()
	fmt.Println(errors.Is(err, bus.ErrBadKey))
	// Output:
	// dev-7.gopls.0%2E16%2E1.9f2c <nil>
	// true
}

func ExampleParseBackendID() {
	id, err := bus.ParseBackendID("web-1%2Eeu.gopls.0%2E16%2E1.9f2c")
	fmt.Printf("%q %q %q %q %v\n", id.Instance, id.Service, id.Version, id.ExeHash, err)

	// Only the canonical encoding is accepted: no lower-case hex.
	_, err = bus.ParseBackendID("dev-7.gopls.0%2e16%2e1.9f2c")
	fmt.Println(errors.Is(err, bus.ErrBadKey))
	// Output:
	// "web-1.eu" "gopls" "0.16.1" "9f2c" <nil>
	// true
}

// ExampleNewHeartbeater shows a backend keeping itself alive. Once it stops
// heartbeating, the worker finds it idle and publishes a quiesce event.
func ExampleNewHeartbeater() {
	e, err := startEnv(bus.WorkerConfig{Policy: coordinator.DefaultPolicy()}) // a NATS server and a running worker
	if err != nil {
		fmt.Println(err)
		return
	}
	defer e.Close()
	nc, err := e.Connect()
	if err != nil {
		fmt.Println(err)
		return
	}
	subjects := bus.MustSubjects(bus.DefaultPrefix)

	// Watch the quiesce events, as a broker would.
	events, err := nc.SubscribeSync(subjects.Quiesce(">"))
	if err != nil {
		fmt.Println(err)
		return
	}

	key, _ := bus.BackendID{Instance: "dev-7", Service: "gopls", Version: "0.16.1", ExeHash: "9f2c"}.Key()
	hb, err := bus.NewHeartbeater(nc, subjects, key, bus.WithIdleTimeout(50*time.Millisecond))
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()

	// Check once that the worker accepts the key and timeout.
	reply, err := hb.Check(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("accepted:", reply.Key, reply.IdleTimeoutMS)

	// Heartbeat while busy: Run beats every 50/3 ms until its context ends
	// (in a real backend, Run has its own goroutine).
	busy, stop := context.WithTimeout(ctx, 100*time.Millisecond)
	err = hb.Run(busy)
	stop()
	fmt.Println("heartbeater stopped:", err)

	// 50 ms after the last beat the worker asks the backend's broker to
	// drain it.
	msg, err := events.NextMsg(waitBound)
	if err != nil {
		fmt.Println(err)
		return
	}
	ev, err := bus.ParseQuiesceEvent(msg.Data)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("quiesce:", ev.Key, ev.Reason, ev.ConfiguredTimeoutMS, msg.Header.Get(bus.HeaderMsgID) == ev.ID)
	// Output:
	// accepted: dev-7.gopls.0%2E16%2E1.9f2c 50
	// heartbeater stopped: <nil>
	// quiesce: dev-7.gopls.0%2E16%2E1.9f2c idle_timeout 50 true
}

// ExampleSubscribeQuiesce shows a broker receiving the quiesce event of one
// of its backends and reporting that it drained it.
func ExampleSubscribeQuiesce() {
	e, err := startEnv(bus.WorkerConfig{Policy: coordinator.DefaultPolicy()})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer e.Close()
	nc, err := e.Connect()
	if err != nil {
		fmt.Println(err)
		return
	}
	subjects := bus.MustSubjects(bus.DefaultPrefix)
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()

	// The broker of instance dev-7 listens for its backends' events.
	events := make(chan bus.QuiesceEvent, 16)
	sub, err := bus.SubscribeQuiesce(nc, subjects, "dev-7.>", func(ev bus.QuiesceEvent) { events <- ev })
	if err != nil {
		fmt.Println(err)
		return
	}
	defer sub.Unsubscribe()
	if err := nc.FlushTimeout(waitBound); err != nil { // the subscription is in place
		fmt.Println(err)
		return
	}

	// A backend heartbeats once, with a 20 ms idle timeout, and goes quiet.
	key := "dev-7.gopls.0%2E16%2E1.9f2c"
	hb, err := bus.NewHeartbeater(nc, subjects, key, bus.WithIdleTimeout(20*time.Millisecond))
	if err != nil {
		fmt.Println(err)
		return
	}
	if _, err := hb.Check(ctx); err != nil {
		fmt.Println(err)
		return
	}

	select {
	case ev := <-events:
		fmt.Println("drain", ev.Key, "because", ev.Reason, "after", ev.ConfiguredTimeoutMS, "ms")
		// The broker drains the backend, then reports it.
		fmt.Println("report:", bus.ReportState(ctx, nc, subjects, ev.Key, bus.StateQuiesced))
	case <-time.After(waitBound):
		fmt.Println("no quiesce event")
	}
	// Output:
	// drain dev-7.gopls.0%2E16%2E1.9f2c because idle_timeout after 20 ms
	// report: <nil>
}

// ExampleReportState shows a broker reporting what it did with a backend.
// A report about a backend the worker does not track is refused.
func ExampleReportState() {
	e, err := startEnv(bus.WorkerConfig{Policy: coordinator.DefaultPolicy()})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer e.Close()
	nc, err := e.Connect()
	if err != nil {
		fmt.Println(err)
		return
	}
	subjects := bus.MustSubjects(bus.DefaultPrefix)
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()

	key := "dev-7.gopls.0%2E16%2E1.9f2c"
	hb, err := bus.NewHeartbeater(nc, subjects, key) // the worker's default timeout, 30 s
	if err != nil {
		fmt.Println(err)
		return
	}
	if _, err := hb.Check(ctx); err != nil {
		fmt.Println(err)
		return
	}

	fmt.Println("draining:", bus.ReportState(ctx, nc, subjects, key, bus.StateDraining))
	fmt.Println("removed:", bus.ReportState(ctx, nc, subjects, key, bus.StateRemoved))
	err = bus.ReportState(ctx, nc, subjects, key, bus.StateRemoved)
	fmt.Println("removed again:", errors.Is(err, bus.ErrRejected))
	fmt.Println(err)
	// Output:
	// draining: <nil>
	// removed: <nil>
	// removed again: true
	// bus: report state dev-7.gopls.0%2E16%2E1.9f2c: bus: rejected by worker: bus: unknown backend: "dev-7.gopls.0%2E16%2E1.9f2c" is not tracked
}
