package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// The arguments -h and -version, in their usual spellings, print the usage
// or the version and exit 0 without starting anything, even with a bad
// configuration; any other argument exits 2 and says so.
func TestBinaryArgs(t *testing.T) {
	t.Parallel()
	// A wrongly started worker would fail on this URL, with status 1.
	dead := fmt.Sprintf("nats://127.0.0.1:%d", freePort(t))
	usage := []string{"Usage: idle-worker", "IDLE_NATS_URL (default: empty)", "IDLE_EMBEDDED_LISTEN (default: 127.0.0.1:4222)",
		"IDLE_HTTP_ADDR (default: 127.0.0.1:9464)", "IDLE_NATS_TLS_KEY (default: empty)", "longer read (delete it with nats kv del)."}
	version := []string{"idle-worker 0."}
	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		wantCode   int
		wantStdout []string
		wantStderr []string
	}{
		{name: "-h", args: []string{"-h"}, wantStdout: usage},
		{name: "-help", args: []string{"-help"}, wantStdout: usage},
		{name: "--help", args: []string{"--help"}, wantStdout: usage},
		{name: "help", args: []string{"help"}, wantStdout: usage},
		{name: "-h with a bad configuration", args: []string{"-h"}, env: map[string]string{"IDLE_LOG_LEVEL": "loud"}, wantStdout: usage},
		{name: "-version", args: []string{"-version"}, wantStdout: version},
		{name: "--version", args: []string{"--version"}, wantStdout: version},
		{name: "version", args: []string{"version"}, wantStdout: version},
		{name: "unknown word", args: []string{"foo"}, wantCode: 2,
			wantStderr: []string{`idle-worker: unknown argument "foo"; see idle-worker -h`}},
		{name: "unknown flag", args: []string{"-v"}, wantCode: 2, wantStderr: []string{`unknown argument "-v"`}},
		{name: "two arguments", args: []string{"-h", "foo"}, wantCode: 2, wantStderr: []string{`unexpected argument "foo" after "-h"`, "see idle-worker -h"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{"IDLE_NATS_URL": dead}
			for k, v := range tt.env {
				env[k] = v
			}
			p := startBinaryArgs(t, env, tt.args...)
			if code := p.exitCode(t, 10*time.Second); code != tt.wantCode {
				t.Errorf("exit status: got %d; want %d", code, tt.wantCode)
			}
			stdout, stderr := p.stdout.String(), p.stderr.String()
			for _, w := range tt.wantStdout {
				if !strings.Contains(stdout, w) {
					t.Errorf("stdout: want it to contain %q; got:\n%s", w, stdout)
				}
			}
			for _, w := range tt.wantStderr {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr: want it to contain %q; got:\n%s", w, stderr)
				}
			}
			if tt.wantStderr == nil && stderr != "" {
				t.Errorf("stderr: got %q; want nothing", stderr)
			}
			if tt.wantStdout == nil && stdout != "" {
				t.Errorf("stdout: got %q; want nothing", stdout)
			}
		})
	}
}
