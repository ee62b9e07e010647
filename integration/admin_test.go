package integration

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
)

// P.admin.list returns the matching backends sorted by key, with their
// state, idle time and timeout, and says when a limit truncated the list.
func TestAdminList(t *testing.T) {
	t.Parallel()
	_, nc, events := setup(t, bus.WorkerConfig{Policy: coordinator.Policy{DefaultIdleTimeout: longTimeout}})

	// Registered out of order, with distinct timeouts.
	timeouts := map[string]int64{"c.one": 50000, "a.two": 60000, "b.three.x": 70000, "a.one": 80000}
	sent := map[string]time.Time{}
	replied := map[string]time.Time{}
	for _, k := range []string{"c.one", "a.two", "b.three.x", "a.one"} {
		sent[k], _ = heartbeat(t, nc, k, timeoutBody(time.Duration(timeouts[k])*time.Millisecond))
		replied[k] = time.Now()
	}
	reportState(t, nc, "b.three.x", bus.StateDraining)
	reportState(t, nc, "c.one", bus.StateQuiesced)
	// Let idle time build up while proving nothing fires.
	expectNoMsg(t, events, 150*time.Millisecond)

	listSent := time.Now()
	all := adminList(t, nc, "")
	listReplied := time.Now()
	wantStates := map[string]string{"a.one": "running", "a.two": "running", "b.three.x": "draining", "c.one": "quiesced"}
	if got := listKeys(all); !slices.Equal(got, []string{"a.one", "a.two", "b.three.x", "c.one"}) {
		t.Errorf("list keys: got %v; want a.one a.two b.three.x c.one (sorted)", got)
	}
	if all.Total != 4 || all.Truncated {
		t.Errorf("list: got total %d truncated %v; want 4 false", all.Total, all.Truncated)
	}
	for _, b := range all.Backends {
		if b.State != wantStates[b.Key] {
			t.Errorf("%s state: got %q; want %q", b.Key, b.State, wantStates[b.Key])
		}
		if b.IdleTimeoutMS != timeouts[b.Key] {
			t.Errorf("%s idle_timeout_ms: got %d; want %d", b.Key, b.IdleTimeoutMS, timeouts[b.Key])
		}
		// The worker stamped the heartbeat between sent and replied, and
		// the list between listSent and listReplied.
		lo, hi := listSent.Sub(replied[b.Key]), listReplied.Sub(sent[b.Key])
		if got := time.Duration(b.IdleForMS) * time.Millisecond; got+time.Millisecond <= lo || got > hi {
			t.Errorf("%s idle_for_ms: got %d; want between %d and %d", b.Key, b.IdleForMS, lo.Milliseconds(), hi.Milliseconds())
		}
	}

	tests := []struct {
		body      string
		keys      []string
		total     int
		truncated bool
	}{
		{`{}`, []string{"a.one", "a.two", "b.three.x", "c.one"}, 4, false},
		{`{"limit":2}`, []string{"a.one", "a.two"}, 4, true},
		{`{"limit":4}`, []string{"a.one", "a.two", "b.three.x", "c.one"}, 4, false},
		{`{"limit":10000}`, []string{"a.one", "a.two", "b.three.x", "c.one"}, 4, false},
		{`{"match":">"}`, []string{"a.one", "a.two", "b.three.x", "c.one"}, 4, false},
		{`{"match":"a.*"}`, []string{"a.one", "a.two"}, 2, false},
		{`{"match":"a.*","limit":1}`, []string{"a.one"}, 2, true},
		{`{"match":"*.one"}`, []string{"a.one", "c.one"}, 2, false},
		{`{"match":"b.>"}`, []string{"b.three.x"}, 1, false},
		{`{"match":"*"}`, []string{}, 0, false},
		{`{"match":"*.*.*"}`, []string{"b.three.x"}, 1, false},
		{`{"match":"a.two"}`, []string{"a.two"}, 1, false},
		{`{"match":"a"}`, []string{}, 0, false},
		{`{"match":"zzz.>"}`, []string{}, 0, false},
		{`{"match":"c.>","note":"ignored"}`, []string{"c.one"}, 1, false},
	}
	for _, tt := range tests {
		r := adminList(t, nc, tt.body)
		if got := listKeys(r); !slices.Equal(got, tt.keys) || r.Total != tt.total || r.Truncated != tt.truncated {
			t.Errorf("list %s: got keys %v total %d truncated %v; want %v %d %v",
				tt.body, got, r.Total, r.Truncated, tt.keys, tt.total, tt.truncated)
		}
	}
}

func listKeys(r bus.ListReply) []string {
	keys := []string{}
	for _, b := range r.Backends {
		keys = append(keys, b.Key)
	}
	return keys
}

