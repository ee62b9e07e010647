package integration

import (
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
)

// rejectConfig is the worker configuration of the rejection tests: small
// limits that requests can reach.
const (
	rejectMaxTimeout = time.Minute
	rejectMaxBody    = 128
)

type badInput struct {
	name    string
	subject string // without the prefix
	body    string
	reason  string // the Stats().Rejected key
	errText string // a part of the error that makes it clear
	code    string // admin requests: Nats-Service-Error-Code
}

func badInputs() []badInput {
	long := strings.Repeat("k", 256)
	seventeen := strings.TrimSuffix(strings.Repeat("t.", 17), ".")
	tooLong := padBody(`{"idle_timeout_ms":100,"pad":"`, `"}`, rejectMaxBody+1)
	tooLongState := padBody(`{"state":"draining","pad":"`, `"}`, rejectMaxBody+1)
	return []badInput{
		// Heartbeat bodies.
		{name: "malformed json", subject: "activity.keep.me", body: `{"idle_timeout_ms":`, reason: "bad_payload", errText: "JSON"},
		{name: "unclosed object", subject: "activity.keep.me", body: `{`, reason: "bad_payload", errText: "JSON"},
		{name: "trailing data", subject: "activity.keep.me", body: `{"idle_timeout_ms":5}x`, reason: "bad_payload", errText: "JSON"},
		{name: "array", subject: "activity.keep.me", body: `[]`, reason: "bad_payload", errText: "JSON object"},
		{name: "string body", subject: "activity.keep.me", body: `"hello"`, reason: "bad_payload", errText: "JSON object"},
		{name: "number body", subject: "activity.keep.me", body: `1000`, reason: "bad_payload", errText: "JSON object"},
		{name: "null body", subject: "activity.keep.me", body: `null`, reason: "bad_payload", errText: "JSON object"},
		{name: "text body", subject: "activity.keep.me", body: `ping`, reason: "bad_payload", errText: "JSON object"},
		{name: "negative timeout", subject: "activity.keep.me", body: `{"idle_timeout_ms":-5}`, reason: "bad_payload", errText: "idle_timeout_ms"},
		{name: "fractional timeout", subject: "activity.keep.me", body: `{"idle_timeout_ms":1.5}`, reason: "bad_payload", errText: "idle_timeout_ms"},
		{name: "exponent timeout", subject: "activity.keep.me", body: `{"idle_timeout_ms":1e3}`, reason: "bad_payload", errText: "idle_timeout_ms"},
		{name: "string timeout", subject: "activity.keep.me", body: `{"idle_timeout_ms":"1000"}`, reason: "bad_payload", errText: "idle_timeout_ms"},
		{name: "null timeout", subject: "activity.keep.me", body: `{"idle_timeout_ms":null}`, reason: "bad_payload", errText: "idle_timeout_ms"},
		{name: "boolean timeout", subject: "activity.keep.me", body: `{"idle_timeout_ms":true}`, reason: "bad_payload", errText: "idle_timeout_ms"},
		{name: "object timeout", subject: "activity.keep.me", body: `{"idle_timeout_ms":{}}`, reason: "bad_payload", errText: "idle_timeout_ms"},
		{name: "timeout above max", subject: "activity.keep.me", body: fmt.Sprintf(`{"idle_timeout_ms":%d}`, rejectMaxTimeout.Milliseconds()+1), reason: "timeout_too_large", errText: "exceeds"},
		// subjects.md: "N above IDLE_MAX_TIMEOUT (24 h) is rejected
		// (timeout_too_large)", however large the integer.
		{name: "timeout far above max", subject: "activity.keep.me", body: `{"idle_timeout_ms":99999999999999999999}`, reason: "timeout_too_large", errText: "idle_timeout_ms"},
		{name: "body above max body", subject: "activity.keep.me", body: tooLong, reason: "bad_payload", errText: "exceeds"},
		// Keys NATS delivers but the contract forbids.
		{name: "17 tokens", subject: "activity." + seventeen, reason: "bad_key", errText: "tokens"},
		{name: "256 bytes", subject: "activity." + long, reason: "bad_key", errText: "bytes"},
		{name: "non-ASCII key", subject: "activity.caf\u00e9.v1", reason: "bad_key", errText: "ASCII"},
		{name: "DEL in key", subject: "activity.a\x7fb", reason: "bad_key", errText: "ASCII"},
		{name: "state 17 tokens", subject: "state." + seventeen, body: `{"state":"draining"}`, reason: "bad_key", errText: "tokens"},
		{name: "state non-ASCII key", subject: "state.caf\u00e9", body: `{"state":"removed"}`, reason: "bad_key", errText: "ASCII"},
		// State bodies.
		{name: "unknown state", subject: "state.keep.me", body: `{"state":"paused"}`, reason: "bad_payload", errText: "paused"},
		{name: "state in capitals", subject: "state.keep.me", body: `{"state":"DRAINING"}`, reason: "bad_payload", errText: "state"},
		{name: "state missing", subject: "state.keep.me", body: `{}`, reason: "bad_payload", errText: "state"},
		{name: "state null", subject: "state.keep.me", body: `{"state":null}`, reason: "bad_payload", errText: "state"},
		{name: "state number", subject: "state.keep.me", body: `{"state":1}`, reason: "bad_payload", errText: "state"},
		{name: "state empty body", subject: "state.keep.me", body: ``, reason: "bad_payload", errText: "JSON object"},
		{name: "state array", subject: "state.keep.me", body: `["draining"]`, reason: "bad_payload", errText: "JSON object"},
		{name: "state bare word", subject: "state.keep.me", body: `draining`, reason: "bad_payload", errText: "JSON object"},
		{name: "state malformed", subject: "state.keep.me", body: `{"state":"draining"`, reason: "bad_payload", errText: "state"},
		{name: "state body above max body", subject: "state.keep.me", body: tooLongState, reason: "bad_payload", errText: "exceeds"},
		{name: "state for unknown key", subject: "state.not.tracked", body: `{"state":"draining"}`, reason: "unknown_backend", errText: "unknown"},
		// Admin requests.
		{name: "list bad json", subject: "admin.list", body: `{"match":`, reason: "bad_admin_request", errText: "list request", code: "400"},
		{name: "list array", subject: "admin.list", body: `[]`, reason: "bad_admin_request", errText: "JSON object", code: "400"},
		{name: "list empty token", subject: "admin.list", body: `{"match":"a..b"}`, reason: "bad_admin_request", errText: "empty token", code: "400"},
		{name: "list > not last", subject: "admin.list", body: `{"match":"a.>.b"}`, reason: "bad_admin_request", errText: ">", code: "400"},
		{name: "list non-ASCII pattern", subject: "admin.list", body: `{"match":"café.>"}`, reason: "bad_admin_request", errText: "ASCII", code: "400"},
		{name: "list negative limit", subject: "admin.list", body: `{"limit":-1}`, reason: "bad_admin_request", errText: "limit", code: "400"},
		{name: "list limit above max", subject: "admin.list", body: `{"limit":10001}`, reason: "bad_admin_request", errText: "limit", code: "400"},
		{name: "list string limit", subject: "admin.list", body: `{"limit":"5"}`, reason: "bad_admin_request", errText: "limit", code: "400"},
		{name: "get bad json", subject: "admin.get", body: `{"key"`, reason: "bad_admin_request", errText: "get request", code: "400"},
		{name: "get empty body", subject: "admin.get", body: ``, reason: "bad_admin_request", errText: "JSON object", code: "400"},
		{name: "get no key", subject: "admin.get", body: `{}`, reason: "bad_admin_request", errText: "empty", code: "400"},
		{name: "get pattern", subject: "admin.get", body: `{"key":"keep.*"}`, reason: "bad_admin_request", errText: "wildcard", code: "400"},
		{name: "get unknown key", subject: "admin.get", body: `{"key":"not.tracked"}`, reason: "unknown_backend", errText: "unknown", code: "404"},
		{name: "quiesce bad json", subject: "admin.quiesce", body: `{"match":">",`, reason: "bad_admin_request", errText: "quiesce request", code: "400"},
		{name: "quiesce empty body", subject: "admin.quiesce", body: ``, reason: "bad_admin_request", errText: "JSON object", code: "400"},
		{name: "quiesce no match", subject: "admin.quiesce", body: `{"reason":"maintenance"}`, reason: "bad_admin_request", errText: "match", code: "400"},
		{name: "quiesce bad pattern", subject: "admin.quiesce", body: `{"match":"keep..me"}`, reason: "bad_admin_request", errText: "empty token", code: "400"},
		{name: "quiesce > not last", subject: "admin.quiesce", body: `{"match":">.me"}`, reason: "bad_admin_request", errText: ">", code: "400"},
		{name: "quiesce unknown reason", subject: "admin.quiesce", body: `{"match":">","reason":"later"}`, reason: "bad_admin_request", errText: "later", code: "400"},
		{name: "quiesce idle_timeout reason", subject: "admin.quiesce", body: `{"match":">","reason":"idle_timeout"}`, reason: "bad_admin_request", errText: "idle_timeout", code: "400"},
		{name: "quiesce number reason", subject: "admin.quiesce", body: `{"match":">","reason":5}`, reason: "bad_admin_request", errText: "reason", code: "400"},
	}
}

