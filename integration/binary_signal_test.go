package integration

import (
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// SIGTERM or SIGINT stops idle-worker cleanly: it exits 0 within 5 s and
// logs that it stopped.
func TestBinaryGracefulSignal(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		sig     syscall.Signal
		format  string
		stopped string // the log line that says it stopped
	}{
		{"SIGTERM text", syscall.SIGTERM, "text", `msg="idle-worker stopped"`},
		{"SIGTERM json", syscall.SIGTERM, "json", `"msg":"idle-worker stopped"`},
		{"SIGINT text", syscall.SIGINT, "text", `msg="idle-worker stopped"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := startServer(t)
			p := startBinary(t, map[string]string{"IDLE_NATS_URL": s.ClientURL(), "IDLE_LOG_FORMAT": tt.format})
			nc := connect(t, s.ClientURL())
			waitServing(t, p, nc)
			heartbeat(t, nc, "bin.signal", "")

			p.signal(t, tt.sig)
			sent := time.Now()
			if code := p.exitCode(t, 5*time.Second); code != 0 {
				t.Errorf("exit status after %v: got %d; want 0", tt.sig, code)
			}
			t.Logf("exited %v after %v", time.Since(sent), tt.sig)
			if stderr := p.stderr.String(); !strings.Contains(stderr, tt.stopped) {
				t.Errorf("log: want a line with %s; got:\n%s", tt.stopped, stderr)
			}
			if _, err := nc.Request(prefix+".admin.list", nil, bound); !errors.Is(err, nats.ErrNoResponders) {
				t.Errorf("admin list after exit: got %v; want nats.ErrNoResponders", err)
			}
		})
	}
}