// P.admin.get returns one backend, or ok:false with 404 for an unknown key.
func TestAdminGet(t *testing.T) {
	t.Parallel()
	w, nc, _ := setup(t, bus.WorkerConfig{Policy: coordinator.Policy{DefaultIdleTimeout: longTimeout}})
	heartbeat(t, nc, "get.me", `{"idle_timeout_ms":12345}`)
	b, ok := adminGet(t, nc, "get.me")
	if !ok {
		t.Fatalf("admin get get.me: got unknown; want tracked")
	}
	if b.Key != "get.me" || b.State != "running" || b.IdleTimeoutMS != 12345 || b.IdleForMS < 0 || b.IdleForMS > bound.Milliseconds() {
		t.Errorf("admin get: got %+v; want key get.me, running, idle_timeout_ms 12345, small idle_for_ms", b)
	}
	reportState(t, nc, "get.me", bus.StateDraining)
	if got := state(t, nc, "get.me"); got != "draining" {
		t.Errorf("admin get state: got %q; want draining", got)
	}

	before := w.Stats()
	m := request(t, nc, prefix+".admin.get", `{"key":"not.here"}`)
	if code := m.Header.Get(micro.ErrorCodeHeader); code != "404" {
		t.Errorf("unknown key: got error code %q; want 404", code)
	}
	if desc := m.Header.Get(micro.ErrorHeader); desc == "" {
		t.Errorf("unknown key: got no %s header; want one", micro.ErrorHeader)
	}
	if e := refusal(t, m); !strings.Contains(e, "unknown") || !strings.Contains(e, "not.here") {
		t.Errorf("unknown key: got error %q; want it to say the key is unknown", e)
	}
	if d := statsDiff(before, w.Stats()); d["rejected.unknown_backend"] != 1 || len(d) != 1 {
		t.Errorf("counters moved by %v; want rejected.unknown_backend +1", d)
	}
}

