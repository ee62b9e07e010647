package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
)

// A bad configuration value makes idle-worker exit with status 2 and name
// the variable, before it listens or connects anywhere.
func TestBinaryBadConfig(t *testing.T) {
	t.Parallel()
	// Where the configuration names no embedded listener, an unreachable
	// server keeps a wrongly accepted configuration from going anywhere:
	// the process would exit 1, not 2.
	dead := fmt.Sprintf("nats://127.0.0.1:%d", freePort(t))
	anyPort := fmt.Sprintf("0.0.0.0:%d", freePort(t))
	tests := []struct {
		name    string
		env     map[string]string
		wantVar string
	}{
		{"default timeout not a duration", map[string]string{"IDLE_DEFAULT_TIMEOUT": "abc"}, "IDLE_DEFAULT_TIMEOUT"},
		{"negative default timeout", map[string]string{"IDLE_DEFAULT_TIMEOUT": "-1s"}, "IDLE_DEFAULT_TIMEOUT"},
		{"negative max timeout", map[string]string{"IDLE_MAX_TIMEOUT": "-1s"}, "IDLE_MAX_TIMEOUT"},
		{"zero max timeout", map[string]string{"IDLE_MAX_TIMEOUT": "0s"}, "IDLE_MAX_TIMEOUT"},
		{"default above max", map[string]string{"IDLE_DEFAULT_TIMEOUT": "2h", "IDLE_MAX_TIMEOUT": "1h"}, "IDLE_DEFAULT_TIMEOUT"},
		{"unknown log level", map[string]string{"IDLE_LOG_LEVEL": "loud"}, "IDLE_LOG_LEVEL"},
		{"unknown log format", map[string]string{"IDLE_LOG_FORMAT": "xml"}, "IDLE_LOG_FORMAT"},
		{"prefix with empty token", map[string]string{"IDLE_SUBJECT_PREFIX": "a..b"}, "IDLE_SUBJECT_PREFIX"},
		{"prefix with wildcard", map[string]string{"IDLE_SUBJECT_PREFIX": "idle.*"}, "IDLE_SUBJECT_PREFIX"},
		{"prefix with space", map[string]string{"IDLE_SUBJECT_PREFIX": "my idle"}, "IDLE_SUBJECT_PREFIX"},
		{"negative max backends", map[string]string{"IDLE_MAX_BACKENDS": "-1"}, "IDLE_MAX_BACKENDS"},
		{"max backends not a number", map[string]string{"IDLE_MAX_BACKENDS": "many"}, "IDLE_MAX_BACKENDS"},
		{"max body too small", map[string]string{"IDLE_MAX_BODY": "1"}, "IDLE_MAX_BODY"},
		{"reply prefix on the registry", map[string]string{"IDLE_REPLY_PREFIXES": "_INBOX.,$KV."}, "IDLE_REPLY_PREFIXES"},
		{"reply prefix under the own prefix", map[string]string{"IDLE_REPLY_PREFIXES": "idle.state."}, "IDLE_REPLY_PREFIXES"},
		{"queue length not a number", map[string]string{"IDLE_QUEUE_LENGTH": "x"}, "IDLE_QUEUE_LENGTH"},
		{"zero queue length", map[string]string{"IDLE_QUEUE_LENGTH": "0"}, "IDLE_QUEUE_LENGTH"},
		{"zero connect timeout", map[string]string{"IDLE_CONNECT_TIMEOUT": "0s"}, "IDLE_CONNECT_TIMEOUT"},
		{"negative shutdown timeout", map[string]string{"IDLE_SHUTDOWN_TIMEOUT": "-5s"}, "IDLE_SHUTDOWN_TIMEOUT"},
		{"allow remote not a boolean", map[string]string{"IDLE_EMBEDDED_ALLOW_REMOTE": "perhaps"}, "IDLE_EMBEDDED_ALLOW_REMOTE"},
		{"embedded listen on all interfaces", map[string]string{"IDLE_NATS_URL": "", "IDLE_EMBEDDED_LISTEN": anyPort}, "IDLE_EMBEDDED_LISTEN"},
		{"embedded listen without a port", map[string]string{"IDLE_NATS_URL": "", "IDLE_EMBEDDED_LISTEN": "127.0.0.1"}, "IDLE_EMBEDDED_LISTEN"},
		{"embedded listen port out of range", map[string]string{"IDLE_NATS_URL": "", "IDLE_EMBEDDED_LISTEN": "127.0.0.1:70000"}, "IDLE_EMBEDDED_LISTEN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{"IDLE_NATS_URL": dead}
			for k, v := range tt.env {
				env[k] = v
			}
			p := startBinary(t, env)
			if code := p.exitCode(t, 10*time.Second); code != 2 {
				t.Errorf("exit status: got %d; want 2", code)
			}
			stderr := p.stderr.String()
			if !strings.Contains(stderr, tt.wantVar) {
				t.Errorf("stderr %q: want it to name %s", stderr, tt.wantVar)
			}
			if !strings.Contains(stderr, "bad configuration") {
				t.Errorf("stderr %q: want it to say \"bad configuration\"", stderr)
			}
		})
	}
}

