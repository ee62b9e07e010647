package integration

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/internal/natstest"
)

// firstRunUsedID starts a worker with a registry, drains and removes
// "rv.used" (first generation), keeps "rv.keep" running, stops the worker,
// and returns the id of the event rv.used was sent.
func firstRunUsedID(t *testing.T, url string) string {
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

// A used registry whose m.hwm was deleted (here with every record) cannot
// tell which generations it handed out: the worker starts a new id space,
// so no id already sent comes back.
func TestMissingHighWaterNewIDSpace(t *testing.T) {
	s := startServer(t, natstest.JetStream())
	usedID := firstRunUsedID(t, s.ClientURL()) // rv.used gen 1, rv.keep gen 2
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

// A record stored under a second spelling of its key (=2D for '-') would
// outlive the key's deletion and come back at every restart: it is not
// restored, counted, and deleted from the bucket.
func TestNonCanonicalStoreKeyDeleted(t *testing.T) {
	s, opts, nc, kv := storedRegistry(t)
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	if _, err := kv.PutString(ctx, "b.rv=2Dz.a", `{"timeout_ms":60000,"state":"quiesced","generation":5}`); err != nil {
		t.Fatal(err)
	}
	second, _ := relStartWorker(t, s.ClientURL(), opts)
	if b, ok := adminGet(t, nc, "rv-z.a"); ok {
		t.Errorf("restored %+v from a second spelling of its key; want it skipped", b)
	}
	if got := second.Stats().RestoreSkipped; got != 1 {
		t.Errorf("RestoreSkipped = %d; want 1", got)
	}
	if err := second.stop(bound); err != nil { // the delete is written by then
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx, "b.rv=2Dz.a"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("b.rv=2Dz.a after the restart: %v; want it deleted", err)
	}
}

// A backend of another account reaches the worker through a service
// import; the server rewrites the reply subject to _R_.…, which the default
// IDLE_REPLY_PREFIXES include, so heartbeat requests and admin calls made
// through the import are answered.
func TestServiceImportReplies(t *testing.T) {
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
