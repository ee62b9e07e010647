package integration

import (
	"testing"
	"time"

	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/internal/natstest"
)

// A drain re-sent before a restart is re-sent after it too, whoever sent
// it last: the restarted worker restores the backend draining with its
// first attempt and sends attempt 2 again, and brokers see it, though the
// previous run sent an attempt 2 of the same id within the stream's
// de-duplication window. The restart here is in one process, as an
// embedding program's would be.
func TestResendAfterRestartInProcess(t *testing.T) {
	t.Parallel()
	const idle, retry = 100 * time.Millisecond, 200 * time.Millisecond
	opts := relOptions{policy: coordinator.Policy{DefaultIdleTimeout: longTimeout, RetryInterval: retry, RetryMaxInterval: retry}, store: true}
	s := startServer(t, natstest.JetStream())
	nc := connect(t, s.ClientURL())
	events := subscribe(t, nc, prefix+".quiesce.>")
	w1, _ := relStartWorker(t, s.ClientURL(), opts)
	heartbeat(t, nc, "rs.a", timeoutBody(idle))
	first := nextEvent(t, events, idle+bound)
	if second := nextEvent(t, events, retry+bound); second.ID != first.ID || second.Attempt != 2 {
		t.Fatalf("re-send before the restart: got id %q attempt %d; want %q attempt 2", second.ID, second.Attempt, first.ID)
	}
	if err := w1.stop(bound); err != nil {
		t.Fatal(err)
	}
	after := subscribe(t, nc, prefix+".quiesce.>")
	relStartWorker(t, s.ClientURL(), opts)
	adminList(t, nc, "") // the worker arms its timer on its first message
	if ev := nextEvent(t, after, retry+bound); ev.ID != first.ID || ev.Attempt != 2 {
		t.Errorf("re-send after the restart: got id %q attempt %d; want %q attempt 2", ev.ID, ev.Attempt, first.ID)
	}
}

// A restarted worker drains its restored backends on time even when no
// message arrives after it starts: a running one a timeout after the
// restart, however quiet the bus.
func TestRestoredDeadlineWithoutTraffic(t *testing.T) {
	t.Parallel()
	const idle = 300 * time.Millisecond
	opts := relOptions{policy: coordinator.Policy{DefaultIdleTimeout: longTimeout}, store: true}
	s := startServer(t, natstest.JetStream())
	nc := connect(t, s.ClientURL())
	w1, _ := relStartWorker(t, s.ClientURL(), opts)
	heartbeat(t, nc, "rq.a", timeoutBody(idle))
	if err := w1.stop(bound); err != nil {
		t.Fatal(err)
	}
	events := subscribe(t, nc, prefix+".quiesce.>")
	restart := time.Now()
	relStartWorker(t, s.ClientURL(), opts)
	ev := nextEvent(t, events, idle+bound)
	if ev.Key != "rq.a" {
		t.Errorf("event after the restart: got %s; want rq.a", ev.Key)
	}
	checkTiming(t, restart, ev.arrived, idle)
}
