package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/internal/natstest"
)

// One instance flooding keys fills its own quota only: its new keys are
// refused (backend_limit, naming the instance) while another instance's
// new backend is tracked; forgetting one of its keys frees a slot.
func TestInstanceQuota(t *testing.T) {
	t.Parallel()
	const quota = 5
	w, nc, _ := setup(t, bus.WorkerConfig{Policy: coordinator.Policy{DefaultIdleTimeout: longTimeout, MaxPerInstance: quota}})
	for i := range quota {
		heartbeat(t, nc, fmt.Sprintf("dev-7.flood.%d", i), "")
	}
	for i := quota; i < 3*quota; i++ {
		m := request(t, nc, fmt.Sprintf("%s.activity.dev-7.flood.%d", prefix, i), "")
		if msg := refusal(t, m); !strings.Contains(msg, "backend limit") || !strings.Contains(msg, `"dev-7"`) {
			t.Fatalf("flood key %d: refusal %q; want the backend limit, naming instance dev-7", i, msg)
		}
	}
	heartbeat(t, nc, "dev-8.gopls.1.aa", "")
	heartbeat(t, nc, "dev-7.flood.0", "") // tracked keys keep working
	if got := w.Stats().Rejected["backend_limit"]; got != 2*quota {
		t.Errorf("backend_limit rejections: %d; want %d", got, 2*quota)
	}
	m := request(t, nc, prefix+".admin.forget", `{"match":"dev-7.flood.0"}`)
	var fr bus.ForgetReply
	decodeOK(t, m, &fr)
	if fr.Forgotten != 1 {
		t.Fatalf("forget dev-7.flood.0: forgotten %d; want 1", fr.Forgotten)
	}
	heartbeat(t, nc, "dev-7.flood.new", "")
	if n := len(listKeys(adminList(t, nc, `{"match":"dev-7.>"}`))); n != quota {
		t.Errorf("dev-7 tracks %d backends; want %d", n, quota)
	}
}

// A broker that never answers must not hold its backends' slots for ever:
// drained backends are re-sent their event, then forgotten after
// IDLE_FORGET_AFTER with no activity or report, which frees the slots for
// new backends and ends the re-sends; quiesced ones are forgotten too.
func TestBrokerNeverAnswers(t *testing.T) {
	t.Parallel()
	const (
		timeout = 50 * time.Millisecond
		forget  = 600 * time.Millisecond
		n       = 3
	)
	w, nc, events := setup(t, bus.WorkerConfig{Policy: coordinator.Policy{
		DefaultIdleTimeout: timeout, MaxBackends: n + 1, ForgetAfter: forget,
		RetryInterval: 100 * time.Millisecond, RetryMaxInterval: 100 * time.Millisecond,
	}})
	for i := range n {
		heartbeat(t, nc, fmt.Sprintf("dead.broker.%d", i), "")
	}
	heartbeat(t, nc, "dead.quiet.1", "")
	nextEvent(t, events, bound)
	reportState(t, nc, "dead.quiet.1", "quiesced") // one broker answers once, then falls silent too
	// The slots are full: a new backend is refused.
	m := request(t, nc, prefix+".activity.fresh.1", "")
	if msg := refusal(t, m); !strings.Contains(msg, "backend limit") {
		t.Fatalf("new backend while full: %q; want the backend limit", msg)
	}
	waitFor(t, bound, func() bool { return w.Stats().Forgotten == n+1 })
	if s := w.Stats(); s.Redeliveries == 0 {
		t.Errorf("no redelivery before forgetting; want the unanswered drains re-sent (stats %+v)", s)
	}
	if keys := listKeys(adminList(t, nc, "")); len(keys) != 0 {
		t.Errorf("still tracked after forgetting: %v", keys)
	}
	// The slots are free again, and nothing is left to re-send: the
	// model tracks no draining backend.
	heartbeat(t, nc, "fresh.1", "")
	if s := w.Stats(); s.Draining != 0 || s.Quiesced != 0 || s.Unacknowledged != 0 {
		t.Errorf("after forgetting: draining %d quiesced %d unacknowledged %d; want 0", s.Draining, s.Quiesced, s.Unacknowledged)
	}
}

