package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/internal/natstest"
	"github.com/idle-worker/idle-worker/store"
)

// relRegistry wraps the worker's bus.Registry: it counts the worker's calls
// per backend, and can drop writes, as a crash between publishing an event
// and storing its registry record would.
type relRegistry struct {
	bus.Registry
	drop func(coordinator.Record) bool // nil: drop nothing

	mu      sync.Mutex
	puts    map[string]int
	deletes map[string]int
}

func (r *relRegistry) Put(rec coordinator.Record) {
	r.mu.Lock()
	r.puts[rec.Key]++
	r.mu.Unlock()
	if r.drop != nil && r.drop(rec) {
		return
	}
	r.Registry.Put(rec)
}

func (r *relRegistry) Delete(key string) {
	r.mu.Lock()
	r.deletes[key]++
	r.mu.Unlock()
	r.Registry.Delete(key)
}

// calls returns how often the worker asked to store and to delete key.
func (r *relRegistry) calls(key string) (puts, deletes int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.puts[key], r.deletes[key]
}

// relOptions says what an in-process worker persists.
type relOptions struct {
	policy   coordinator.Policy
	registry bool                          // a KV registry in store.DefaultRegistryBucket
	stream   bool                          // a quiesce stream store.DefaultStreamName
	drop     func(coordinator.Record) bool // registry writes to drop
}

// relStartWorker starts an in-process worker on its own connection to url,
// with a registry and a quiesce stream in the server's JetStream as opts
// says, as cmd/idle-worker wires them. The worker closes both when it stops.
func relStartWorker(t *testing.T, url string, opts relOptions) (*testWorker, *relRegistry) {
	t.Helper()
	nc := connect(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	cfg := bus.WorkerConfig{Policy: opts.policy}
	var reg *relRegistry
	if opts.registry {
		kv, err := store.OpenKVRegistry(ctx, nc, store.DefaultRegistryBucket, nil)
		if err != nil {
			t.Fatalf("OpenKVRegistry: %v", err)
		}
		t.Cleanup(func() { relClose(t, "registry", kv.Close) })
		reg = &relRegistry{Registry: kv, drop: opts.drop, puts: map[string]int{}, deletes: map[string]int{}}
		cfg.Registry = reg
	}
	if opts.stream {
		qs, err := store.OpenQuiesceStream(ctx, nc, bus.MustSubjects(prefix), store.StreamConfig{Duplicates: time.Minute}, nil)
		if err != nil {
			t.Fatalf("OpenQuiesceStream: %v", err)
		}
		t.Cleanup(func() { relClose(t, "quiesce stream", qs.Close) })
		cfg.Publisher = qs
	}
	return startWorkerOn(t, nc, cfg), reg
}

// relClose closes what a worker that failed to start may have left open.
// After a normal stop it is already closed and this does nothing.
func relClose(t *testing.T, what string, closeFn func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	if err := closeFn(ctx); err != nil {
		t.Errorf("closing the %s: %v", what, err)
	}
}

func relJetStream(t *testing.T, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return js
}

// relKV opens the registry bucket for reading.
func relKV(t *testing.T, nc *nats.Conn) jetstream.KeyValue {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	kv, err := relJetStream(t, nc).KeyValue(ctx, store.DefaultRegistryBucket)
	if err != nil {
		t.Fatalf("registry bucket %s: %v", store.DefaultRegistryBucket, err)
	}
	return kv
}

// relRecord is a backend's registry entry as subjects.md documents it.
type relRecord struct {
	found      bool
	rev        uint64
	TimeoutMS  int64  `json:"timeout_ms"`
	State      string `json:"state"`
	Generation uint64 `json:"generation"`
	Reason     string `json:"reason"`
}

func (r relRecord) String() string {
	if !r.found {
		return "(no entry)"
	}
	return fmt.Sprintf("{timeout_ms:%d state:%s generation:%d reason:%q rev:%d}", r.TimeoutMS, r.State, r.Generation, r.Reason, r.rev)
}

// relGet reads key's registry entry, b.<key> (the test keys need no
// escaping), and checks its members.
func relGet(t *testing.T, kv jetstream.KeyValue, key string) relRecord {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	e, err := kv.Get(ctx, "b."+key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return relRecord{}
	}
	if err != nil {
		t.Fatalf("registry get b.%s: %v", key, err)
	}
	r := relRecord{found: true, rev: e.Revision()}
	if want := []string{"generation", "state", "timeout_ms"}; !strings.Contains(string(e.Value()), `"reason"`) {
		wantMembers(t, e.Value(), want...)
	} else {
		wantMembers(t, e.Value(), append(want, "reason")...)
	}
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		t.Fatalf("registry record b.%s %s: %v", key, e.Value(), err)
	}
	return r
}