// Every kind of bad input gets ok:false with a clear error, is counted under
// its reason, changes nothing, and the worker keeps serving.
func TestRejectedInput(t *testing.T) {
	t.Parallel()
	w, nc, events := setup(t, bus.WorkerConfig{
		Policy:     coordinator.Policy{DefaultIdleTimeout: 30 * time.Second},
		MaxTimeout: rejectMaxTimeout,
		MaxBody:    rejectMaxBody,
	})
	heartbeat(t, nc, "keep.me", `{"idle_timeout_ms":50000}`)
	heartbeat(t, nc, "keep.too", "")
	reportState(t, nc, "keep.too", bus.StateQuiesced)

	for _, tt := range badInputs() {
		t.Run(tt.name, func(t *testing.T) {
			listBefore := adminList(t, nc, "")
			before := w.Stats()

			m := request(t, nc, prefix+"."+tt.subject, tt.body)
			errText := refusal(t, m)
			if !strings.Contains(errText, "bus: ") || !strings.Contains(errText, tt.errText) {
				t.Errorf("error: got %q; want a bus: error mentioning %q", errText, tt.errText)
			}
			if tt.code != "" {
				if got := m.Header.Get(micro.ErrorCodeHeader); got != tt.code {
					t.Errorf("%s: got %q; want %q", micro.ErrorCodeHeader, got, tt.code)
				}
				if got := m.Header.Get(micro.ErrorHeader); got == "" {
					t.Errorf("%s: got none; want the error", micro.ErrorHeader)
				}
			}
			if d, want := statsDiff(before, w.Stats()), map[string]int64{"rejected." + tt.reason: 1}; !maps.Equal(d, want) {
				t.Errorf("counters moved by %v; want %v", d, want)
			}
			if listAfter := adminList(t, nc, ""); !sameBackends(listBefore, listAfter) {
				t.Errorf("backends after the refusal: got %+v; want unchanged %+v", listAfter.Backends, listBefore.Backends)
			}
			// Still serving.
			if _, r := heartbeat(t, nc, "keep.me", `{"idle_timeout_ms":50000}`); r.IdleTimeoutMS != 50000 {
				t.Errorf("heartbeat after the refusal: got idle_timeout_ms %d; want 50000", r.IdleTimeoutMS)
			}
		})
	}
	if got := state(t, nc, "keep.too"); got != "quiesced" {
		t.Errorf("keep.too: got state %q; want quiesced (untouched)", got)
	}
	// No refused admin quiesce, or anything else, produced an event.
	expectNoMsg(t, events, 50*time.Millisecond)
}