// With IDLE_NATS_URL empty, idle-worker runs its own nats-server, with
// JetStream, on IDLE_EMBEDDED_LISTEN, and serves there.
func TestBinaryEmbeddedServer(t *testing.T) {
	t.Parallel()
	const timeout = 200 * time.Millisecond
	port := freePort(t)
	p := startBinary(t, map[string]string{
		"IDLE_NATS_URL":        "",
		"IDLE_EMBEDDED_LISTEN": fmt.Sprintf("127.0.0.1:%d", port),
	})
	nc := connectTo(t, p, fmt.Sprintf("nats://127.0.0.1:%d", port))
	waitServing(t, p, nc)
	events := subscribe(t, nc, prefix+".quiesce.>")

	sent, r := heartbeat(t, nc, "bin.embedded", timeoutBody(timeout))
	if r.IdleTimeoutMS != timeout.Milliseconds() {
		t.Errorf("reply idle_timeout_ms: got %d; want %d", r.IdleTimeoutMS, timeout.Milliseconds())
	}
	ev := nextEvent(t, events, timeout+bound)
	checkTiming(t, sent, ev.arrived, timeout)
	if ev.Key != "bin.embedded" || ev.Reason != "idle_timeout" {
		t.Errorf("event: got key %q reason %q; want bin.embedded idle_timeout", ev.Key, ev.Reason)
	}

	// The embedded server has JetStream, as the command's doc says.
	m := request(t, nc, "$JS.API.INFO", "")
	var info struct {
		Error *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &info); err != nil || info.Error != nil {
		t.Errorf("$JS.API.INFO: got %s; want account info (JetStream enabled)", m.Data)
	}

	p.signal(t, syscall.SIGTERM)
	if code := p.exitCode(t, 5*time.Second); code != 0 {
		t.Errorf("exit status after SIGTERM: got %d; want 0", code)
	}
	// Its JetStream store was a temporary directory, removed on exit.
	left, err := os.ReadDir(p.tmpDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range left {
		t.Errorf("TMPDIR after a clean exit: got %s left behind; want the embedded store removed", e.Name())
	}
}

// An embedded listener on a port already in use makes idle-worker exit 1
// and say why.
func TestBinaryEmbeddedPortInUse(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	p := startBinary(t, map[string]string{"IDLE_NATS_URL": "", "IDLE_EMBEDDED_LISTEN": l.Addr().String()})
	if code := p.exitCode(t, 20*time.Second); code != 1 {
		t.Errorf("exit status: got %d; want 1", code)
	}
	t.Logf("exited after %v", time.Since(p.started))
	if stderr := p.stderr.String(); !strings.Contains(stderr, "address already in use") {
		t.Errorf("stderr %q: want it to say the address is in use", stderr)
	}
	left, err := os.ReadDir(p.tmpDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range left {
		t.Errorf("TMPDIR after a failed start: got %s left behind; want the embedded store removed", e.Name())
	}
}

// With IDLE_NATS_URL set, idle-worker serves on that server, configured by
// its IDLE_* variables.
func TestBinaryExternalServer(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	s := startServer(t)
	p := startBinary(t, map[string]string{
		"IDLE_NATS_URL":        s.ClientURL(),
		"IDLE_SUBJECT_PREFIX":  "acme.idle",
		"IDLE_DEFAULT_TIMEOUT": "300ms",
		"IDLE_MAX_TIMEOUT":     "1m",
		"IDLE_MAX_BODY":        "64",
		"IDLE_MAX_BACKENDS":    "2",
	})
	nc := connect(t, s.ClientURL())
	waitServing(t, p, nc)
	events := subscribe(t, nc, "acme.idle.quiesce.>")

	sent := time.Now()
	var r bus.HeartbeatReply
	decodeOK(t, request(t, nc, "acme.idle.activity.ext.one", ""), &r)
	if r.Key != "ext.one" || r.IdleTimeoutMS != timeout.Milliseconds() {
		t.Errorf("reply: got %+v; want key ext.one, idle_timeout_ms %d (IDLE_DEFAULT_TIMEOUT)", r, timeout.Milliseconds())
	}
	ev := nextEventPrefix(t, events, "acme.idle", timeout+bound)
	checkTiming(t, sent, ev.arrived, timeout)
	if ev.Key != "ext.one" || ev.ConfiguredTimeoutMS != timeout.Milliseconds() {
		t.Errorf("event: got key %q configured_timeout_ms %d; want ext.one %d", ev.Key, ev.ConfiguredTimeoutMS, timeout.Milliseconds())
	}

	refusals := []struct {
		name, subject, body, want string
	}{
		{"IDLE_MAX_TIMEOUT", "acme.idle.activity.ext.one", `{"idle_timeout_ms":60001}`, "exceeds"},
		{"IDLE_MAX_BODY", "acme.idle.activity.ext.one", padBody(`{"idle_timeout_ms":1000,"pad":"`, `"}`, 65), "exceeds"},
		{"IDLE_MAX_BACKENDS", "acme.idle.activity.ext.three", "", "limit"},
	}
	decodeOK(t, request(t, nc, "acme.idle.activity.ext.two", padBody(`{"idle_timeout_ms":60000,"pad":"`, `"}`, 64)), &r)
	for _, rf := range refusals {
		if e := refusal(t, request(t, nc, rf.subject, rf.body)); !strings.Contains(e, rf.want) {
			t.Errorf("%s: got error %q; want it to mention %q", rf.name, e, rf.want)
		}
	}
	var l bus.ListReply
	decodeOK(t, request(t, nc, "acme.idle.admin.list", ""), &l)
	if got := listKeys(l); strings.Join(got, ",") != "ext.one,ext.two" {
		t.Errorf("acme.idle.admin.list: got %v; want ext.one ext.two", got)
	}
	if _, err := nc.Request(prefix+".activity.ext.one", nil, bound); !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("request under the default prefix: got %v; want nats.ErrNoResponders", err)
	}
	if p.exited() {
		t.Fatalf("idle-worker exited: %v", p.waitErr)
	}
}

// An IDLE_NATS_URL where nothing listens makes idle-worker exit 1, within
// IDLE_CONNECT_TIMEOUT and some, with an error about connecting that does
// not leak the URL's password.
func TestBinaryUnreachableNATS(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, url string }{
		{"plain", fmt.Sprintf("nats://127.0.0.1:%d", freePort(t))},
		{"with credentials", fmt.Sprintf("nats://worker:s3cret@127.0.0.1:%d", freePort(t))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := startBinary(t, map[string]string{"IDLE_NATS_URL": tt.url, "IDLE_CONNECT_TIMEOUT": "1s"})
			if code := p.exitCode(t, 10*time.Second); code != 1 {
				t.Errorf("exit status: got %d; want 1", code)
			}
			t.Logf("exited after %v", time.Since(p.started))
			stderr := p.stderr.String()
			if !strings.Contains(strings.ToLower(stderr), "connect") {
				t.Errorf("stderr %q: want an error about connecting", stderr)
			}
			if strings.Contains(stderr, "s3cret") {
				t.Errorf("stderr %q: leaks the password of IDLE_NATS_URL", stderr)
			}
		})
	}
}