// relWaitRecord waits until key's registry entry satisfies cond (writes are
// asynchronous) and returns it.
func relWaitRecord(t *testing.T, kv jetstream.KeyValue, key, want string, cond func(relRecord) bool) relRecord {
	t.Helper()
	var r relRecord
	deadline := time.Now().Add(bound)
	for r = relGet(t, kv, key); !cond(r); r = relGet(t, kv, key) {
		if time.Now().After(deadline) {
			t.Fatalf("registry entry of %s: got %v after %v; want %s", key, r, bound, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return r
}

// relMeta returns the registry's m.id or m.hwm value, waiting for it.
func relMeta(t *testing.T, kv jetstream.KeyValue, name string) string {
	t.Helper()
	var v string
	waitFor(t, bound, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		defer cancel()
		e, err := kv.Get(ctx, name)
		if err != nil {
			return false
		}
		v = string(e.Value())
		return v != ""
	})
	return v
}

// relEventID is the documented quiesce id: <registry id>-<generation>.
func relEventID(regID string, gen uint64) string { return regID + "-" + strconv.FormatUint(gen, 10) }

// The registry holds a record per backend, written on transitions only:
// first sight, a timeout change, each state change, a backend running
// again, and its removal; a plain refresh writes nothing. Quiesce ids are
// the registry id and the stored generation.
func TestRegistryRoundTrip(t *testing.T) {
	t.Parallel()
	const short = 150 * time.Millisecond
	s := startServer(t, natstest.JetStream())
	_, reg := relStartWorker(t, s.ClientURL(), relOptions{policy: coordinator.Policy{DefaultIdleTimeout: longTimeout}, registry: true})
	nc := connect(t, s.ClientURL())
	events := subscribe(t, nc, prefix+".quiesce.>")
	kv := relKV(t, nc)
	regID := relMeta(t, kv, "m.id")

	heartbeat(t, nc, "reg.a", "")
	first := relWaitRecord(t, kv, "reg.a", "a record", func(r relRecord) bool { return r.found })
	if first.State != "running" || first.TimeoutMS != longTimeout.Milliseconds() || first.Reason != "" || first.Generation == 0 {
		t.Errorf("record after first sight: got %v; want running, timeout_ms %d, no reason, a generation", first, longTimeout.Milliseconds())
	}

	// Plain refreshes: no registry call, and the entry keeps its revision.
	for range 3 {
		heartbeat(t, nc, "reg.a", "")
	}
	if puts, _ := reg.calls("reg.a"); puts != 1 {
		t.Errorf("registry writes of reg.a after 3 refreshes: got %d; want 1 (first sight only)", puts)
	}
	// A barrier: the worker queues writes in order and stores them a batch
	// at a time, so once reg.c (queued while reg.b's batch may still have
	// been in flight) is stored, any write of reg.a queued by the refreshes
	// would have been stored too.
	for _, k := range []string{"reg.b", "reg.c"} {
		heartbeat(t, nc, k, "")
		relWaitRecord(t, kv, k, "a record", func(r relRecord) bool { return r.found })
	}
	if got := relGet(t, kv, "reg.a"); got.rev != first.rev {
		t.Errorf("revision of b.reg.a after plain refreshes: got %d; want %d (no write per heartbeat)", got.rev, first.rev)
	}

	steps := []struct {
		name string
		do   func()
		want string
		cond func(r relRecord) bool
	}{
		{"timeout change", func() { heartbeat(t, nc, "reg.a", timeoutBody(30*time.Minute)) }, "running, timeout_ms 1800000, same generation",
			func(r relRecord) bool {
				return r.State == "running" && r.TimeoutMS == 1_800_000 && r.Generation == first.Generation
			}},
		{"draining report", func() { reportState(t, nc, "reg.a", "draining") }, "draining without reason, same generation",
			func(r relRecord) bool {
				return r.State == "draining" && r.Reason == "" && r.Generation == first.Generation
			}},
		{"quiesced report", func() { reportState(t, nc, "reg.a", "quiesced") }, "quiesced, same generation",
			func(r relRecord) bool { return r.State == "quiesced" && r.Generation == first.Generation }},
		{"running again", func() { heartbeat(t, nc, "reg.a", timeoutBody(short)) }, "running with a newer generation",
			func(r relRecord) bool {
				return r.State == "running" && r.TimeoutMS == short.Milliseconds() && r.Generation > first.Generation && r.Reason == ""
			}},
	}
	prev := first
	for _, st := range steps {
		st.do()
		got := relWaitRecord(t, kv, "reg.a", st.want+" after "+st.name, st.cond)
		if got.rev <= prev.rev {
			t.Errorf("%s: got revision %d; want above %d", st.name, got.rev, prev.rev)
		}
		prev = got
	}

	ev := nextEvent(t, events, short+bound)
	if want := relEventID(regID, prev.Generation); ev.Key != "reg.a" || ev.ID != want || ev.Attempt != 1 {
		t.Errorf("event: got key %q id %q attempt %d; want reg.a, id %q (registry id - stored generation), attempt 1", ev.Key, ev.ID, ev.Attempt, want)
	}
	drained := relWaitRecord(t, kv, "reg.a", "draining, reason idle_timeout", func(r relRecord) bool {
		return r.State == "draining" && r.Reason == "idle_timeout"
	})
	if drained.Generation != prev.Generation {
		t.Errorf("record after the drain: got generation %d; want the emission's %d", drained.Generation, prev.Generation)
	}

	reportState(t, nc, "reg.a", "removed")
	relWaitRecord(t, kv, "reg.a", "deleted", func(r relRecord) bool { return !r.found })
	puts, deletes := reg.calls("reg.a")
	// first sight, timeout, draining, quiesced, running again, drained
	if puts != 6 || deletes != 1 {
		t.Errorf("registry calls for reg.a: got %d puts, %d deletes; want 6 (one per transition), 1", puts, deletes)
	}
	if hwm, err := strconv.ParseUint(relMeta(t, kv, "m.hwm"), 10, 64); err != nil || hwm <= drained.Generation {
		t.Errorf("m.hwm: got %d (%v); want a number above every generation handed out (%d)", hwm, err, drained.Generation)
	}
	if got := relMeta(t, kv, "m.id"); got != regID {
		t.Errorf("m.id: got %q; want it unchanged, %q", got, regID)
	}
}

// A restarted worker restores its backends from the registry: a running
// one gets a full timeout of grace from the restart, then is drained with
// the id <registry id>-<stored generation>; a draining one stays draining
// and is re-sent the same event; a quiesced one stays quiesced; one
// drained by a report is not re-sent. A backend whose draining record was
// lost (a crash right after the event) is drained again with the same id.
func TestRegistryRestart(t *testing.T) {
	t.Parallel()
	const (
		short = 300 * time.Millisecond // timeout of the backends drained before the restart
		grace = time.Second            // timeout of the backend running across it
		retry = time.Second
	)
	opts := relOptions{
		policy:   coordinator.Policy{DefaultIdleTimeout: longTimeout, RetryInterval: retry, RetryMaxInterval: retry},
		registry: true,
		drop:     func(r coordinator.Record) bool { return r.Key == "rel.crash" && r.State == coordinator.Draining },
	}
	s := startServer(t, natstest.JetStream())
	nc := connect(t, s.ClientURL())
	events := subscribe(t, nc, prefix+".quiesce.>")
	w1, _ := relStartWorker(t, s.ClientURL(), opts)
	kv := relKV(t, nc)
	regID := relMeta(t, kv, "m.id")

	for _, k := range []string{"rel.drain", "rel.quiet", "rel.crash"} {
		heartbeat(t, nc, k, timeoutBody(short))
	}
	heartbeat(t, nc, "rel.report", "")
	reportState(t, nc, "rel.report", "draining")
	before := map[string]event{}
	for deadline := time.Now().Add(short + bound); len(before) < 3; {
		ev := nextEvent(t, events, time.Until(deadline))
		if prev, ok := before[ev.Key]; ok {
			if ev.ID != prev.ID {
				t.Fatalf("second event for %s before the restart: got id %q; want %q", ev.Key, ev.ID, prev.ID)
			}
			continue
		}
		before[ev.Key] = ev
	}
	if got := slices.Sorted(maps.Keys(before)); !slices.Equal(got, []string{"rel.crash", "rel.drain", "rel.quiet"}) {
		t.Fatalf("events before the restart: got %v; want rel.crash rel.drain rel.quiet", got)
	}
	reportState(t, nc, "rel.quiet", "quiesced")
	stored := map[string]relRecord{
		"rel.drain":  relWaitRecord(t, kv, "rel.drain", "draining", func(r relRecord) bool { return r.State == "draining" && r.Reason == "idle_timeout" }),
		"rel.quiet":  relWaitRecord(t, kv, "rel.quiet", "quiesced", func(r relRecord) bool { return r.State == "quiesced" }),
		"rel.report": relWaitRecord(t, kv, "rel.report", "draining", func(r relRecord) bool { return r.State == "draining" }),
		"rel.crash":  relGet(t, kv, "rel.crash"), // its draining write was dropped
	}
	for k, ev := range before {
		if want := relEventID(regID, stored[k].Generation); ev.ID != want {
			t.Errorf("event of %s: got id %q; want %q", k, ev.ID, want)
		}
	}
	sent, _ := heartbeat(t, nc, "rel.run", timeoutBody(grace))
	stored["rel.run"] = relWaitRecord(t, kv, "rel.run", "running", func(r relRecord) bool { return r.State == "running" })
	if err := w1.stop(bound); err != nil {
		t.Fatal(err)
	}
	if got := relGet(t, kv, "rel.crash"); got.State != "running" {
		t.Fatalf("record of rel.crash: got %v; want running (the test dropped its draining write)", got)
	}
	// A subscription made after the first worker stopped receives only what
	// the second one publishes.
	after := subscribe(t, nc, prefix+".quiesce.>")
	// Let rel.run's timeout pass with no worker running, so that a restart
	// without grace would drain it at once.
	<-time.After(time.Until(sent.Add(grace)))

	restart := time.Now()
	w2, _ := relStartWorker(t, s.ClientURL(), opts)
	wantState := map[string]struct {
		state    string
		attempts int
	}{
		"rel.run": {"running", 0}, "rel.crash": {"running", 0}, "rel.drain": {"draining", 1},
		"rel.quiet": {"quiesced", 0}, "rel.report": {"draining", 0},
	}
	for k, want := range wantState {
		if b, ok := adminGet(t, nc, k); !ok || b.State != want.state || b.Attempts != want.attempts {
			t.Errorf("%s after the restart: got %+v (tracked %v); want state %s, attempts %d", k, b, ok, want.state, want.attempts)
		}
	}
	if l := adminList(t, nc, `{"match":"rel.>"}`); l.Total != 5 || l.Unacknowledged != 1 {
		t.Errorf("admin list after the restart: got total %d, unacknowledged %d; want 5, 1 (rel.drain)", l.Total, l.Unacknowledged)
	}
	if got := w2.Stats().Restored; got != 5 {
		t.Errorf("Stats.Restored: got %d; want 5", got)
	}

	// Collect until rel.run's event, and at least a redelivery interval and
	// a half, the window in which a wrongly restored quiesced or reported
	// backend would be re-sent.
	got := map[string][]event{}
	for deadline := restart.Add(grace + bound); len(got["rel.run"]) == 0 || time.Since(restart) < retry+retry/2; {
		m, err := after.NextMsg(min(time.Until(deadline), 50*time.Millisecond))
		if errors.Is(err, nats.ErrTimeout) && time.Now().Before(deadline) {
			continue
		}
		if err != nil {
			t.Fatalf("waiting for events after the restart: %v (got %v)", err, got)
		}
		ev := checkEvent(t, m, prefix, time.Now())
		got[ev.Key] = append(got[ev.Key], ev)
	}
	checks := []struct {
		key      string
		wantID   string
		attempt  int
		notEarly time.Duration // since the restart began
	}{
		{"rel.run", relEventID(regID, stored["rel.run"].Generation), 1, grace},
		{"rel.crash", before["rel.crash"].ID, 1, short},
		{"rel.drain", before["rel.drain"].ID, 2, retry},
	}
	for _, c := range checks {
		evs := got[c.key]
		if len(evs) == 0 {
			t.Errorf("%s after the restart: got no event; want id %q", c.key, c.wantID)
			continue
		}
		ev := evs[0]
		if ev.ID != c.wantID || ev.Attempt != c.attempt || ev.Reason != "idle_timeout" {
			t.Errorf("%s after the restart: got id %q attempt %d reason %s; want id %q attempt %d idle_timeout", c.key, ev.ID, ev.Attempt, ev.Reason, c.wantID, c.attempt)
		}
		if since := ev.arrived.Sub(restart); since < c.notEarly {
			t.Errorf("%s after the restart: got its event %v after the restart began; want >= %v", c.key, since, c.notEarly)
		}
	}
	for _, k := range []string{"rel.quiet", "rel.report"} {
		if evs := got[k]; len(evs) > 0 {
			t.Errorf("%s after the restart: got %d events (first id %s attempt %d); want none", k, len(evs), evs[0].ID, evs[0].Attempt)
		}
	}
	if got := relMeta(t, kv, "m.id"); got != regID {
		t.Errorf("m.id after the restart: got %q; want %q", got, regID)
	}
}

// A drained backend that no broker acknowledges is re-sent its event, same
// id and reason, attempt + 1, with a doubling wait capped at the maximum;
// quiesced, removed and activity end it, a draining report does not. The
// admin list and Stats count the unacknowledged drains.
func TestRedeliveryEndsOnAcknowledgement(t *testing.T) {
	t.Parallel()
	const retry, retryMax, idle = 100 * time.Millisecond, 200 * time.Millisecond, 100 * time.Millisecond
	w, nc, events := setup(t, bus.WorkerConfig{Policy: coordinator.Policy{DefaultIdleTimeout: longTimeout, RetryInterval: retry, RetryMaxInterval: retryMax}})
	forced := []string{"re.quiesced", "re.removed", "re.active", "re.draining"}
	for _, k := range forced {
		heartbeat(t, nc, k, "")
	}
	heartbeat(t, nc, "ri.idle", timeoutBody(idle))
	if n := adminQuiesce(t, nc, `{"match":"re.>","reason":"maintenance"}`); n != len(forced) {
		t.Fatalf("admin quiesce: got %d; want %d", n, len(forced))
	}

	got := map[string][]event{}
	// take reads events until every key named has at least n attempts.
	take := func(n int, keys ...string) {
		t.Helper()
		deadline := time.Now().Add(time.Duration(n)*retryMax + bound)
		for slices.ContainsFunc(keys, func(k string) bool { return len(got[k]) < n }) {
			ev := nextEvent(t, events, time.Until(deadline))
			got[ev.Key] = append(got[ev.Key], ev)
		}
	}
	take(3, forced...)
	take(2, "ri.idle")
	if l := adminList(t, nc, ""); l.Unacknowledged != len(forced)+1 {
		t.Errorf("admin list unacknowledged: got %d; want %d", l.Unacknowledged, len(forced)+1)
	}

	reportState(t, nc, "re.quiesced", "quiesced")
	reportState(t, nc, "re.removed", "removed")
	reportState(t, nc, "ri.idle", "removed")
	heartbeat(t, nc, "re.active", timeoutBody(longTimeout))
	reportState(t, nc, "re.draining", "draining")
	acked := time.Now()

	l := adminList(t, nc, "")
	if l.Unacknowledged != 1 {
		t.Errorf("admin list unacknowledged after the acknowledgements: got %d; want 1 (re.draining)", l.Unacknowledged)
	}
	attempts := map[string]bus.BackendInfo{}
	for _, b := range l.Backends {
		attempts[b.Key] = b
	}
	if b := attempts["re.draining"]; b.State != "draining" || b.Attempts < 3 {
		t.Errorf("re.draining in the admin list: got %+v; want draining, attempts >= 3", b)
	}
	for _, k := range []string{"re.quiesced", "re.active"} {
		if b := attempts[k]; b.Attempts != 0 {
			t.Errorf("%s in the admin list: got %+v; want attempts 0", k, b)
		}
	}
	waitFor(t, bound, func() bool { return w.Stats().Unacknowledged == 1 })

	// re.draining goes on to attempt 5; by then the others would have been
	// re-sent at least once more had the acknowledgements not ended it.
	take(5, "re.draining")
	for k, evs := range got {
		if k == "re.draining" {
			continue
		}
		for _, ev := range evs {
			if ev.At.After(acked) {
				t.Errorf("%s: got attempt %d emitted at %s, after the acknowledgement at %s; want none", k, ev.Attempt, ev.atRaw, acked.UTC().Format(time.RFC3339Nano))
			}
		}
	}
	for k, evs := range got {
		wantReason := "maintenance"
		if k == "ri.idle" {
			wantReason = "idle_timeout"
		}
		for i, ev := range evs {
			if ev.ID != evs[0].ID || ev.Attempt != i+1 || ev.Reason != wantReason {
				t.Errorf("%s event %d: got id %q attempt %d reason %s; want id %q attempt %d %s", k, i+1, ev.ID, ev.Attempt, ev.Reason, evs[0].ID, i+1, wantReason)
			}
			if i == 0 {
				continue
			}
			want := min(retry<<(i-1), retryMax)
			gap := ev.At.Sub(evs[i-1].At)
			if gap < want-time.Millisecond {
				t.Errorf("%s attempt %d: got %v after attempt %d; want >= %v", k, i+1, gap, i, want)
			}
			if most := want + lateSlack + stalls.between(evs[i-1].arrived, ev.arrived); gap > most {
				t.Errorf("%s attempt %d: got %v after attempt %d; want <= %v (backoff %v capped at %v)", k, i+1, gap, i, most, want, retryMax)
			}
		}
	}
	resent := 0
	for _, evs := range got {
		resent += len(evs) - 1
	}
	// The worker counts a re-send just after publishing it.
	for deadline := time.Now().Add(bound); w.Stats().Redeliveries < uint64(resent); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("Stats.Redeliveries: got %d; want >= %d, the re-sends seen", w.Stats().Redeliveries, resent)
			break
		}
	}

	reportState(t, nc, "re.draining", "quiesced")
	if l := adminList(t, nc, ""); l.Unacknowledged != 0 {
		t.Errorf("admin list unacknowledged after the last quiesced: got %d; want 0", l.Unacknowledged)
	}
	waitFor(t, bound, func() bool { return w.Stats().Unacknowledged == 0 })
}

