package integration

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/internal/natstest"
	"github.com/idle-worker/idle-worker/partition"
	"github.com/idle-worker/idle-worker/store"
)

// The store holds a record per backend, written on transitions only:
// first sight, a timeout change, each state change, a backend running
// again, the drain (with its event), and its removal; a plain refresh
// writes nothing. A heartbeat that changed a record is answered once the
// record is stored. Quiesce ids are the store id and the stored generation.
func TestRegistryRoundTrip(t *testing.T) {
	t.Parallel()
	const short = 150 * time.Millisecond
	s := startServer(t, natstest.JetStream())
	_, reg := relStartWorker(t, s.ClientURL(), relOptions{policy: coordinator.Policy{DefaultIdleTimeout: longTimeout}, store: true})
	nc := connect(t, s.ClientURL())
	events := subscribe(t, nc, prefix+".quiesce.>")
	v := openStoreView(t, nc)
	regID := v.waitMeta().ID

	heartbeat(t, nc, "reg.a", "")
	first := v.record("reg.a") // stored before the reply
	if !first.found || first.State != "running" || first.TimeoutMS != longTimeout.Milliseconds() || first.Reason != "" || first.Generation == 0 {
		t.Errorf("record when first sight was answered: got %v; want running, timeout_ms %d, no reason, a generation", first, longTimeout.Milliseconds())
	}

	// Plain refreshes: no store call, and the record keeps its lsn.
	for range 3 {
		heartbeat(t, nc, "reg.a", "")
	}
	if puts, _, _ := reg.calls("reg.a"); puts != 1 {
		t.Errorf("store writes of reg.a after 3 refreshes: got %d; want 1 (first sight only)", puts)
	}
	// A barrier: the first sight of a key of reg.a's partition is answered
	// once its log message is stored, after any write of reg.a the
	// refreshes could have queued.
	barrier := relSamePartition(t, "reg.a", "reg.b")
	heartbeat(t, nc, barrier, "")
	if !v.record(barrier).found {
		t.Errorf("record of %s: not stored when its first heartbeat was answered", barrier)
	}
	if got := v.record("reg.a"); got.rev != first.rev {
		t.Errorf("lsn of reg.a after plain refreshes: got %d; want %d (no write per heartbeat)", got.rev, first.rev)
	}

	steps := []struct {
		name   string
		do     func()
		answer bool // stored once the request is answered
		want   string
		cond   func(r relRecord) bool
	}{
		{"timeout change", func() { heartbeat(t, nc, "reg.a", timeoutBody(30*time.Minute)) }, true, "running, timeout_ms 1800000, same generation",
			func(r relRecord) bool {
				return r.State == "running" && r.TimeoutMS == 1_800_000 && r.Generation == first.Generation
			}},
		{"draining report", func() { reportState(t, nc, "reg.a", "draining") }, false, "draining without reason, same generation",
			func(r relRecord) bool {
				return r.State == "draining" && r.Reason == "" && r.Generation == first.Generation
			}},
		{"quiesced report", func() { reportState(t, nc, "reg.a", "quiesced") }, false, "quiesced, same generation",
			func(r relRecord) bool { return r.State == "quiesced" && r.Generation == first.Generation }},
		{"running again", func() { heartbeat(t, nc, "reg.a", timeoutBody(short)) }, true, "running with a newer generation",
			func(r relRecord) bool {
				return r.State == "running" && r.TimeoutMS == short.Milliseconds() && r.Generation > first.Generation && r.Reason == ""
			}},
	}
	prev := first
	for _, st := range steps {
		st.do()
		if st.answer {
			if got := v.record("reg.a"); !st.cond(got) {
				t.Errorf("%s: record when the heartbeat was answered: got %v; want %s (stored before the reply)", st.name, got, st.want)
			}
		}
		got := relWaitRecord(t, v, "reg.a", st.want+" after "+st.name, st.cond)
		if got.rev <= prev.rev {
			t.Errorf("%s: got lsn %d; want above %d", st.name, got.rev, prev.rev)
		}
		prev = got
	}

	ev := nextEvent(t, events, short+bound)
	if want := relEventID(regID, prev.Generation); ev.Key != "reg.a" || ev.ID != want || ev.Attempt != 1 {
		t.Errorf("event: got key %q id %q attempt %d; want reg.a, id %q (store id - stored generation), attempt 1", ev.Key, ev.ID, ev.Attempt, want)
	}
	// The event was stored with its draining record: seen live, it is in
	// the store already.
	drained := v.record("reg.a")
	if drained.State != "draining" || drained.Reason != "idle_timeout" || drained.Generation != prev.Generation || drained.rev <= prev.rev {
		t.Errorf("record once the event was seen: got %v; want draining, reason idle_timeout, generation %d, lsn above %d", drained, prev.Generation, prev.rev)
	}

	reportState(t, nc, "reg.a", "removed")
	relWaitRecord(t, v, "reg.a", "deleted", func(r relRecord) bool { return !r.found })
	puts, publishes, deletes := reg.calls("reg.a")
	// first sight, timeout, draining, quiesced, running again; the drain
	if puts != 5 || publishes != 1 || deletes != 1 {
		t.Errorf("store calls for reg.a: got %d puts, %d publishes, %d deletes; want 5 (one per transition), 1 (the drain), 1", puts, publishes, deletes)
	}
	if hwm, err := strconv.ParseUint(v.highWater(), 10, 64); err != nil || hwm <= drained.Generation {
		t.Errorf("high-water mark: got %d (%v); want a number above every generation handed out (%d)", hwm, err, drained.Generation)
	}
	if got := v.waitMeta().ID; got != regID {
		t.Errorf("store id: got %q; want it unchanged, %q", got, regID)
	}
}

