package embedded_test

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/embedded"
	"github.com/idle-worker/idle-worker/internal/logtest"
)

// start starts an embedded server and closes it when the test ends.
func start(t *testing.T, cfg embedded.Config) *embedded.Server {
	t.Helper()
	s, err := embedded.Start(cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// checkJetStream connects to s and checks that it serves JetStream.
func checkJetStream(t *testing.T, s *embedded.Server) {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("connect to %s: %v", s.ClientURL(), err)
	}
	defer nc.Close()
	m, err := nc.Request("$JS.API.INFO", nil, 5*time.Second)
	if err != nil {
		t.Fatalf("$JS.API.INFO: %v", err)
	}
	var info struct {
		Error json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &info); err != nil || info.Error != nil {
		t.Errorf("$JS.API.INFO: got %s; want account info (JetStream on)", m.Data)
	}
}

// The default: a random port, a temporary store that Close removes.
func TestStartTempStore(t *testing.T) {
	var logs logtest.Buffer
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp) // where the temporary store goes
	s := start(t, embedded.Config{Listen: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if !strings.HasPrefix(s.ClientURL(), "nats://127.0.0.1:") || strings.HasSuffix(s.ClientURL(), ":0") {
		t.Errorf("ClientURL: got %q; want nats://127.0.0.1 and a port picked for port 0", s.ClientURL())
	}
	if !s.TempStore() || filepath.Dir(s.StoreDir()) != tmp {
		t.Errorf("TempStore, StoreDir: got %v, %q; want true, a directory in TMPDIR %s", s.TempStore(), s.StoreDir(), tmp)
	}
	checkJetStream(t, s)
	for _, want := range []string{`msg="embedded nats-server listening"`, "component=nats-server", "url=" + s.ClientURL(), "store_dir=" + s.StoreDir()} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log %q: want it to contain %q", logs.String(), want)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Stat(s.StoreDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary store after Close: got %v; want it removed", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: got %v; want nil", err)
	}
	if _, err := nats.Connect(s.ClientURL(), nats.Timeout(time.Second)); err == nil {
		t.Errorf("connect after Close: got a connection; want the server gone")
	}
}

// A store directory that is given is used and kept.
func TestStartGivenStore(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "store")
	s := start(t, embedded.Config{Listen: "localhost:0", StoreDir: dir})
	if s.TempStore() || s.StoreDir() != dir {
		t.Errorf("TempStore, StoreDir: got %v, %q; want false, %q", s.TempStore(), s.StoreDir(), dir)
	}
	checkJetStream(t, s)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "jetstream")); err != nil {
		t.Errorf("given store after Close: got %v; want it kept, with its jetstream directory", err)
	}
}

// A port in use fails Start at once with the server's reason, and leaves
// no temporary store behind.
func TestStartPortInUse(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	began := time.Now()
	s, err := embedded.Start(embedded.Config{Listen: l.Addr().String()})
	took := time.Since(began)
	if err == nil {
		_ = s.Close()
		t.Fatalf("Start on %s, in use: got a server; want an error", l.Addr())
	}
	if !strings.Contains(err.Error(), "address already in use") || !strings.Contains(err.Error(), l.Addr().String()) {
		t.Errorf("Start: got %q; want it to name %s and say the address is in use", err, l.Addr())
	}
	if took > 5*time.Second {
		t.Errorf("Start failed after %v; want it fast, not after the 10s readiness bound", took)
	}
	left, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range left {
		t.Errorf("TMPDIR after a failed Start: got %s left behind; want nothing", e.Name())
	}
}

// A bad or exposed listen address is refused before anything starts.
func TestStartRefusesListen(t *testing.T) {
	t.Parallel()
	tests := []struct {
		listen string
		want   error
	}{
		{"127.0.0.1", embedded.ErrListen},
		{"127.0.0.1:70000", embedded.ErrListen},
		{"127.0.0.1:-1", embedded.ErrListen},
		{"127.0.0.1:nats", embedded.ErrListen},
		{"0.0.0.0:0", embedded.ErrNotLoopback},
		{":0", embedded.ErrNotLoopback},
		{"[::]:0", embedded.ErrNotLoopback},
		{"192.168.1.10:4222", embedded.ErrNotLoopback},
		{"nats.example.com:4222", embedded.ErrNotLoopback},
	}
	for _, tt := range tests {
		s, err := embedded.Start(embedded.Config{Listen: tt.listen})
		if err == nil {
			_ = s.Close()
		}
		if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.listen) {
			t.Errorf("Start(Listen %q): got %v; want an error naming it and wrapping %v", tt.listen, err, tt.want)
		}
		if cerr := embedded.CheckListen(tt.listen, false); !errors.Is(cerr, tt.want) {
			t.Errorf("CheckListen(%q, false): got %v; want an error wrapping %v", tt.listen, cerr, tt.want)
		}
		if cerr := embedded.CheckListen(tt.listen, true); errors.Is(tt.want, embedded.ErrNotLoopback) && cerr != nil {
			t.Errorf("CheckListen(%q, true): got %v; want nil: remote allowed", tt.listen, cerr)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	t.Parallel()
	tests := []struct {
		host string
		want bool
	}{
		{"127.0.0.1", true},
		{"127.0.0.2", true},
		{"::1", true},
		{"localhost", true},
		{"LocalHost", true},
		{"", false},
		{"0.0.0.0", false},
		{"::", false},
		{"192.168.1.10", false},
		{"example.com", false},
	}
	for _, tt := range tests {
		if got := embedded.IsLoopback(tt.host); got != tt.want {
			t.Errorf("IsLoopback(%q): got %v; want %v", tt.host, got, tt.want)
		}
	}
}
