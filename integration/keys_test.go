package integration

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
)

// Multi-token, percent-encoded and otherwise unusual but valid keys travel
// intact: in the reply, the event body, the event subject and admin
// replies, and a broker can subscribe to one instance's events.
func TestBackendKeys(t *testing.T) {
	t.Parallel()
	const timeout = 100 * time.Millisecond
	_, nc, events := setup(t, bus.WorkerConfig{Policy: coordinator.Policy{DefaultIdleTimeout: longTimeout}})

	id := bus.BackendID{Instance: "web-1.eu", Service: "gopls", Version: "0.16.1", ExeHash: "9f2c"}
	encoded := mustKey(t, id)
	if want := "web-1%2Eeu.gopls.0%2E16%2E1.9f2c"; encoded != want {
		t.Errorf("BackendID.Key(): got %q; want %q", encoded, want)
	}
	other := mustKey(t, bus.BackendID{Instance: "dev 7/α", Service: "rust-analyzer", Version: "2024-05-01", ExeHash: "ab_CD"})
	sixteen := strings.TrimSuffix(strings.Repeat("t.", 16), ".")
	longest := strings.Repeat("a", 100) + "." + strings.Repeat("b", 100) + "." + strings.Repeat("c", 53)
	if len(longest) != 255 {
		t.Fatalf("test key is %d bytes; want 255", len(longest))
	}
	// Printable ASCII, including JSON's special characters and wildcard
	// characters inside longer tokens, is allowed.
	odd := `q"uote.back\slash.a*b.c>d.~{}[]:,`

	instanceEvents := subscribe(t, nc, prefix+".quiesce.web-1%2Eeu.>")
	for _, key := range []string{encoded, other, sixteen, longest, odd} {
		t.Run(key[:min(len(key), 20)], func(t *testing.T) {
			sent, r := heartbeat(t, nc, key, timeoutBody(timeout))
			if r.Key != key {
				t.Fatalf("reply key: got %q; want %q", r.Key, key)
			}
			ev := nextEvent(t, events, timeout+bound)
			if ev.Key != key {
				t.Fatalf("event key: got %q; want %q", ev.Key, key)
			}
			checkTiming(t, sent, ev.arrived, timeout)
			b, ok := adminGet(t, nc, key)
			if !ok || b.Key != key {
				t.Errorf("admin get %q: got %+v, %v; want the backend", key, b, ok)
			}
		})
	}

	ev := nextEvent(t, instanceEvents, bound)
	if ev.Key != encoded {
		t.Errorf("instance subscription: got event for %q; want %q", ev.Key, encoded)
	}
	got, err := bus.ParseBackendID(ev.Key)
	if err != nil || got != id {
		t.Errorf("ParseBackendID(%q): got %+v, %v; want %+v", ev.Key, got, err, id)
	}
	expectNoMsg(t, instanceEvents, 50*time.Millisecond)
	if r := adminList(t, nc, `{"match":"web-1%2Eeu.>"}`); r.Total != 1 || len(r.Backends) != 1 || r.Backends[0].Key != encoded {
		t.Errorf("list by instance: got %+v; want only %q", r, encoded)
	}
}

// A worker with a custom prefix serves only under it.
func TestCustomPrefix(t *testing.T) {
	t.Parallel()
	const timeout = 100 * time.Millisecond
	s := startServer(t)
	startWorker(t, s.ClientURL(), bus.WorkerConfig{
		Subjects: bus.MustSubjects("acme.idle"),
		Policy:   coordinator.Policy{DefaultIdleTimeout: timeout},
	})
	nc := connect(t, s.ClientURL())
	events := subscribe(t, nc, "acme.idle.quiesce.>")

	sent := time.Now()
	m := request(t, nc, "acme.idle.activity.k1", "")
	var r bus.HeartbeatReply
	decodeOK(t, m, &r)
	if r.Key != "k1" || r.IdleTimeoutMS != timeout.Milliseconds() {
		t.Errorf("reply: got %+v; want key k1 idle_timeout_ms %d", r, timeout.Milliseconds())
	}
	ev := nextEventPrefix(t, events, "acme.idle", timeout+bound)
	checkTiming(t, sent, ev.arrived, timeout)
	if ev.Key != "k1" {
		t.Errorf("event key: got %q; want k1", ev.Key)
	}
	var l bus.ListReply
	decodeOK(t, request(t, nc, "acme.idle.admin.list", ""), &l)
	if l.Total != 1 || l.Backends[0].Key != "k1" {
		t.Errorf("acme.idle.admin.list: got %+v; want k1", l)
	}
	for _, subj := range []string{"idle.activity.k1", "idle.admin.list", "acme.idle.activity"} {
		if _, err := nc.Request(subj, nil, bound); !errors.Is(err, nats.ErrNoResponders) {
			t.Errorf("request %s: got %v; want nats.ErrNoResponders", subj, err)
		}
	}
}
