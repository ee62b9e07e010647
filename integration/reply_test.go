package integration

import (
	"maps"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/partition"
	"github.com/idle-worker/idle-worker/store"
)

// The worker answers only on inboxes. Under deploy/nats-server.conf a
// backend of instance dev-7 may publish only dev-7's subjects, but the
// worker replies with its own permissions wherever a request's reply subject
// points: before the reply filter, a state report with reply
// idle.state.dev-8.… removed a dev-8 backend, and one with a reply into the
// worker's own store (its log, high-water mark or id under idle.store., or
// the JetStream API) would have written there. Each such message is still
// applied (it is the sender's own backend) but not answered, and counted as
// bad_reply: the worker publishes nothing on those subjects, and the
// store's stream is left as it was.
func TestSecConfReplyInjection(t *testing.T) {
	st := newSecSetup(t)
	const key7, key8 = "dev-7.gopls.1.aa", "dev-8.gopls.1.bb"
	heartbeat(t, st.backend7.Conn, key7, "")
	heartbeat(t, st.backend8.Conn, key8, "")
	quiesce8 := subscribe(t, st.broker8.Conn, prefix+".quiesce.dev-8.>")
	base := st.worker.Stats()

	type attack struct {
		name    string
		from    *secConn
		subject string
		body    string
		reply   string
	}
	send := func(attacks []attack) {
		t.Helper()
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
		// The server routed every attack to the worker before this request,
		// and the worker applies messages in order: once it answers, it has
		// handled them all, and published whatever it would publish for
		// them.
		heartbeat(t, st.backend7.Conn, key7, "")
	}
	routed := []attack{
		{"state report answered on another instance's state subject", st.broker7,
			prefix + ".state." + key7, `{"state":"draining"}`, prefix + ".state." + key8},
		{"heartbeat answered on another instance's quiesce subject", st.backend7,
			prefix + ".activity." + key7, "", prefix + ".quiesce." + key8},
	}
	// A view of the store as the worker's user, which may read it whole.
	v := openStoreView(t, secDialAs(t, st.srv, secWorker, st.passwords[secWorker.name]).Conn)
	r7 := v.record(key7)
	send(routed)
	// Replies into the store: dev-7's backend is running and tracked, so
	// these heartbeats change no record, and the store writes nothing for
	// them. The stream's messages, subject by subject, must stay as they
	// are.
	// The routed attacks' records (dev-7 draining, then running again) are
	// written without a reply to wait for: wait until they are stored.
	relWaitRecord(t, v, key7, "running, written twice more", func(r relRecord) bool { return r.State == "running" && r.rev >= r7.rev+2 })
	before := v.counts()
	intoStore := []attack{
		{"heartbeat answered into a partition's log", st.backend7,
			prefix + ".activity." + key7, "", storeLog(3)},
		{"heartbeat answered as an event", st.backend7,
			prefix + ".activity." + key7, "", storeEventIn(partition.Of(key8, store.DefaultPartitions), key8)},
		{"heartbeat answered into the store's high-water mark", st.backend7,
			prefix + ".activity." + key7, "", storeHWMSubject},
		{"heartbeat answered into the store's id", st.backend7,
			prefix + ".activity." + key7, "", storeMetaSubject},
		{"heartbeat answered on the JetStream API", st.backend7,
			prefix + ".activity." + key7, "", "$JS.API.STREAM.PURGE." + store.DefaultStreamName},
		{"heartbeat answered by deleting the stream", st.backend7,
			prefix + ".activity." + key7, "", "$JS.API.STREAM.DELETE." + store.DefaultStreamName},
	}
	send(intoStore)
	attacks := len(routed) + len(intoStore)

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
	// Heartbeats: every attack but the state report, and two barriers.
	if got.StateReports-base.StateReports != 1 || got.Heartbeats-base.Heartbeats != uint64(attacks+1) {
		t.Errorf("applied %d state reports and %d heartbeats; want 1 and %d",
			got.StateReports-base.StateReports, got.Heartbeats-base.Heartbeats, attacks+1)
	}
	if n := got.Rejected["bad_reply"] - base.Rejected["bad_reply"]; n != uint64(attacks) {
		t.Errorf("bad_reply counted %d; want %d", n, attacks)
	}
	// The stream is still there, with the same messages on every subject.
	if after := v.counts(); !maps.Equal(after, before) {
		t.Errorf("stream messages by subject after the replies into the store: got %v; want them unchanged, %v", after, before)
	}
	if m := v.last(storeHWMSubject); m == nil || !allDigits(m.Data) {
		t.Errorf("store high-water mark: got %v; want a number", m)
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