// With a quiesce stream, every event is stored once per id, however often
// it is re-sent, and a durable consumer created after the events reads
// each of them once, then the ones that come later.
func TestQuiesceStreamStoresOncePerID(t *testing.T) {
	t.Parallel()
	const idle, retry = 100 * time.Millisecond, 100 * time.Millisecond
	s := startServer(t, natstest.JetStream())
	relStartWorker(t, s.ClientURL(), relOptions{
		policy:   coordinator.Policy{DefaultIdleTimeout: longTimeout, RetryInterval: retry, RetryMaxInterval: retry},
		registry: true, stream: true,
	})
	nc := connect(t, s.ClientURL())
	events := subscribe(t, nc, prefix+".quiesce.>")
	js := relJetStream(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, store.DefaultStreamName)
	if err != nil {
		t.Fatalf("stream %s: %v", store.DefaultStreamName, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	if c := info.Config; !slices.Equal(c.Subjects, []string{prefix + ".quiesce.>"}) || c.Duplicates != time.Minute || c.Storage != jetstream.FileStorage {
		t.Errorf("stream config: got subjects %v, duplicates %v, storage %v; want [%s.quiesce.>], 1m0s, file", c.Subjects, c.Duplicates, c.Storage, prefix)
	}
	state := func() jetstream.StreamState {
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatalf("stream info: %v", err)
		}
		return info.State
	}

	keys := []string{"st.0", "st.1", "st.2", "st.3", "st.4"}
	for _, k := range keys {
		heartbeat(t, nc, k, timeoutBody(idle))
	}
	ids := map[string]string{} // key -> id, as core subscribers see them
	attempts := map[string]int{}
	wait := func(n int, keys ...string) {
		t.Helper()
		deadline := time.Now().Add(time.Duration(n)*retry + bound)
		for slices.ContainsFunc(keys, func(k string) bool { return attempts[k] < n }) {
			ev := nextEvent(t, events, time.Until(deadline))
			if id, ok := ids[ev.Key]; ok && id != ev.ID {
				t.Fatalf("%s: got id %q; want the same id %q on every re-send", ev.Key, ev.ID, id)
			}
			ids[ev.Key] = ev.ID
			attempts[ev.Key] = max(attempts[ev.Key], ev.Attempt)
		}
	}
	wait(4, keys...)
	// A new emission published after those re-sends: once it is stored,
	// the stream has dealt with everything before it.
	heartbeat(t, nc, "st.new", "")
	if n := adminQuiesce(t, nc, `{"match":"st.new"}`); n != 1 {
		t.Fatalf("admin quiesce st.new: got %d; want 1", n)
	}
	wait(1, "st.new")
	waitFor(t, bound, func() bool { return state().LastSeq >= 6 })
	if st := state(); st.Msgs != 6 || st.LastSeq != 6 {
		t.Errorf("stream after %v: got %d messages, last sequence %d; want 6, 6 (one per id)", attempts, st.Msgs, st.LastSeq)
	}

	cons, err := js.CreateOrUpdateConsumer(ctx, store.DefaultStreamName, jetstream.ConsumerConfig{
		Durable: "broker", AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
		FilterSubject: prefix + ".quiesce.st.>",
	})
	if err != nil {
		t.Fatalf("create consumer: %v", err)
	}
	// fetch reads what the consumer has, up to want messages, waiting at
	// most wait for them.
	fetch := func(want int, wait time.Duration) []bus.QuiesceEvent {
		t.Helper()
		var out []bus.QuiesceEvent
		for deadline := time.Now().Add(wait); len(out) < want && time.Now().Before(deadline); {
			batch, err := cons.Fetch(want-len(out), jetstream.FetchMaxWait(time.Until(deadline)))
			if err != nil {
				t.Fatalf("fetch: %v", err)
			}
			for m := range batch.Messages() {
				ev, err := bus.ParseQuiesceEvent(m.Data())
				if err != nil {
					t.Fatalf("stored event %s: %v", m.Data(), err)
				}
				if h := m.Headers().Get(bus.HeaderMsgID); h != ev.ID {
					t.Errorf("stored event %s: got Nats-Msg-Id %q; want %q", ev.Key, h, ev.ID)
				}
				if err := m.Ack(); err != nil {
					t.Fatalf("ack: %v", err)
				}
				out = append(out, ev)
			}
			if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
				t.Fatalf("fetch: %v", err)
			}
		}
		return out
	}
	stored := fetch(6, bound)
	if len(stored) != 6 {
		t.Fatalf("consumer created after the events: got %d events; want 6", len(stored))
	}
	for _, ev := range stored {
		if ids[ev.Key] != ev.ID || ev.Attempt != 1 {
			t.Errorf("stored event of %s: got id %q attempt %d; want id %q attempt 1 (the first emission)", ev.Key, ev.ID, ev.Attempt, ids[ev.Key])
		}
		delete(ids, ev.Key)
	}
	if len(ids) != 0 {
		t.Errorf("consumer: got no stored event for %v", ids)
	}

	// Later emissions reach the consumer once, re-sends included.
	heartbeat(t, nc, "st.later", timeoutBody(idle))
	wait(3, "st.later")
	later := fetch(2, 3*retry)
	if len(later) != 1 || later[0].Key != "st.later" || later[0].Attempt != 1 {
		t.Errorf("consumer after st.later was sent %d times: got %+v; want st.later once, attempt 1", attempts["st.later"], later)
	}
}

