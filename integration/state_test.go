package integration

import (
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
)

// Each state report gets an ok reply and does what subjects.md says:
// draining and quiesced stop the quiesce from coming, removed forgets the
// backend.
func TestStateReports(t *testing.T) {
	t.Parallel()
	// The reported backends get a longer timeout than the control, so the
	// report surely lands before their deadline even on a slow machine.
	const timeout, reported = 300 * time.Millisecond, time.Second
	w, nc, events := setup(t, bus.WorkerConfig{Policy: coordinator.Policy{DefaultIdleTimeout: longTimeout}})

	heartbeat(t, nc, "st.draining", timeoutBody(reported))
	reportState(t, nc, "st.draining", bus.StateDraining)
	heartbeat(t, nc, "st.quiesced", timeoutBody(reported))
	reportState(t, nc, "st.quiesced", bus.StateQuiesced)
	heartbeat(t, nc, "st.removed", timeoutBody(reported))
	reportState(t, nc, "st.removed", bus.StateRemoved)
	lastReported := time.Now()
	// A control backend shows the timer works here.
	sent, _ := heartbeat(t, nc, "st.control", timeoutBody(timeout))

	ev := nextEvent(t, events, timeout+bound)
	if ev.Key != "st.control" {
		t.Fatalf("event: got key %q; want st.control (the others were reported)", ev.Key)
	}
	checkTiming(t, sent, ev.arrived, timeout)
	// Well past the reported backends' deadlines: nothing.
	expectNoMsg(t, events, time.Until(lastReported.Add(reported+2*timeout)))

	for key, want := range map[string]string{"st.draining": "draining", "st.quiesced": "quiesced", "st.removed": "", "st.control": "draining"} {
		if got := state(t, nc, key); got != want {
			t.Errorf("state of %s: got %q; want %q", key, got, want)
		}
	}
	l := adminList(t, nc, "")
	var keys []string
	for _, b := range l.Backends {
		keys = append(keys, b.Key)
	}
	if want := "st.control,st.draining,st.quiesced"; strings.Join(keys, ",") != want {
		t.Errorf("admin list keys: got %v; want %s (removed is forgotten)", keys, want)
	}
	st := w.Stats()
	if st.StateReports != 3 || st.Running != 0 || st.Draining != 2 || st.Quiesced != 1 {
		t.Errorf("stats: got state_reports %d running %d draining %d quiesced %d; want 3 0 2 1",
			st.StateReports, st.Running, st.Draining, st.Quiesced)
	}

	// The broker's usual sequence after a quiesce: quiesced, then removed.
	reportState(t, nc, "st.control", bus.StateQuiesced)
	reportState(t, nc, "st.control", bus.StateRemoved)
	if got := state(t, nc, "st.control"); got != "" {
		t.Errorf("state of st.control after removed: got %q; want untracked", got)
	}
}

// A state report for a key the worker does not track is refused with the
// documented error and changes nothing.
func TestStateForUnknownKey(t *testing.T) {
	t.Parallel()
	w, nc, events := setup(t, bus.WorkerConfig{Policy: coordinator.Policy{DefaultIdleTimeout: longTimeout}})
	heartbeat(t, nc, "known.one", "")
	heartbeat(t, nc, "gone.one", "")
	reportState(t, nc, "gone.one", bus.StateRemoved)

	listBefore := adminList(t, nc, "")
	before := w.Stats()
	for _, key := range []string{"never.seen", "gone.one"} {
		for _, st := range []string{bus.StateDraining, bus.StateQuiesced, bus.StateRemoved} {
			m := request(t, nc, prefix+".state."+key, `{"state":"`+st+`"}`)
			got := refusal(t, m)
			want := `bus: unknown backend: "` + key + `" is not tracked`
			if got != want || !strings.Contains(got, "unknown") {
				t.Errorf("state %s for %s: got error %q; want %q", st, key, got, want)
			}
		}
	}
	if d, want := statsDiff(before, w.Stats()), map[string]int64{"rejected.unknown_backend": 6}; !maps.Equal(d, want) {
		t.Errorf("counters moved by %v; want %v", d, want)
	}
	listAfter := adminList(t, nc, "")
	if !sameBackends(listBefore, listAfter) {
		t.Errorf("admin list after refused reports: got %+v; want %+v", listAfter.Backends, listBefore.Backends)
	}
	expectNoMsg(t, events, 50*time.Millisecond)
}

// sameBackends compares two lists by key, state and timeout (idle_for moves).
func sameBackends(a, b bus.ListReply) bool {
	if a.Total != b.Total || a.Truncated != b.Truncated || len(a.Backends) != len(b.Backends) {
		return false
	}
	for i := range a.Backends {
		x, y := a.Backends[i], b.Backends[i]
		if x.Key != y.Key || x.State != y.State || x.IdleTimeoutMS != y.IdleTimeoutMS {
			return false
		}
	}
	return true
}
