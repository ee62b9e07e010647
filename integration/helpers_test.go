package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/internal/logtest"
	"github.com/idle-worker/idle-worker/internal/natstest"
)

const (
	// bound is how long a test waits for something that must happen.
	bound = 5 * time.Second
	// lateSlack is how late after its deadline a quiesce may arrive. It is
	// generous because the machine is noisy (-race, two cores, parallel
	// tests); it still catches a timer that never fires or a slow poll.
	lateSlack = 500 * time.Millisecond
	// prefix is the subject prefix the in-process tests use: the default.
	prefix = "idle"
	// longTimeout is an idle timeout no test waits for.
	longTimeout = time.Hour
)

// startServer starts an embedded nats-server on 127.0.0.1 and a random port
// (natstest.Start) and shuts it down when the test ends.
func startServer(t *testing.T, opts ...natstest.Option) *server.Server {
	t.Helper()
	stalls.start()
	return natstest.Start(t, opts...).Server
}

// connect returns a real NATS connection to url, closed when the test ends.
func connect(t *testing.T, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	opts = append([]nats.Option{
		nats.Name(t.Name()),
		nats.Timeout(bound),
		nats.NoReconnect(),
	}, opts...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// testWorker is a bus.Worker running in a goroutine of the test.
type testWorker struct {
	*bus.Worker
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// stop cancels the worker's context and waits up to timeout for Run to
// return; it returns an error unless Run returned nil in time. It may be
// called more than once.
func (tw *testWorker) stop(timeout time.Duration) error {
	tw.once.Do(func() {
		tw.cancel()
		select {
		case err := <-tw.done:
			if err != nil {
				tw.err = fmt.Errorf("Run returned %v; want nil", err)
			}
		case <-time.After(timeout):
			tw.err = fmt.Errorf("Run did not return within %v of cancellation", timeout)
		}
	})
	return tw.err
}

// startWorker runs bus.NewWorker(nc, cfg).Run on its own connection to url,
// waits until the worker is ready, and stops it when the test ends, failing
// the test unless Run returns nil promptly. The worker's logs are printed
// when the test fails.
func startWorker(t *testing.T, url string, cfg bus.WorkerConfig) *testWorker {
	t.Helper()
	return startWorkerOn(t, connect(t, url), cfg)
}

// startWorkerOn is startWorker on a connection of the test's making.
func startWorkerOn(t *testing.T, nc *nats.Conn, cfg bus.WorkerConfig) *testWorker {
	t.Helper()
	if cfg.Logger == nil {
		logs := new(logtest.Buffer)
		cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("worker log:\n%s", logs)
			}
		})
	}
	w, err := bus.NewWorker(nc, cfg)
	if err != nil {
		t.Fatalf("NewWorker: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tw := &testWorker{Worker: w, nc: nc, cancel: cancel, done: make(chan error, 1)}
	go func() { tw.done <- w.Run(ctx) }()
	t.Cleanup(func() {
		if err := tw.stop(bound); err != nil {
			t.Errorf("stopping the worker: %v", err)
		}
	})
	select {
	case <-w.Ready():
	case err := <-tw.done:
		tw.once.Do(func() {}) // Run is over; nothing to stop
		t.Fatalf("Run returned %v before the worker was ready", err)
	case <-time.After(bound):
		t.Fatalf("worker not ready within %v", bound)
	}
	return tw
}

// setup starts a server, a worker with cfg, and a client connection that
// subscribes to every quiesce event under prefix.
func setup(t *testing.T, cfg bus.WorkerConfig) (*testWorker, *nats.Conn, *nats.Subscription) {
	t.Helper()
	s := startServer(t)
	w := startWorker(t, s.ClientURL(), cfg)
	nc := connect(t, s.ClientURL())
	events := subscribe(t, nc, prefix+".quiesce.>")
	return w, nc, events
}

// waitFor polls cond until it returns true, and fails the test when that
// takes longer than timeout.
func waitFor(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	natstest.WaitFor(t, timeout, "the condition", cond)
}

// subscribe subscribes synchronously and makes sure the server has the
// subscription before returning.
func subscribe(t *testing.T, nc *nats.Conn, subject string) *nats.Subscription {
	t.Helper()
	sub, err := nc.SubscribeSync(subject)
	if err != nil {
		t.Fatalf("subscribe %s: %v", subject, err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatalf("pending limits: %v", err)
	}
	if err := nc.FlushTimeout(bound); err != nil {
		t.Fatalf("flush: %v", err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return sub
}

// expectNoMsg waits window and fails if sub receives anything in it.
func expectNoMsg(t *testing.T, sub *nats.Subscription, window time.Duration) {
	t.Helper()
	m, err := sub.NextMsg(window)
	switch {
	case err == nil:
		t.Fatalf("got a message on %s within %v: %s; want none", m.Subject, window, m.Data)
	case !errors.Is(err, nats.ErrTimeout):
		t.Fatalf("NextMsg on %s: %v; want nats.ErrTimeout", sub.Subject, err)
	}
}

// request sends body to subject and returns the reply.
func request(t *testing.T, nc *nats.Conn, subject, body string) *nats.Msg {
	t.Helper()
	m, err := nc.Request(subject, []byte(body), bound)
	if err != nil {
		t.Fatalf("request %s %q: %v", subject, truncate(body), err)
	}
	return m
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// members decodes a JSON object into its members.
func members(t *testing.T, data []byte) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil || m == nil {
		t.Fatalf("reply %s is not a JSON object: %v", data, err)
	}
	return m
}

// wantMembers fails unless the JSON object data has exactly the members
// named.
func wantMembers(t *testing.T, data []byte, names ...string) {
	t.Helper()
	m := members(t, data)
	var got []string
	for k := range m {
		got = append(got, k)
	}
	slices.Sort(got)
	want := slices.Sorted(slices.Values(names))
	if !slices.Equal(got, want) {
		t.Errorf("members of %s: got %v; want %v", data, got, want)
	}
}

// decodeOK decodes an ok:true reply into v.
func decodeOK(t *testing.T, m *nats.Msg, v any) {
	t.Helper()
	var ok struct {
		OK    *bool  `json:"ok"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &ok); err != nil {
		t.Fatalf("reply %s: %v", m.Data, err)
	}
	if ok.OK == nil || !*ok.OK {
		t.Fatalf("reply %s: got ok:false (%q); want ok:true", m.Data, ok.Error)
	}
	if err := json.Unmarshal(m.Data, v); err != nil {
		t.Fatalf("reply %s: %v", m.Data, err)
	}
}

// refusal checks that m is {"ok":false,"error":"..."} and returns the error.
func refusal(t *testing.T, m *nats.Msg) string {
	t.Helper()
	wantMembers(t, m.Data, "ok", "error")
	var r struct {
		OK    *bool   `json:"ok"`
		Error *string `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &r); err != nil {
		t.Fatalf("reply %s: %v", m.Data, err)
	}
	if r.OK == nil || *r.OK {
		t.Fatalf("reply %s: got ok %v; want ok:false", m.Data, r.OK)
	}
	if r.Error == nil || *r.Error == "" {
		t.Fatalf("reply %s: got no error text; want one", m.Data)
	}
	return *r.Error
}

// heartbeat sends a heartbeat request and checks the ok reply. It returns the
// time just before the heartbeat was sent and the reply.
func heartbeat(t *testing.T, nc *nats.Conn, key, body string) (time.Time, bus.HeartbeatReply) {
	t.Helper()
	sent := time.Now()
	m := request(t, nc, prefix+".activity."+key, body)
	wantMembers(t, m.Data, "ok", "key", "idle_timeout_ms")
	var r bus.HeartbeatReply
	decodeOK(t, m, &r)
	if r.Key != key {
		t.Errorf("heartbeat reply key: got %q; want %q", r.Key, key)
	}
	return sent, r
}

// timeoutBody is a heartbeat body naming timeout d.
func timeoutBody(d time.Duration) string {
	return fmt.Sprintf(`{"idle_timeout_ms":%d}`, d.Milliseconds())
}

// reportState sends a state report request and checks the ok reply.
func reportState(t *testing.T, nc *nats.Conn, key, state string) {
	t.Helper()
	m := request(t, nc, prefix+".state."+key, `{"state":"`+state+`"}`)
	wantMembers(t, m.Data, "ok", "key", "state")
	var r bus.StateReply
	decodeOK(t, m, &r)
	if r.Key != key || r.State != state {
		t.Errorf("state reply: got key %q state %q; want %q %q", r.Key, r.State, key, state)
	}
}

// event is a received quiesce event.
type event struct {
	bus.QuiesceEvent
	msg     *nats.Msg
	arrived time.Time
	atRaw   string
}

// nextEvent waits up to timeout for a quiesce event on sub, and checks it
// against the contract of subjects.md: exactly the documented members with
// their types, `at` in RFC 3339 UTC, a Nats-Msg-Id header equal to the id
// (<id>.<attempt>.<run> for a re-send through the store), and the subject
// P.quiesce.<key>.
func nextEvent(t *testing.T, sub *nats.Subscription, timeout time.Duration) event {
	t.Helper()
	return nextEventPrefix(t, sub, prefix, timeout)
}

func nextEventPrefix(t *testing.T, sub *nats.Subscription, pfx string, timeout time.Duration) event {
	t.Helper()
	m, err := sub.NextMsg(timeout)
	arrived := time.Now()
	if err != nil {
		t.Fatalf("waiting %v for a quiesce event on %s: %v", timeout, sub.Subject, err)
	}
	return checkEvent(t, m, pfx, arrived)
}

func checkEvent(t *testing.T, m *nats.Msg, pfx string, arrived time.Time) event {
	t.Helper()
	wantMembers(t, m.Data, "id", "key", "reason", "idle_for_ms", "configured_timeout_ms", "at", "attempt")
	var raw struct {
		ID                  *string `json:"id"`
		Key                 *string `json:"key"`
		Reason              *string `json:"reason"`
		IdleForMS           *int64  `json:"idle_for_ms"`
		ConfiguredTimeoutMS *int64  `json:"configured_timeout_ms"`
		At                  *string `json:"at"`
		Attempt             *int    `json:"attempt"`
	}
	if err := json.Unmarshal(m.Data, &raw); err != nil {
		t.Fatalf("quiesce event %s: %v", m.Data, err)
	}
	if raw.ID == nil || raw.Key == nil || raw.Reason == nil || raw.IdleForMS == nil || raw.ConfiguredTimeoutMS == nil || raw.At == nil || raw.Attempt == nil {
		t.Fatalf("quiesce event %s: a member is null", m.Data)
	}
	ev := event{msg: m, arrived: arrived, atRaw: *raw.At}
	ev.ID, ev.Key, ev.Reason = *raw.ID, *raw.Key, *raw.Reason
	ev.IdleForMS, ev.ConfiguredTimeoutMS = *raw.IdleForMS, *raw.ConfiguredTimeoutMS
	at, err := time.Parse(time.RFC3339Nano, *raw.At)
	if err != nil {
		t.Errorf("quiesce event at %q: %v; want RFC 3339", *raw.At, err)
	}
	if !strings.HasSuffix(*raw.At, "Z") {
		t.Errorf("quiesce event at %q: got a non-UTC offset; want UTC (suffix Z)", *raw.At)
	}
	ev.At = at
	if ev.ID == "" {
		t.Errorf("quiesce event %s: got an empty id; want one", m.Data)
	}
	if got := m.Header.Get(bus.HeaderMsgID); !msgIDMatches(got, ev.ID, *raw.Attempt, viaStore(m)) {
		t.Errorf("quiesce event header Nats-Msg-Id: got %q; want the body id %q (or %s.%d.<run> for a re-send through the store)", got, ev.ID, ev.ID, *raw.Attempt)
	}
	if want := pfx + ".quiesce." + ev.Key; m.Subject != want {
		t.Errorf("quiesce event subject: got %q; want %q", m.Subject, want)
	}
	switch ev.Reason {
	case "idle_timeout", "maintenance", "broker_shutdown":
	default:
		t.Errorf("quiesce event reason: got %q; want idle_timeout, maintenance or broker_shutdown", ev.Reason)
	}
	if ev.IdleForMS < 0 || ev.ConfiguredTimeoutMS < 0 {
		t.Errorf("quiesce event %s: got negative durations", m.Data)
	}
	if ev.Attempt = *raw.Attempt; ev.Attempt < 1 {
		t.Errorf("quiesce event %s: got attempt %d; want >= 1", m.Data, ev.Attempt)
	}
	if ev.Reason == "idle_timeout" && ev.IdleForMS < ev.ConfiguredTimeoutMS {
		t.Errorf("idle_timeout event: got idle_for_ms %d < configured_timeout_ms %d; want >=", ev.IdleForMS, ev.ConfiguredTimeoutMS)
	}
	// The worker's wall clock is ours: at lies between now and a while ago.
	if wall := time.Now(); at.After(wall.Add(time.Second)) || at.Before(wall.Add(-time.Minute)) {
		t.Errorf("quiesce event at %v: want close to the wall clock %v", at, wall)
	}
	if _, err := bus.ParseQuiesceEvent(m.Data); err != nil {
		t.Errorf("bus.ParseQuiesceEvent(%s): %v", m.Data, err)
	}
	return ev
}

// viaStore reports whether m was republished by the store's stream, which
// adds the Nats-Stream header.
func viaStore(m *nats.Msg) bool { return m.Header.Get("Nats-Stream") != "" }

// checkTiming fails unless a quiesce that arrived at arrived, for a backend
// whose last heartbeat was sent at sent, came neither before timeout nor
// later than timeout+lateSlack, plus however long this process was measured
// to be starved of CPU in between.
func checkTiming(t *testing.T, sent, arrived time.Time, timeout time.Duration) {
	t.Helper()
	got := arrived.Sub(sent)
	if got < timeout {
		t.Errorf("quiesce arrived %v after the last heartbeat was sent; want >= %v (never early)", got, timeout)
	}
	stalled := stalls.between(sent, arrived)
	if got > timeout+lateSlack+stalled {
		t.Errorf("quiesce arrived %v after the last heartbeat was sent; want <= %v (timeout %v + slack %v + %v measured CPU starvation)",
			got, timeout+lateSlack+stalled, timeout, lateSlack, stalled)
	}
}

// adminList sends P.admin.list with body and checks and returns the reply.
func adminList(t *testing.T, nc *nats.Conn, body string) bus.ListReply {
	t.Helper()
	m := request(t, nc, prefix+".admin.list", body)
	wantMembers(t, m.Data, "ok", "backends", "total", "truncated", "unacknowledged")
	if !bytes.Contains(m.Data, []byte(`"backends":[`)) {
		t.Errorf("list reply %s: want backends to be an array", m.Data)
	}
	var r bus.ListReply
	decodeOK(t, m, &r)
	for _, b := range r.Backends {
		if b.Key == "" || b.State == "" {
			t.Errorf("list reply %s: got a backend without key or state", m.Data)
		}
	}
	return r
}

// adminGet returns P.admin.get's reply for key, and false when the worker
// answered ok:false with 404.
func adminGet(t *testing.T, nc *nats.Conn, key string) (bus.BackendInfo, bool) {
	t.Helper()
	body, _ := json.Marshal(bus.GetRequest{Key: key})
	m := request(t, nc, prefix+".admin.get", string(body))
	if code := m.Header.Get(micro.ErrorCodeHeader); code != "" {
		if code != "404" {
			t.Fatalf("admin get %q: got error code %q (%s); want 404 or success", key, code, m.Data)
		}
		refusal(t, m)
		return bus.BackendInfo{}, false
	}
	wantMembers(t, m.Data, "ok", "backend")
	var r bus.GetReply
	decodeOK(t, m, &r)
	wantMembers(t, members(t, m.Data)["backend"], "key", "state", "idle_for_ms", "idle_timeout_ms", "attempts")
	return r.Backend, true
}

// state returns the state of key as admin get reports it, or "" when the
// worker does not track it.
func state(t *testing.T, nc *nats.Conn, key string) string {
	t.Helper()
	b, ok := adminGet(t, nc, key)
	if !ok {
		return ""
	}
	return b.State
}

// adminQuiesce sends P.admin.quiesce and returns the number quiesced.
func adminQuiesce(t *testing.T, nc *nats.Conn, body string) int {
	t.Helper()
	m := request(t, nc, prefix+".admin.quiesce", body)
	wantMembers(t, m.Data, "ok", "quiesced")
	var r bus.QuiesceReply
	decodeOK(t, m, &r)
	return r.Quiesced
}

// statsDiff returns how the counters moved from a to b, by name; counters
// that did not move are left out.
func statsDiff(a, b bus.Stats) map[string]int64 {
	d := make(map[string]int64)
	add := func(name string, x, y uint64) {
		if x != y {
			d[name] = int64(y) - int64(x)
		}
	}
	add("heartbeats", a.Heartbeats, b.Heartbeats)
	add("state_reports", a.StateReports, b.StateReports)
	add("publish_errors", a.PublishErrors, b.PublishErrors)
	add("dropped", a.Dropped, b.Dropped)
	for _, r := range []string{"idle_timeout", "maintenance", "broker_shutdown"} {
		add("quiesces."+r, a.Quiesces[r], b.Quiesces[r])
	}
	for _, r := range []string{"bad_key", "bad_payload", "timeout_too_large", "unknown_backend", "backend_limit", "bad_admin_request", "bad_reply"} {
		add("rejected."+r, a.Rejected[r], b.Rejected[r])
	}
	return d
}

func mustKey(t *testing.T, id bus.BackendID) string {
	t.Helper()
	k, err := id.Key()
	if err != nil {
		t.Fatalf("%+v.Key(): %v", id, err)
	}
	return k
}