// P.admin.quiesce sends one event, with the requested reason, to every
// matching running backend and counts only those; the reply comes after the
// events.
func TestAdminQuiesce(t *testing.T) {
	t.Parallel()
	w, nc, events := setup(t, bus.WorkerConfig{Policy: coordinator.Policy{DefaultIdleTimeout: longTimeout}})
	for _, k := range []string{"h1.svc.v1.aa", "h1.svc.v2.bb", "h1.other.v1.cc", "h2.svc.v1.dd", "h1.svc.v3.ee", "h1.x.y.zz"} {
		heartbeat(t, nc, k, "")
	}
	reportState(t, nc, "h1.svc.v3.ee", bus.StateDraining)
	reportState(t, nc, "h1.x.y.zz", bus.StateQuiesced)

	steps := []struct {
		body   string
		reason string
		keys   []string // sorted
	}{
		// An exact key; the reason defaults to maintenance.
		{`{"match":"h2.svc.v1.dd"}`, "maintenance", []string{"h2.svc.v1.dd"}},
		// Already draining: left alone.
		{`{"match":"h2.svc.v1.dd","reason":"maintenance"}`, "", nil},
		// "*" matches one token; ee is draining and not counted.
		{`{"match":"h1.svc.*.*","reason":"broker_shutdown"}`, "broker_shutdown", []string{"h1.svc.v1.aa", "h1.svc.v2.bb"}},
		// ">" matches the rest; only cc is still running.
		{`{"match":"h1.>","reason":"maintenance"}`, "maintenance", []string{"h1.other.v1.cc"}},
		// Nothing is running any more.
		{`{"match":">","reason":"broker_shutdown"}`, "", nil},
		// An untracked key.
		{`{"match":"no.such.key"}`, "", nil},
	}
	for _, st := range steps {
		n := adminQuiesce(t, nc, st.body)
		if n != len(st.keys) {
			t.Errorf("quiesce %s: got quiesced %d; want %d", st.body, n, len(st.keys))
		}
		// The events were published before the reply, on the same
		// connection, so they are already queued for us.
		if pending, _, _ := events.Pending(); pending < len(st.keys) {
			t.Errorf("quiesce %s: %d events queued when the reply came; want %d before it", st.body, pending, len(st.keys))
		}
		var got []string
		for range st.keys {
			ev := nextEvent(t, events, bound)
			got = append(got, ev.Key)
			if ev.Reason != st.reason {
				t.Errorf("quiesce %s: event for %s has reason %q; want %q", st.body, ev.Key, ev.Reason, st.reason)
			}
			if ev.ConfiguredTimeoutMS != longTimeout.Milliseconds() {
				t.Errorf("event for %s: got configured_timeout_ms %d; want %d", ev.Key, ev.ConfiguredTimeoutMS, longTimeout.Milliseconds())
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, st.keys) {
			t.Errorf("quiesce %s: got events for %v; want %v", st.body, got, st.keys)
		}
	}
	expectNoMsg(t, events, 100*time.Millisecond)
	for _, k := range []string{"h1.svc.v1.aa", "h1.svc.v2.bb", "h1.other.v1.cc", "h2.svc.v1.dd", "h1.svc.v3.ee"} {
		if got := state(t, nc, k); got != "draining" {
			t.Errorf("state of %s: got %q; want draining", k, got)
		}
	}
	if got := state(t, nc, "h1.x.y.zz"); got != "quiesced" {
		t.Errorf("state of h1.x.y.zz: got %q; want quiesced (left alone)", got)
	}
	st := w.Stats()
	if st.Quiesces["maintenance"] != 2 || st.Quiesces["broker_shutdown"] != 2 || st.Quiesces["idle_timeout"] != 0 {
		t.Errorf("Stats().Quiesces: got %v; want maintenance 2, broker_shutdown 2, idle_timeout 0", st.Quiesces)
	}

	// Fresh activity re-arms a force-drained backend, which can then be
	// force-drained again.
	heartbeat(t, nc, "h1.svc.v1.aa", "")
	if n := adminQuiesce(t, nc, `{"match":"h1.svc.v1.aa","reason":"broker_shutdown"}`); n != 1 {
		t.Errorf("quiesce after fresh activity: got quiesced %d; want 1", n)
	}
	if ev := nextEvent(t, events, bound); ev.Key != "h1.svc.v1.aa" || ev.Reason != "broker_shutdown" {
		t.Errorf("event: got %s %s; want h1.svc.v1.aa broker_shutdown", ev.Key, ev.Reason)
	}
}

// The admin endpoints are a NATS micro service that `nats micro` can find:
// PING, INFO (with the five endpoints) and STATS (with the worker's
// counters) answer.
func TestServiceDiscovery(t *testing.T) {
	t.Parallel()
	_, nc, _ := setup(t, bus.WorkerConfig{Version: "1.2.3", Policy: coordinator.Policy{DefaultIdleTimeout: longTimeout}})
	heartbeat(t, nc, "disc.one", "")
	heartbeat(t, nc, "disc.two", "")

	subj, err := micro.ControlSubject(micro.InfoVerb, bus.ServiceName, "")
	if err != nil {
		t.Fatal(err)
	}
	if subj != "$SRV.INFO.idle-worker" {
		t.Errorf("info subject: got %q; want $SRV.INFO.idle-worker", subj)
	}
	var info micro.Info
	if err := json.Unmarshal(request(t, nc, subj, "").Data, &info); err != nil {
		t.Fatalf("info: %v", err)
	}
	if info.Name != "idle-worker" || info.Version != "1.2.3" || info.Type != micro.InfoResponseType {
		t.Errorf("info: got name %q version %q type %q; want idle-worker 1.2.3 %s", info.Name, info.Version, info.Type, micro.InfoResponseType)
	}
	var subjects []string
	for _, e := range info.Endpoints {
		subjects = append(subjects, e.Subject)
	}
	slices.Sort(subjects)
	if want := []string{"idle.admin.forget", "idle.admin.get", "idle.admin.list", "idle.admin.members", "idle.admin.quiesce"}; !slices.Equal(subjects, want) {
		t.Errorf("info endpoints: got %v; want %v", subjects, want)
	}

	ping, _ := micro.ControlSubject(micro.PingVerb, "", "")
	var p micro.Ping
	if err := json.Unmarshal(request(t, nc, ping, "").Data, &p); err != nil || p.Name != "idle-worker" {
		t.Errorf("ping: got %+v, %v; want name idle-worker", p, err)
	}

	statsSubj, _ := micro.ControlSubject(micro.StatsVerb, bus.ServiceName, "")
	var stats micro.Stats
	if err := json.Unmarshal(request(t, nc, statsSubj, "").Data, &stats); err != nil {
		t.Fatalf("stats: %v", err)
	}
	if len(stats.Endpoints) != 5 {
		t.Fatalf("stats: got %d endpoints; want 5", len(stats.Endpoints))
	}
	for _, e := range stats.Endpoints {
		var s bus.Stats
		if err := json.Unmarshal(e.Data, &s); err != nil {
			t.Fatalf("stats data of %s: %s: %v", e.Name, e.Data, err)
		}
		if s.Heartbeats != 2 || s.Running != 2 {
			t.Errorf("stats data of %s: got heartbeats %d running %d; want 2 2", e.Name, s.Heartbeats, s.Running)
		}
		if _, ok := s.Rejected["bad_key"]; !ok {
			t.Errorf("stats data of %s: got rejected %v; want every reason, bad_key included", e.Name, s.Rejected)
		}
	}
}
