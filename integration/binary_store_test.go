package integration

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// binaryVersion returns the version the built binary reports.
func binaryVersion(t *testing.T) string {
	t.Helper()
	p := startBinaryArgs(t, nil, "-version")
	if code := p.exitCode(t, 10*time.Second); code != 0 {
		t.Fatalf("idle-worker -version: exit status %d", code)
	}
	v, ok := strings.CutPrefix(strings.TrimSpace(p.stdout.String()), "idle-worker ")
	if !ok || v == "" {
		t.Fatalf("idle-worker -version: got %q; want \"idle-worker <version>\"", p.stdout)
	}
	return v
}

// logLine returns the first line of log that contains msg, or "".
func logLine(log, msg string) string {
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, msg) {
			return line
		}
	}
	return ""
}

// The first log line names the version. With the embedded server's
// temporary store, the worker warns at start that the store, and every
// tracked backend with it, is thrown away at exit, and says at stop how
// many backends it discards; with a store directory it says neither.
func TestBinaryTempStoreWarnings(t *testing.T) {
	t.Parallel()
	version := binaryVersion(t)
	const (
		startMsg = "the JetStream store is a temporary directory"
		stopMsg  = "discarding the tracked backends with the temporary JetStream store"
	)
	tests := []struct {
		name     string
		storeDir bool
		persist  string
		warns    bool
	}{
		{name: "temporary store", warns: true},
		{name: "store directory", storeDir: true},
		{name: "temporary store, persistence off", persist: "off"}, // it says "persistence off" instead
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			port := freePort(t)
			env := map[string]string{
				"IDLE_NATS_URL":        "",
				"IDLE_EMBEDDED_LISTEN": fmt.Sprintf("127.0.0.1:%d", port),
				"IDLE_HTTP_ADDR":       "",
			}
			if tt.storeDir {
				env["IDLE_EMBEDDED_STORE_DIR"] = t.TempDir()
			}
			if tt.persist != "" {
				env["IDLE_PERSIST"] = tt.persist
			}
			p := startBinary(t, env)
			nc := connectTo(t, p, fmt.Sprintf("nats://127.0.0.1:%d", port))
			waitServing(t, p, nc)
			heartbeat(t, nc, "bin.tempstore", "") // the default timeout, 30s, keeps it tracked
			p.signal(t, syscall.SIGTERM)
			if code := p.exitCode(t, 10*time.Second); code != 0 {
				t.Errorf("exit status after SIGTERM: got %d; want 0", code)
			}
			stderr := p.stderr.String()

			first, _, _ := strings.Cut(stderr, "\n")
			if want := ` level=INFO msg="idle-worker starting" version=` + version; !strings.HasSuffix(first, want) {
				t.Errorf("first log line: got %q; want it to end with %q", first, want)
			}
			start, stop := logLine(stderr, startMsg), logLine(stderr, stopMsg)
			if !tt.warns {
				if start != "" || stop != "" {
					t.Errorf("log: got %q and %q; want no warning about a temporary store", start, stop)
				}
				return
			}
			for _, w := range []string{"level=WARN", "IDLE_EMBEDDED_STORE_DIR", "store_dir=" + p.tmpDir} {
				if !strings.Contains(start, w) {
					t.Errorf("start warning: got %q; want it to contain %q", start, w)
				}
			}
			for _, w := range []string{"level=WARN", "IDLE_EMBEDDED_STORE_DIR", "backends=1"} {
				if !strings.Contains(stop, w) {
					t.Errorf("stop warning: got %q; want it to contain %q", stop, w)
				}
			}
		})
	}
}
