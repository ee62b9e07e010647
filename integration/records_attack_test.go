package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/internal/natstest"
	"github.com/idle-worker/idle-worker/partition"
	"github.com/idle-worker/idle-worker/store"
)

// firstRunUsedID starts a worker with a store, drains and removes
// "rv.used" (first generation), keeps "rv.keep" running, stops the worker,
// and returns the id of the event rv.used was sent.
func firstRunUsedID(t *testing.T, url string) string {
	t.Helper()
	opts := relOptions{policy: coordinator.Policy{DefaultIdleTimeout: longTimeout}, store: true}
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
	relWaitRecord(t, openStoreView(t, nc), "rv.used", "deleted", func(r relRecord) bool { return !r.found })
	if err := first.stop(bound); err != nil {
		t.Fatal(err)
	}
	return ev.ID
}

// A used store whose high-water mark was deleted (here with every record)
// cannot tell which generations it handed out: the worker starts a new id
// space, so no id already sent (generation 1 here) comes back.
func TestMissingHighWaterNewIDSpace(t *testing.T) {
	s := startServer(t, natstest.JetStream())
	usedID := firstRunUsedID(t, s.ClientURL()) // rv.used gen 1, rv.keep gen 2
	nc := connect(t, s.ClientURL())
	v := openStoreView(t, nc)
	// The high-water mark gone, and no record above the generation rv.used
	// had: the worker would restart its generations below ids it already
	// sent.
	v.purge(storeHWMSubject)
	v.put(storeLog(partition.Of("rv.keep", store.DefaultPartitions)), appendDelete(nil, hostileLSN, "rv.keep"), nil)
	w, _ := relStartWorker(t, s.ClientURL(), relOptions{policy: coordinator.Policy{DefaultIdleTimeout: longTimeout}, store: true})
	if got := w.Stats().Restored; got != 0 {
		t.Errorf("Stats.Restored: got %d; want 0 (rv.used removed, rv.keep deleted by the test)", got)
	}
	events := subscribe(t, nc, prefix+".quiesce.>")
	heartbeat(t, nc, "rv.new", "")
	if n := adminQuiesce(t, nc, `{"match":"rv.new"}`); n != 1 {
		t.Fatalf("quiesce rv.new: %d", n)
	}
	if ev := nextEvent(t, events, bound); ev.ID == usedID {
		t.Errorf("rv.new drained with id %s, already sent to rv.used", ev.ID)
	}
}

// Log messages the worker did not write as it writes them: a message whose
// second entry does not decode keeps its first (entries are applied in
// order) and is counted once; a log subject of no partition is counted and
// not read. A record stored in another partition's log than its key's is
// not restored, but counted: the worker writes and deletes a key only in its
// own partition, so such a record would outlive the key's removal and come
// back at every restart.
func TestMisplacedAndCorruptLogMessages(t *testing.T) {
	const parts = store.DefaultPartitions
	s, opts, nc, v := storedStore(t)
	good := rec("rv.good", time.Minute, coordinator.Running, 3, 0)
	v.put(storeLog(partition.Of(good.Key, parts)), append(appendUpsert(nil, hostileLSN, good), 7, 7, 7), nil)
	v.put(storeBase+"log.99", appendUpsert(nil, hostileLSN, rec("rv.nopart", time.Minute, coordinator.Running, 4, 0)), nil)
	v.put(storeBase+"log.07", appendUpsert(nil, hostileLSN, rec("rv.zero", time.Minute, coordinator.Running, 4, 0)), nil)
	const misplaced = "rv-z.a"
	wrong := (partition.Of(misplaced, parts) + 1) % parts
	v.put(storeLog(wrong), appendUpsert(nil, hostileLSN, rec(misplaced, time.Minute, coordinator.Quiesced, 5, 0)), nil)

	second, _ := relStartWorker(t, s.ClientURL(), opts)
	if got := listKeys(adminList(t, nc, `{"match":"rv.>"}`)); strings.Join(got, ",") != "rv.good" {
		t.Errorf("restored %v; want rv.good alone", got)
	}
	if got := second.Stats().RestoreSkipped; got != 4 {
		t.Errorf("RestoreSkipped = %d; want 4 (the corrupt tail, the two log subjects of no partition, the misplaced record)", got)
	}
	b, ok := adminGet(t, nc, misplaced)
	if ok {
		t.Errorf("restored %+v from another partition's log; want it skipped", b)
		// What happens next, if it is restored: removed, it must stay
		// removed across a restart.
		reportState(t, nc, misplaced, "removed")
	}
	if err := second.stop(bound); err != nil {
		t.Fatal(err)
	}
	third, _ := relStartWorker(t, s.ClientURL(), opts)
	if b, ok := adminGet(t, nc, misplaced); ok {
		t.Errorf("%s after it was removed and the worker restarted: got %+v; want it gone", misplaced, b)
	}
	if got := third.Stats().Restored; got != 1 {
		t.Errorf("Stats.Restored after a second restart: got %d; want 1 (rv.good)", got)
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
