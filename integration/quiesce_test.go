package integration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/internal/natstest"
)

// A backend that names no timeout gets the worker's default, whether its
// heartbeat is a request or a plain publish.
func TestQuiesceAfterDefaultTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 200 * time.Millisecond
	_, nc, events := setup(t, bus.WorkerConfig{Policy: coordinator.Policy{DefaultIdleTimeout: timeout}})

	sent, r := heartbeat(t, nc, "dflt.req", "")
	if r.IdleTimeoutMS != timeout.Milliseconds() {
		t.Errorf("reply idle_timeout_ms: got %d; want the default %d", r.IdleTimeoutMS, timeout.Milliseconds())
	}
	ev := nextEvent(t, events, timeout+bound)
	checkTiming(t, sent, ev.arrived, timeout)
	if ev.Key != "dflt.req" || ev.Reason != "idle_timeout" || ev.ConfiguredTimeoutMS != timeout.Milliseconds() {
		t.Errorf("event: got key %q reason %q configured_timeout_ms %d; want dflt.req idle_timeout %d",
			ev.Key, ev.Reason, ev.ConfiguredTimeoutMS, timeout.Milliseconds())
	}

	// A heartbeat without a reply subject, as `nats pub` sends it.
	sent = time.Now()
	if err := nc.Publish(prefix+".activity.dflt.pub", nil); err != nil {
		t.Fatalf("publish: %v", err)
	}
	ev = nextEvent(t, events, timeout+bound)
	checkTiming(t, sent, ev.arrived, timeout)
	if ev.Key != "dflt.pub" || ev.ConfiguredTimeoutMS != timeout.Milliseconds() {
		t.Errorf("event: got key %q configured_timeout_ms %d; want dflt.pub %d", ev.Key, ev.ConfiguredTimeoutMS, timeout.Milliseconds())
	}
}

// A backend's own {"idle_timeout_ms":N} overrides the (long) default.
func TestQuiesceAfterOwnTimeout(t *testing.T) {
	t.Parallel()
	for _, timeout := range []time.Duration{100 * time.Millisecond, 300 * time.Millisecond} {
		t.Run(timeout.String(), func(t *testing.T) {
			t.Parallel()
			_, nc, events := setup(t, bus.WorkerConfig{Policy: coordinator.Policy{DefaultIdleTimeout: longTimeout}})
			key := "own." + timeout.String()
			sent, r := heartbeat(t, nc, key, timeoutBody(timeout))
			if r.IdleTimeoutMS != timeout.Milliseconds() {
				t.Errorf("reply idle_timeout_ms: got %d; want %d", r.IdleTimeoutMS, timeout.Milliseconds())
			}
			ev := nextEvent(t, events, timeout+bound)
			checkTiming(t, sent, ev.arrived, timeout)
			if ev.Key != key || ev.Reason != "idle_timeout" || ev.ConfiguredTimeoutMS != timeout.Milliseconds() {
				t.Errorf("event: got key %q reason %q configured_timeout_ms %d; want %q idle_timeout %d",
					ev.Key, ev.Reason, ev.ConfiguredTimeoutMS, key, timeout.Milliseconds())
			}
			if most := (ev.arrived.Sub(sent)).Milliseconds(); ev.IdleForMS > most {
				t.Errorf("event idle_for_ms: got %d; want <= %d, the time since the heartbeat was sent", ev.IdleForMS, most)
			}
		})
	}
}

// The worker's timer follows the earliest deadline: a backend with a short
// timeout registered after one with a long timeout fires first, and a
// running backend whose timeout shrinks fires on the new, earlier deadline.
func TestTimerFollowsEarliestDeadline(t *testing.T) {
	t.Parallel()
	const long, short = 900 * time.Millisecond, 150 * time.Millisecond
	_, nc, events := setup(t, bus.WorkerConfig{Policy: coordinator.Policy{DefaultIdleTimeout: longTimeout}})

	sentLong, _ := heartbeat(t, nc, "slow.one", timeoutBody(long))
	heartbeat(t, nc, "shrinks", timeoutBody(longTimeout))
	sentShrink, _ := heartbeat(t, nc, "shrinks", timeoutBody(short))
	sentShort, _ := heartbeat(t, nc, "fast.one", timeoutBody(short))

	got := map[string]event{}
	for range 2 {
		ev := nextEvent(t, events, short+bound)
		got[ev.Key] = ev
	}
	if _, ok := got["fast.one"]; !ok {
		t.Fatalf("first two events: got keys %v; want fast.one and shrinks", keysOf(got))
	}
	if _, ok := got["shrinks"]; !ok {
		t.Fatalf("first two events: got keys %v; want fast.one and shrinks", keysOf(got))
	}
	checkTiming(t, sentShort, got["fast.one"].arrived, short)
	checkTiming(t, sentShrink, got["shrinks"].arrived, short)
	if c := got["shrinks"].ConfiguredTimeoutMS; c != short.Milliseconds() {
		t.Errorf("shrinks configured_timeout_ms: got %d; want %d", c, short.Milliseconds())
	}
	ev := nextEvent(t, events, long+bound)
	if ev.Key != "slow.one" {
		t.Fatalf("third event: got key %q; want slow.one", ev.Key)
	}
	checkTiming(t, sentLong, ev.arrived, long)
}