// With IDLE_QUIESCE_RATE, a herd of backends due at once is drained in
// deadline order, spread over time at the rate, none early, and the gauge
// shows the backends held back meanwhile.
func TestQuiesceRatePacesHerd(t *testing.T) {
	t.Parallel()
	const (
		rate    = 200 // per second; the budget holds rate/10 = 20
		n       = 100
		timeout = 100 * time.Millisecond
	)
	s := startServer(t, natstest.JetStream())
	w := startWorker(t, s.ClientURL(), bus.WorkerConfig{Policy: coordinator.Policy{DefaultIdleTimeout: timeout}, QuiesceRate: rate})
	nc := connect(t, s.ClientURL())
	events := subscribe(t, nc, prefix+".quiesce.>")
	sent := make(map[string]time.Time, n)
	order := make([]string, 0, n)
	for i := range n {
		k := fmt.Sprintf("herd.b.%03d", i)
		sent[k], _ = heartbeat(t, nc, k, "")
		order = append(order, k)
	}
	var got []event
	sawHeld := false
	for range n {
		ev := nextEvent(t, events, bound)
		checkTiming(t, sent[ev.Key], ev.arrived, timeout)
		got = append(got, ev)
		sawHeld = sawHeld || w.Stats().HeldBack > 0
	}
	spread := got[n-1].arrived.Sub(got[0].arrived)
	// The budget lets n-rate/10 events out over (n-rate/10)/rate seconds
	// after the burst; arrival stamps at the client can shrink that a
	// little, never by 50 ms.
	if min := time.Duration(n-rate/10-1)*time.Second/rate - 50*time.Millisecond; spread < min {
		t.Errorf("%d events spread over %v; want at least %v at %d/s", n, spread, min, rate)
	}
	for i, ev := range got {
		if ev.Key != order[i] {
			t.Fatalf("event %d is %s; want %s: deadline order", i, ev.Key, order[i])
		}
	}
	if !sawHeld {
		t.Errorf("HeldBack never above 0 while %d events waited for the budget", n)
	}
	waitFor(t, bound, func() bool { return w.Stats().HeldBack == 0 })
}

// The store follows forgetting and reports: a backend forgotten by time or
// by an operator has its record deleted, and a broker repeating the same
// report costs one write, not one per report.
func TestRegistryFollowsForgettingAndReports(t *testing.T) {
	t.Parallel()
	s := startServer(t, natstest.JetStream())
	_, reg := relStartWorker(t, s.ClientURL(), relOptions{
		policy: coordinator.Policy{DefaultIdleTimeout: longTimeout, ForgetAfter: 300 * time.Millisecond},
		store:  true,
	})
	nc := connect(t, s.ClientURL())
	for _, k := range []string{"rf.timer", "rf.admin", "rf.repeat"} {
		heartbeat(t, nc, k, "")
	}
	// Repeated reports: one transition, one write.
	for range 5 {
		reportState(t, nc, "rf.repeat", "draining")
	}
	if puts, _, _ := reg.calls("rf.repeat"); puts != 2 { // first sight, then draining
		t.Errorf("rf.repeat: %d store writes for five identical reports; want 2 in all", puts)
	}
	// Forgotten by an operator.
	var fr bus.ForgetReply
	decodeOK(t, request(t, nc, prefix+".admin.forget", `{"match":"rf.admin"}`), &fr)
	if _, _, deletes := reg.calls("rf.admin"); fr.Forgotten != 1 || deletes != 1 {
		t.Errorf("admin forget: forgotten %d, store deletes %d; want 1 and 1", fr.Forgotten, deletes)
	}
	// Forgotten by time, once quiesced and left alone.
	reportState(t, nc, "rf.timer", "quiesced")
	waitFor(t, bound, func() bool { _, _, d := reg.calls("rf.timer"); return d == 1 })
	if _, ok := adminGet(t, nc, "rf.timer"); ok {
		t.Error("rf.timer still tracked after its record was deleted")
	}
	v := openStoreView(t, nc)
	for _, k := range []string{"rf.admin", "rf.timer"} {
		relWaitRecord(t, v, k, "deleted", func(r relRecord) bool { return !r.found })
	}
}
