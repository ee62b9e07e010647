package integration

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/internal/natstest"
)

// reviewFirstRun starts a worker with a registry, drains and removes
// "rv.used" (first generation), keeps "rv.keep" running, stops the worker,
// and returns the id of the event rv.used was sent.
func reviewFirstRun(t *testing.T, url string) string {
	t.Helper()
	opts := relOptions{policy: coordinator.Policy{DefaultIdleTimeout: longTimeout}, registry: true}
	first, _ := relStartWorker(t, url, opts)
	nc := connect(t, url)
	events := subscribe(t, nc, prefix+".quiesce.>")
	heartbeat(t, nc, "rv.used", "")
	heartbeat(t, nc, "rv.keep", "")
	if n := adminQuiesce(t, nc, `{"match":"rv.used"}`); n != 1 {
		t.Fatalf("quiesce rv.used: %d", n)
	}
	ev := nextEvent(t, events, bound)
	reportState(t, nc, "rv.used", "removed")
	kv := relKV(t, nc)
	relWaitRecord(t, kv, "rv.used", "deleted", func(r relRecord) bool { return !r.found })
	if err := first.stop(bound); err != nil {
		t.Fatal(err)
	}
	return ev.ID
}

// A hand-written running record with a low generation (one already used
// by an event of another backend) is restored as is, and its drain reuses
// that event id.
func TestReviewLowGenerationReusesID(t *testing.T) {
	s := startServer(t, natstest.JetStream())
	usedID := reviewFirstRun(t, s.ClientURL())
	nc := connect(t, s.ClientURL())
	kv := relKV(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	if _, err := kv.PutString(ctx, "b.rv.evil", `{"timeout_ms":60000,"state":"running","generation":1}`); err != nil {
		t.Fatal(err)
	}
	relStartWorker(t, s.ClientURL(), relOptions{policy: coordinator.Policy{DefaultIdleTimeout: longTimeout}, registry: true})
	events := subscribe(t, nc, prefix+".quiesce.>")
	if n := adminQuiesce(t, nc, `{"match":"rv.evil"}`); n != 1 {
		t.Fatalf("quiesce rv.evil: %d", n)
	}
	if ev := nextEvent(t, events, bound); ev.ID == usedID {
		t.Errorf("rv.evil drained with id %s, already sent to rv.used", ev.ID)
	}
}

// Deleting m.hwm while records remain lets the next generations restart
// from the highest record's, reusing ids already sent.
func TestReviewMissingHighWaterReusesID(t *testing.T) {
	s := startServer(t, natstest.JetStream())
	usedID := reviewFirstRun(t, s.ClientURL()) // rv.used gen 1, rv.keep gen 2
	nc := connect(t, s.ClientURL())
	kv := relKV(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	// m.hwm gone, and no record above the generation rv.used had: the
	// worker restarts its generations below ids it already sent.
	if err := kv.Purge(ctx, "m.hwm"); err != nil {
		t.Fatal(err)
	}
	if err := kv.Purge(ctx, "b.rv.keep"); err != nil {
		t.Fatal(err)
	}
	relStartWorker(t, s.ClientURL(), relOptions{policy: coordinator.Policy{DefaultIdleTimeout: longTimeout}, registry: true})
	events := subscribe(t, nc, prefix+".quiesce.>")
	heartbeat(t, nc, "rv.new", "")
	if n := adminQuiesce(t, nc, `{"match":"rv.new"}`); n != 1 {
		t.Fatalf("quiesce rv.new: %d", n)
	}
	if ev := nextEvent(t, events, bound); ev.ID == usedID {
		t.Errorf("rv.new drained with id %s, already sent to rv.used", ev.ID)
	}
}

// A record stored under a non-canonical escape of its key (=2D for '-')
// is restored, but forgetting deletes only the canonical entry: the
// backend comes back at every restart.
func TestReviewNonCanonicalStoreKeyResurrects(t *testing.T) {
	s := startServer(t, natstest.JetStream())
	opts := relOptions{policy: coordinator.Policy{DefaultIdleTimeout: longTimeout}, registry: true}
	first, _ := relStartWorker(t, s.ClientURL(), opts)
	if err := first.stop(bound); err != nil {
		t.Fatal(err)
	}
	nc := connect(t, s.ClientURL())
	kv := relKV(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	if _, err := kv.PutString(ctx, "b.rv=2Dz.a", `{"timeout_ms":60000,"state":"quiesced","generation":5}`); err != nil {
		t.Fatal(err)
	}
	second, _ := relStartWorker(t, s.ClientURL(), opts)
	if _, ok := adminGet(t, nc, "rv-z.a"); !ok {
		t.Fatal("rv-z.a not restored")
	}
	var fr bus.ForgetReply
	decodeOK(t, request(t, nc, prefix+".admin.forget", `{"match":"rv-z.a"}`), &fr)
	if fr.Forgotten != 1 {
		t.Fatalf("forget rv-z.a: forgotten %d; want 1", fr.Forgotten)
	}
	if err := second.stop(bound); err != nil {
		t.Fatal(err)
	}
	relStartWorker(t, s.ClientURL(), opts)
	if _, ok := adminGet(t, nc, "rv-z.a"); ok {
		t.Error("rv-z.a forgotten, yet restored again after a restart")
	}
}

// A backend of another account reaches the worker through a service
// import; the server rewrites the reply subject to _R_.…, which the default
// IDLE_REPLY_PREFIXES refuse: every heartbeat request and admin call made
// through the import times out.
func TestReviewServiceImportReplies(t *testing.T) {
	conf := `
listen: 127.0.0.1:-1
accounts {
  IDLE { users: [{user: w, password: w}]
         exports: [{service: "idle.activity.>"}, {service: "idle.admin.>"}] }
  TEAM { users: [{user: b, password: b}]
         imports: [{service: {account: IDLE, subject: "idle.activity.>"}}, {service: {account: IDLE, subject: "idle.admin.>"}}] }
}`
	f := filepath.Join(t.TempDir(), "accounts.conf")
	if err := os.WriteFile(f, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, natstest.ConfigFile(f))
	startWorkerOn(t, connect(t, s.ClientURL(), nats.UserInfo("w", "w")), bus.WorkerConfig{Policy: coordinator.DefaultPolicy()})
	team := connect(t, s.ClientURL(), nats.UserInfo("b", "b"))
	if _, err := team.Request(prefix+".activity.team.x", nil, time.Second); err != nil {
		t.Errorf("heartbeat through a service import: %v", err)
	}
	if _, err := team.Request(prefix+".admin.list", nil, time.Second); err != nil {
		t.Errorf("admin list through a service import: %v", err)
	}
}