func keysOf(m map[string]event) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// A zero timeout clamps to 1 ms: the reply says so and the quiesce follows
// at once.
func TestZeroTimeoutClampsToOneMillisecond(t *testing.T) {
	t.Parallel()
	_, nc, events := setup(t, bus.WorkerConfig{Policy: coordinator.Policy{DefaultIdleTimeout: longTimeout}})
	sent, r := heartbeat(t, nc, "zero", `{"idle_timeout_ms":0}`)
	if r.IdleTimeoutMS != 1 {
		t.Errorf("reply idle_timeout_ms: got %d; want 1", r.IdleTimeoutMS)
	}
	ev := nextEvent(t, events, bound)
	checkTiming(t, sent, ev.arrived, time.Millisecond)
	if ev.Key != "zero" || ev.ConfiguredTimeoutMS != 1 {
		t.Errorf("event: got key %q configured_timeout_ms %d; want zero 1", ev.Key, ev.ConfiguredTimeoutMS)
	}
}

// Heartbeats that keep coming push the deadline back; when they stop, the
// quiesce follows one timeout after the last of them.
//
// Each heartbeat is a request, so the worker stamped heartbeat i between its
// send s[i] and its reply r[i]: the worker can have seen no heartbeat for at
// most r[i+1]-s[i]. While every such gap stays below the timeout a quiesce is
// a bug; if the machine stalled longer, one may be legitimate, and the
// attempt is repeated with a new key.
func TestHeartbeatsRearmDeadline(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	_, nc, events := setup(t, bus.WorkerConfig{Policy: coordinator.Policy{DefaultIdleTimeout: longTimeout}})
	body := timeoutBody(timeout)

	for attempt := 1; ; attempt++ {
		key := fmt.Sprintf("busy.%d", attempt)
		start := time.Now()
		var last time.Time
		var widest time.Duration // the longest the worker may have gone without a heartbeat
		stalled := false
		for time.Since(start) < 3*timeout {
			sent, _ := heartbeat(t, nc, key, body)
			if !last.IsZero() {
				widest = max(widest, time.Since(last))
			}
			last = sent
			// The wait between heartbeats doubles as the proof that no
			// quiesce arrives while the backend is busy.
			m, err := events.NextMsg(timeout / 4)
			if errors.Is(err, nats.ErrTimeout) {
				continue
			}
			if err != nil {
				t.Fatalf("NextMsg: %v", err)
			}
			widest = max(widest, time.Since(last))
			if widest < timeout {
				t.Fatalf("got quiesce %s while heartbeats kept coming (the worker went at most %v without one); want none before %v of silence",
					m.Data, widest, timeout)
			}
			if attempt == 3 {
				t.Fatalf("the machine stalled for %v, longer than the %v timeout, in %d attempts", widest, timeout, attempt)
			}
			t.Logf("attempt %d: the machine stalled for %v >= %v, so quiesce %s may be legitimate; trying again", attempt, widest, timeout, m.Data)
			stalled = true
			break
		}
		if stalled {
			continue
		}
		if st := state(t, nc, key); st != "running" {
			t.Errorf("after %v of heartbeats: got state %q; want running", time.Since(start), st)
		}
		ev := nextEvent(t, events, timeout+bound)
		checkTiming(t, last, ev.arrived, timeout)
		if ev.Key != key {
			t.Errorf("event key: got %q; want %q", ev.Key, key)
		}
		return
	}
}

// After the one quiesce, a draining backend gets no further event however
// long it stays idle.
func TestNoDuplicateWhileDraining(t *testing.T) {
	t.Parallel()
	const timeout = 100 * time.Millisecond
	w, nc, events := setup(t, bus.WorkerConfig{Policy: coordinator.Policy{DefaultIdleTimeout: longTimeout}})
	heartbeat(t, nc, "once", timeoutBody(timeout))
	nextEvent(t, events, timeout+bound)
	expectNoMsg(t, events, 5*timeout)
	if st := state(t, nc, "once"); st != "draining" {
		t.Errorf("state after the quiesce: got %q; want draining", st)
	}
	if n := w.Stats().Quiesces["idle_timeout"]; n != 1 {
		t.Errorf("Stats().Quiesces[idle_timeout]: got %d; want 1", n)
	}
}