// relSamePartition returns the first key base.0, base.1, ... that falls in
// key's partition (of store.DefaultPartitions).
func relSamePartition(t *testing.T, key, base string) string {
	t.Helper()
	want := partition.Of(key, store.DefaultPartitions)
	for i := range 10000 {
		if k := base + "." + strconv.Itoa(i); partition.Of(k, store.DefaultPartitions) == want {
			return k
		}
	}
	t.Fatalf("no key %s.<n> in the partition of %s", base, key)
	return ""
}

// A restarted worker restores its backends from the store: a running one
// gets a full timeout of grace from the restart, then is drained with the
// id <store id>-<stored generation>; a draining one stays draining and is
// re-sent the same event; a quiesced one stays quiesced; one drained by a
// report is not re-sent. A backend whose event never reached the stream (a
// crash before it left the worker) was seen by no broker, is restored
// running, and is drained again with the id it would have had.
func TestRegistryRestart(t *testing.T) {
	t.Parallel()
	const (
		short = 300 * time.Millisecond // timeout of the backends drained before the restart
		grace = time.Second            // timeout of the backend running across it
		retry = time.Second
	)
	opts := relOptions{
		policy: coordinator.Policy{DefaultIdleTimeout: longTimeout, RetryInterval: retry, RetryMaxInterval: retry},
		store:  true,
		drop:   func(r coordinator.Record) bool { return r.Key == "rel.crash" },
	}
	s := startServer(t, natstest.JetStream())
	nc := connect(t, s.ClientURL())
	events := subscribe(t, nc, prefix+".quiesce.>")
	w1, st1 := relStartWorker(t, s.ClientURL(), opts)
	v := openStoreView(t, nc)
	regID := v.waitMeta().ID

	for _, k := range []string{"rel.drain", "rel.quiet", "rel.crash"} {
		heartbeat(t, nc, k, timeoutBody(short))
	}
	heartbeat(t, nc, "rel.report", "")
	reportState(t, nc, "rel.report", "draining")
	before := map[string]event{}
	for deadline := time.Now().Add(short + bound); len(before) < 2; {
		ev := nextEvent(t, events, time.Until(deadline))
		if prev, ok := before[ev.Key]; ok {
			if ev.ID != prev.ID {
				t.Fatalf("second event for %s before the restart: got id %q; want %q", ev.Key, ev.ID, prev.ID)
			}
			continue
		}
		before[ev.Key] = ev
	}
	if got := slices.Sorted(maps.Keys(before)); !slices.Equal(got, []string{"rel.drain", "rel.quiet"}) {
		t.Fatalf("events before the restart: got %v; want rel.drain rel.quiet (rel.crash's is dropped)", got)
	}
	waitFor(t, bound, func() bool { return st1.droppedID("rel.crash") != "" })
	reportState(t, nc, "rel.quiet", "quiesced")
	stored := map[string]relRecord{
		"rel.drain":  relWaitRecord(t, v, "rel.drain", "draining", func(r relRecord) bool { return r.State == "draining" && r.Reason == "idle_timeout" }),
		"rel.quiet":  relWaitRecord(t, v, "rel.quiet", "quiesced", func(r relRecord) bool { return r.State == "quiesced" }),
		"rel.report": relWaitRecord(t, v, "rel.report", "draining", func(r relRecord) bool { return r.State == "draining" }),
		"rel.crash":  v.record("rel.crash"), // its event was dropped
	}
	for k, ev := range before {
		if want := relEventID(regID, stored[k].Generation); ev.ID != want {
			t.Errorf("event of %s: got id %q; want %q", k, ev.ID, want)
		}
	}
	if want := relEventID(regID, stored["rel.crash"].Generation); st1.droppedID("rel.crash") != want {
		t.Errorf("dropped event of rel.crash: got id %q; want %q", st1.droppedID("rel.crash"), want)
	}
	sent, _ := heartbeat(t, nc, "rel.run", timeoutBody(grace))
	stored["rel.run"] = v.record("rel.run") // stored before the reply
	if stored["rel.run"].State != "running" {
		t.Errorf("record of rel.run when its heartbeat was answered: got %v; want running", stored["rel.run"])
	}
	if err := w1.stop(bound); err != nil {
		t.Fatal(err)
	}
	if got := v.record("rel.crash"); got.State != "running" {
		t.Fatalf("record of rel.crash: got %v; want running (the test dropped its event)", got)
	}
	// A subscription made after the first worker stopped receives only what
	// the second one publishes.
	after := subscribe(t, nc, prefix+".quiesce.>")
	// Let rel.run's timeout pass with no worker running, so that a restart
	// without grace would drain it at once.
	<-time.After(time.Until(sent.Add(grace)))

	restart := time.Now()
	w2, _ := relStartWorker(t, s.ClientURL(), relOptions{policy: opts.policy, store: true})
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
		{"rel.crash", st1.droppedID("rel.crash"), 1, short},
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
	if got := v.waitMeta().ID; got != regID {
		t.Errorf("store id after the restart: got %q; want %q", got, regID)
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

// IDLE_PERSIST through the binary: on refuses a server without JetStream,
// auto warns and runs in memory there, off creates nothing in JetStream,
// and auto on a JetStream server stores the records and the events in one
// stream.
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
	t.Run("off creates no stream", func(t *testing.T) {
		t.Parallel()
		s := startServer(t, natstest.JetStream())
		p := startBinary(t, map[string]string{"IDLE_NATS_URL": s.ClientURL(), "IDLE_PERSIST": "off"})
		serve(t, p, s.ClientURL(), "off.js")
		if got := streams(t, s.ClientURL()); len(got) != 0 {
			t.Errorf("JetStream streams with IDLE_PERSIST=off: got %v; want none (no store stream)", got)
		}
	})
	t.Run("auto with JetStream persists", func(t *testing.T) {
		t.Parallel()
		s := startServer(t, natstest.JetStream())
		p := startBinary(t, map[string]string{"IDLE_NATS_URL": s.ClientURL(), "IDLE_PERSIST": "auto"})
		serve(t, p, s.ClientURL(), "auto.js")
		if got, want := streams(t, s.ClientURL()), []string{store.DefaultStreamName}; !slices.Equal(got, want) {
			t.Errorf("JetStream streams with IDLE_PERSIST=auto: got %v; want %v (one stream, no KV bucket)", got, want)
		}
		v := openStoreView(t, connect(t, s.ClientURL()))
		relWaitRecord(t, v, "auto.js", "draining", func(r relRecord) bool { return r.State == "draining" })
	})
}