// Bad input without a reply subject is counted and dropped just the same.
func TestRejectedWithoutReply(t *testing.T) {
	t.Parallel()
	w, nc, events := setup(t, bus.WorkerConfig{
		Policy:     coordinator.Policy{DefaultIdleTimeout: 30 * time.Second},
		MaxTimeout: rejectMaxTimeout,
		MaxBody:    rejectMaxBody,
	})
	want := map[string]int64{}
	before := w.Stats()
	for _, tt := range badInputs() {
		if tt.code != "" {
			continue // admin endpoints are requests
		}
		if err := nc.Publish(prefix+"."+tt.subject, []byte(tt.body)); err != nil {
			t.Fatalf("publish %s: %v", tt.name, err)
		}
		want["rejected."+tt.reason]++
	}
	var total int64
	for _, n := range want {
		total += n
	}
	waitFor(t, bound, func() bool { return sum(statsDiff(before, w.Stats())) >= total })
	if d := statsDiff(before, w.Stats()); !maps.Equal(d, want) {
		t.Errorf("counters moved by %v; want %v", d, want)
	}
	if r := adminList(t, nc, ""); r.Total != 0 {
		t.Errorf("after bad input: got %d backends; want 0", r.Total)
	}
	heartbeat(t, nc, "still.serving", "")
	expectNoMsg(t, events, 50*time.Millisecond)
}

// With Policy.MaxBackends tracked, a new key is refused while known keys keep
// working; forgetting one makes room.
func TestBackendLimit(t *testing.T) {
	t.Parallel()
	w, nc, _ := setup(t, bus.WorkerConfig{Policy: coordinator.Policy{DefaultIdleTimeout: longTimeout, MaxBackends: 2}})
	heartbeat(t, nc, "lim.a", "")
	heartbeat(t, nc, "lim.b", "")

	before := w.Stats()
	m := request(t, nc, prefix+".activity.lim.c", "")
	if e := refusal(t, m); !strings.Contains(e, "limit") {
		t.Errorf("third key: got error %q; want it to mention the limit", e)
	}
	if err := nc.Publish(prefix+".activity.lim.d", nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, bound, func() bool { return w.Stats().Rejected["backend_limit"]-before.Rejected["backend_limit"] == 2 })
	if d, want := statsDiff(before, w.Stats()), map[string]int64{"rejected.backend_limit": 2}; !maps.Equal(d, want) {
		t.Errorf("counters moved by %v; want %v", d, want)
	}
	if r := adminList(t, nc, ""); r.Total != 2 {
		t.Errorf("backends: got %d; want 2", r.Total)
	}

	// Tracked keys keep working, in every state.
	heartbeat(t, nc, "lim.a", `{"idle_timeout_ms":5000}`)
	reportState(t, nc, "lim.b", bus.StateDraining)
	heartbeat(t, nc, "lim.b", "")

	reportState(t, nc, "lim.b", bus.StateRemoved)
	heartbeat(t, nc, "lim.c", "")
	if r := adminList(t, nc, ""); r.Total != 2 || listKeys(r)[1] != "lim.c" {
		t.Errorf("backends after removing lim.b and adding lim.c: got %v; want lim.a lim.c", listKeys(r))
	}
}

func sum(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}