// Fresh activity re-arms a draining or quiesced backend: it runs again and
// gets a new quiesce, with a new id, when it goes idle again.
func TestActivityAfterQuiesceRearms(t *testing.T) {
	t.Parallel()
	const timeout = 150 * time.Millisecond
	_, nc, events := setup(t, bus.WorkerConfig{Policy: coordinator.Policy{DefaultIdleTimeout: longTimeout}})
	body := timeoutBody(timeout)

	heartbeat(t, nc, "again", body)
	first := nextEvent(t, events, timeout+bound)

	// Draining → running.
	heartbeat(t, nc, "again", timeoutBody(longTimeout))
	if st := state(t, nc, "again"); st != "running" {
		t.Fatalf("state after fresh activity on a draining backend: got %q; want running", st)
	}
	sent, _ := heartbeat(t, nc, "again", body)
	second := nextEvent(t, events, timeout+bound)
	checkTiming(t, sent, second.arrived, timeout)

	// Quiesced → running.
	reportState(t, nc, "again", bus.StateQuiesced)
	sent, _ = heartbeat(t, nc, "again", body)
	third := nextEvent(t, events, timeout+bound)
	checkTiming(t, sent, third.arrived, timeout)

	for _, ev := range []event{first, second, third} {
		if ev.Key != "again" || ev.Reason != "idle_timeout" {
			t.Errorf("event: got key %q reason %q; want again idle_timeout", ev.Key, ev.Reason)
		}
	}
	if first.ID == second.ID || second.ID == third.ID || first.ID == third.ID {
		t.Errorf("event ids: got %q, %q, %q; want three different ids", first.ID, second.ID, third.ID)
	}
}

// The quiesce event carries every member of subjects.md, its id in the
// Nats-Msg-Id header, and ids never repeat: not across backends, and not
// across worker restarts (a new incarnation), which JetStream de-duplication
// relies on.
func TestQuiesceEventContract(t *testing.T) {
	t.Parallel()
	const timeout = 100 * time.Millisecond
	s := startServer(t)
	nc := connect(t, s.ClientURL())
	events := subscribe(t, nc, prefix+".quiesce.>")
	cfg := bus.WorkerConfig{Policy: coordinator.Policy{DefaultIdleTimeout: longTimeout}}

	ids := map[string]string{}
	collect := func(keys ...string) {
		t.Helper()
		sent := map[string]time.Time{}
		for _, k := range keys {
			sent[k], _ = heartbeat(t, nc, k, timeoutBody(timeout))
		}
		for range keys {
			ev := nextEvent(t, events, timeout+bound)
			sentAt, ok := sent[ev.Key]
			if !ok {
				t.Fatalf("event for key %q; want one of %v", ev.Key, keys)
			}
			delete(sent, ev.Key)
			if ev.ConfiguredTimeoutMS != timeout.Milliseconds() {
				t.Errorf("configured_timeout_ms: got %d; want %d", ev.ConfiguredTimeoutMS, timeout.Milliseconds())
			}
			if most := ev.arrived.Sub(sentAt).Milliseconds(); ev.IdleForMS < timeout.Milliseconds() || ev.IdleForMS > most {
				t.Errorf("idle_for_ms: got %d; want %d..%d", ev.IdleForMS, timeout.Milliseconds(), most)
			}
			// at is the worker's wall clock at emission: after the heartbeat
			// was sent plus the timeout, before the event arrived.
			lo, hi := sentAt.Round(0).Add(timeout-100*time.Millisecond), ev.arrived.Round(0).Add(100*time.Millisecond)
			if ev.At.Before(lo) || ev.At.After(hi) {
				t.Errorf("at: got %s; want between %s and %s", ev.atRaw, lo.UTC().Format(time.RFC3339Nano), hi.UTC().Format(time.RFC3339Nano))
			}
			if prev, dup := ids[ev.ID]; dup {
				t.Errorf("event id %q of %q repeats the id of an event for %q; want unique ids", ev.ID, ev.Key, prev)
			}
			ids[ev.ID] = ev.Key
		}
	}

	w1 := startWorker(t, s.ClientURL(), cfg)
	collect("c.one", "c.two", "c.three")
	if err := w1.stop(bound); err != nil {
		t.Fatal(err)
	}
	// A restarted worker starts from an empty state; the same keys must get
	// new ids.
	startWorker(t, s.ClientURL(), cfg)
	collect("c.one", "c.two", "c.three")
	if len(ids) != 6 {
		t.Errorf("got %d distinct ids over 6 events; want 6", len(ids))
	}
}

