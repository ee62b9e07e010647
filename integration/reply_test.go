package integration

import (
	"context"
	"errors"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/store"
)

// The worker answers only on inboxes. Under deploy/nats-server.conf a
// backend of instance dev-7 may publish only dev-7's subjects, but the
// worker replies with its own permissions wherever a request's reply subject
// points: before the reply filter, a state report with reply
// idle.state.dev-8.… removed a dev-8 backend, and one with reply
// $KV.idle_registry.… wrote into the worker's own registry. Each such
// message is still applied (it is the sender's own backend) but not
// answered, and counted as bad_reply.
func TestSecConfReplyInjection(t *testing.T) {
	st := newSecSetup(t)
	const key7, key8 = "dev-7.gopls.1.aa", "dev-8.gopls.1.bb"
	heartbeat(t, st.backend7.Conn, key7, "")
	heartbeat(t, st.backend8.Conn, key8, "")
	quiesce8 := subscribe(t, st.broker8.Conn, prefix+".quiesce.dev-8.>")
	base := st.worker.Stats()

	attacks := []struct {
		name    string
		from    *secConn
		subject string
		body    string
		reply   string
	}{
		{"state report answered on another instance's state subject", st.broker7,
			prefix + ".state." + key7, `{"state":"draining"}`, prefix + ".state." + key8},
		{"heartbeat answered on another instance's quiesce subject", st.backend7,
			prefix + ".activity." + key7, "", prefix + ".quiesce." + key8},
		{"heartbeat answered into the registry", st.backend7,
			prefix + ".activity." + key7, "", "$KV." + store.DefaultRegistryBucket + ".m.test"},
		{"heartbeat answered into the registry's high-water mark", st.backend7,
			prefix + ".activity." + key7, "", "$KV." + store.DefaultRegistryBucket + ".m.hwm"},
		{"heartbeat answered on the JetStream API", st.backend7,
			prefix + ".activity." + key7, "", "$JS.API.STREAM.DELETE." + store.DefaultStreamName},
	}
	for _, a := range attacks {
		if err := a.from.PublishMsg(&nats.Msg{Subject: a.subject, Reply: a.reply, Data: []byte(a.body)}); err != nil {
			t.Fatalf("%s: publish: %v", a.name, err)
		}
	}
	for _, c := range []*secConn{st.broker7, st.backend7} {
		if err := c.FlushTimeout(bound); err != nil {
			t.Fatal(err)
		}
	}
	// The server routed every attack to the worker before this request, and
	// the worker applies messages in order: once it answers, it has handled
	// them all, and published whatever it would publish for them.
	heartbeat(t, st.backend7.Conn, key7, "")
	if s := state(t, st.operator.Conn, key8); s != "running" {
		t.Errorf("dev-8's backend is %q; want it untouched, running", s)
	}
	if err := st.broker8.FlushTimeout(bound); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := quiesce8.Pending(); n != 0 {
		m, _ := quiesce8.NextMsg(0)
		t.Errorf("dev-8's broker received %d quiesce messages, first %q; want none", n, m.Data)
	}
	// Each message was applied: dev-7's backend was reported draining, then
	// heartbeats made it running again; each refused reply was counted.
	got := st.worker.Stats()
	if got.StateReports-base.StateReports != 1 || got.Heartbeats-base.Heartbeats != uint64(len(attacks)) {
		t.Errorf("applied %d state reports and %d heartbeats; want 1 and %d",
			got.StateReports-base.StateReports, got.Heartbeats-base.Heartbeats, len(attacks))
	}
	if n := got.Rejected["bad_reply"] - base.Rejected["bad_reply"]; n != uint64(len(attacks)) {
		t.Errorf("bad_reply counted %d; want %d", n, len(attacks))
	}
	// The registry holds no forged entry, and its high-water mark is a number.
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	js, err := jetstream.New(st.operator.Conn)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, store.DefaultRegistryBucket)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := kv.Get(ctx, "m.test"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("registry entry m.test: got %v, %v; want none", e, err)
	}
	waitFor(t, bound, func() bool { _, err := kv.Get(ctx, "m.hwm"); return err == nil })
	if e, err := kv.Get(ctx, "m.hwm"); err != nil || !allDigits(e.Value()) {
		t.Errorf("registry m.hwm: %v; want a number, got %q", err, entryValue(e))
	}
	if _, err := js.Stream(ctx, store.DefaultStreamName); err != nil {
		t.Errorf("quiesce stream: %v; want it still there", err)
	}
	for _, c := range []*secConn{st.workerConn, st.backend7, st.broker7, st.operator} {
		c.expectNoErrors(t)
	}
}

func allDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(b) > 0
}

func entryValue(e jetstream.KeyValueEntry) string {
	if e == nil {
		return ""
	}
	return string(e.Value())
}

// An admin request with a reply subject outside the inboxes is applied (a
// pattern quiesce drains) but not answered, and counted as bad_reply.
func TestAdminReplyOutsideInbox(t *testing.T) {
	w, nc, events := setup(t, bus.WorkerConfig{Policy: coordinator.DefaultPolicy()})
	const key = "dev-7.gopls.1.aa"
	heartbeat(t, nc, key, "")
	watch := subscribe(t, nc, prefix+".state.>")
	if err := nc.PublishMsg(&nats.Msg{Subject: prefix + ".admin.quiesce", Reply: prefix + ".state." + key, Data: []byte(`{"match":"` + key + `"}`)}); err != nil {
		t.Fatal(err)
	}
	ev := nextEvent(t, events, bound)
	if ev.Key != key || ev.Reason != "maintenance" {
		t.Errorf("event %+v; want a maintenance quiesce of %s", ev.QuiesceEvent, key)
	}
	waitFor(t, bound, func() bool { return w.Stats().Rejected["bad_reply"] == 1 })
	if err := nc.FlushTimeout(bound); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := watch.Pending(); n != 0 {
		t.Errorf("%d messages on %s.state.>; want no reply there", n, prefix)
	}
	if s := state(t, nc, key); s != "draining" {
		t.Errorf("backend is %q; want draining", s)
	}
}

// A worker whose connection has inboxes of its own (as idle-worker's does)
// refuses replies into them: a client that read one of its acknowledgement
// inboxes (brokers see them on quiesce events) cannot have the worker answer
// into its own JetStream acknowledgement handler.
func TestReplyIntoWorkersOwnInbox(t *testing.T) {
	s := startServer(t)
	wnc := connect(t, s.ClientURL(), nats.CustomInboxPrefix("_INBOX.worker-own"))
	w := startWorkerOn(t, wnc, bus.WorkerConfig{Policy: coordinator.DefaultPolicy()})
	nc := connect(t, s.ClientURL())
	if err := nc.PublishMsg(&nats.Msg{Subject: prefix + ".activity.own.a", Reply: "_INBOX.worker-own.ack.1"}); err != nil {
		t.Fatal(err)
	}
	heartbeat(t, nc, "own.b", "") // an ordinary inbox is still answered
	if got := w.Stats(); got.Rejected["bad_reply"] != 1 || got.Heartbeats != 2 {
		t.Errorf("bad_reply %d, heartbeats %d; want 1 and 2 (applied, not answered)", got.Rejected["bad_reply"], got.Heartbeats)
	}
}