// IDLE_PERSIST through the binary: on refuses a server without JetStream,
// auto warns and runs in memory there, off creates nothing in JetStream,
// and auto on a JetStream server stores the registry and the events.
func TestBinaryPersist(t *testing.T) {
	t.Parallel()
	const idle = 200 * time.Millisecond
	// serve checks the binary serves: a heartbeat gets its quiesce.
	serve := func(t *testing.T, p *proc, url, key string) {
		t.Helper()
		nc := connect(t, url)
		waitServing(t, p, nc)
		events := subscribe(t, nc, prefix+".quiesce."+key)
		heartbeat(t, nc, key, timeoutBody(idle))
		if ev := nextEvent(t, events, idle+bound); ev.Key != key {
			t.Errorf("event: got key %q; want %q", ev.Key, key)
		}
	}
	streams := func(t *testing.T, url string) []string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		defer cancel()
		names := relJetStream(t, connect(t, url)).StreamNames(ctx)
		var out []string
		for n := range names.Name() {
			out = append(out, n)
		}
		if err := names.Err(); err != nil {
			t.Fatalf("stream names: %v", err)
		}
		slices.Sort(out)
		return out
	}

	t.Run("on without JetStream exits", func(t *testing.T) {
		t.Parallel()
		s := startServer(t)
		p := startBinary(t, map[string]string{"IDLE_NATS_URL": s.ClientURL(), "IDLE_PERSIST": "on"})
		if code := p.exitCode(t, 10*time.Second); code != 1 {
			t.Errorf("exit status: got %d; want 1", code)
		}
		if stderr := p.stderr.String(); !strings.Contains(stderr, "IDLE_PERSIST=on") || !strings.Contains(stderr, "JetStream not available") {
			t.Errorf("stderr %q: want an error naming IDLE_PERSIST=on and saying JetStream is not available", stderr)
		}
	})
	t.Run("auto without JetStream warns and runs", func(t *testing.T) {
		t.Parallel()
		s := startServer(t)
		p := startBinary(t, map[string]string{"IDLE_NATS_URL": s.ClientURL(), "IDLE_PERSIST": "auto"})
		serve(t, p, s.ClientURL(), "auto.nojs")
		if stderr := p.stderr.String(); !strings.Contains(stderr, "level=WARN") || !strings.Contains(stderr, "JetStream not available") {
			t.Errorf("stderr %q: want a warning that JetStream is not available", stderr)
		}
		p.signal(t, syscall.SIGTERM)
		if code := p.exitCode(t, 5*time.Second); code != 0 {
			t.Errorf("exit status after SIGTERM: got %d; want 0", code)
		}
	})
	t.Run("off creates no bucket", func(t *testing.T) {
		t.Parallel()
		s := startServer(t, natstest.JetStream())
		p := startBinary(t, map[string]string{"IDLE_NATS_URL": s.ClientURL(), "IDLE_PERSIST": "off"})
		serve(t, p, s.ClientURL(), "off.js")
		if got := streams(t, s.ClientURL()); len(got) != 0 {
			t.Errorf("JetStream streams with IDLE_PERSIST=off: got %v; want none (no registry bucket, no quiesce stream)", got)
		}
	})
	t.Run("auto with JetStream persists", func(t *testing.T) {
		t.Parallel()
		s := startServer(t, natstest.JetStream())
		p := startBinary(t, map[string]string{"IDLE_NATS_URL": s.ClientURL(), "IDLE_PERSIST": "auto"})
		serve(t, p, s.ClientURL(), "auto.js")
		if got, want := streams(t, s.ClientURL()), []string{store.DefaultStreamName, "KV_" + store.DefaultRegistryBucket}; !slices.Equal(got, want) {
			t.Errorf("JetStream streams with IDLE_PERSIST=auto: got %v; want %v", got, want)
		}
		kv := relKV(t, connect(t, s.ClientURL()))
		relWaitRecord(t, kv, "auto.js", "draining", func(r relRecord) bool { return r.State == "draining" })
	})
}