// The Nats-Msg-Id header does what it is for: a JetStream stream capturing
// the events stores each once, and refuses a re-sent copy as a duplicate.
func TestQuiesceEventsDeduplicateInJetStream(t *testing.T) {
	t.Parallel()
	const timeout = 100 * time.Millisecond
	s := startServer(t, natstest.JetStream())
	startWorker(t, s.ClientURL(), bus.WorkerConfig{Policy: coordinator.Policy{DefaultIdleTimeout: longTimeout}})
	nc := connect(t, s.ClientURL())
	events := subscribe(t, nc, prefix+".quiesce.>")
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "QUIESCE", Subjects: []string{prefix + ".quiesce.>"}, Duplicates: time.Minute, Storage: jetstream.MemoryStorage,
	})
	if err != nil {
		t.Fatalf("create stream: %v", err)
	}
	stored := func() uint64 {
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatalf("stream info: %v", err)
		}
		return info.State.Msgs
	}

	heartbeat(t, nc, "js.backend", timeoutBody(timeout))
	ev := nextEvent(t, events, timeout+bound)
	waitFor(t, bound, func() bool { return stored() == 1 })

	ack, err := js.PublishMsg(ctx, &nats.Msg{Subject: ev.msg.Subject, Data: ev.msg.Data, Header: ev.msg.Header})
	if err != nil {
		t.Fatalf("re-publish: %v", err)
	}
	if !ack.Duplicate {
		t.Errorf("re-sent event %s: got PubAck.Duplicate false; want true", ev.ID)
	}
	// Core subscribers see the copy; it is ours, not a new emission.
	if cp := nextEvent(t, events, bound); cp.ID != ev.ID {
		t.Fatalf("re-sent copy: got id %q; want %q", cp.ID, ev.ID)
	}
	// A new running period is a new emission, not a duplicate.
	heartbeat(t, nc, "js.backend", timeoutBody(timeout))
	ev2 := nextEvent(t, events, timeout+bound)
	waitFor(t, bound, func() bool { return stored() == 2 })
	if ev2.ID == ev.ID {
		t.Errorf("second emission id: got %q again; want a new id", ev2.ID)
	}
}

// Accepted heartbeat bodies, and the reply's idle_timeout_ms for each. Each
// heartbeat replaces the entry, so the last body decides the timeout and a
// body naming none brings back the default.
func TestHeartbeatBodies(t *testing.T) {
	t.Parallel()
	const def, maxTO, maxBody = 30 * time.Second, time.Minute, 128
	_, nc, _ := setup(t, bus.WorkerConfig{
		Policy:     coordinator.Policy{DefaultIdleTimeout: def},
		MaxTimeout: maxTO,
		MaxBody:    maxBody,
	})
	padded := padBody(`{"idle_timeout_ms":45000,"pad":"`, `"}`, maxBody)
	tests := []struct {
		name string
		body string
		want int64
	}{
		{"empty", "", def.Milliseconds()},
		{"white space", " \r\n\t ", def.Milliseconds()},
		{"own timeout", `{"idle_timeout_ms":40000}`, 40000},
		{"empty object", "{}", def.Milliseconds()},
		{"spaces", ` { "idle_timeout_ms" : 41000 } `, 41000},
		{"other members only", `{"note":"x","n":[1,2]}`, def.Milliseconds()},
		{"zero", `{"idle_timeout_ms":0}`, 1},
		{"maximum", fmt.Sprintf(`{"idle_timeout_ms":%d}`, maxTO.Milliseconds()), maxTO.Milliseconds()},
		{"nested member ignored", `{"a":{"idle_timeout_ms":"nested"},"idle_timeout_ms":42000}`, 42000},
		{"escaped member name", `{"idle\u005ftimeout_ms":43000}`, 43000},
		{"body of exactly max body bytes", padded, 45000},
		{"back to the default", "", def.Milliseconds()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, r := heartbeat(t, nc, "replace.me", tt.body)
			if r.IdleTimeoutMS != tt.want {
				t.Errorf("heartbeat %q: got idle_timeout_ms %d; want %d", tt.body, r.IdleTimeoutMS, tt.want)
			}
			b, ok := adminGet(t, nc, "replace.me")
			if !ok {
				t.Fatalf("admin get replace.me: got unknown; want tracked")
			}
			if b.IdleTimeoutMS != tt.want {
				t.Errorf("admin get after %q: got idle_timeout_ms %d; want %d", tt.body, b.IdleTimeoutMS, tt.want)
			}
		})
	}
}

// padBody returns head + padding + tail, exactly n bytes long.
func padBody(head, tail string, n int) string {
	return head + strings.Repeat("x", n-len(head)-len(tail)) + tail
}
