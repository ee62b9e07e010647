package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/partition"
)

// idle-worker mappings prints the block of subject mappings for
// IDLE_SUBJECT_PREFIX and IDLE_PARTITIONS (64 by default), exactly as
// package partition writes it, and exits 0 without connecting anywhere; a
// bad partition count or an unmappable prefix exits 2 and names the
// variable.
func TestBinaryMappings(t *testing.T) {
	t.Parallel()
	// A wrongly started worker would fail on this URL, with status 1.
	dead := fmt.Sprintf("nats://127.0.0.1:%d", freePort(t))
	tests := []struct {
		name    string
		env     map[string]string
		prefix  string // of the block printed
		n       int
		wantVar string // named on stderr with status 2; "" for success
	}{
		{name: "defaults", prefix: "idle", n: 64},
		{name: "custom prefix and count", env: map[string]string{"IDLE_SUBJECT_PREFIX": "acme.idle", "IDLE_PARTITIONS": "8"}, prefix: "acme.idle", n: 8},
		{name: "most partitions", env: map[string]string{"IDLE_PARTITIONS": "1024"}, prefix: "idle", n: 1024},
		{name: "no partition", env: map[string]string{"IDLE_PARTITIONS": "0"}, wantVar: "IDLE_PARTITIONS"},
		{name: "too many partitions", env: map[string]string{"IDLE_PARTITIONS": "1025"}, wantVar: "IDLE_PARTITIONS"},
		{name: "partitions not a number", env: map[string]string{"IDLE_PARTITIONS": "x"}, wantVar: "IDLE_PARTITIONS"},
		{name: "prefix read as a wildcard", env: map[string]string{"IDLE_SUBJECT_PREFIX": "acme.$1"}, wantVar: "IDLE_SUBJECT_PREFIX"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{"IDLE_NATS_URL": dead}
			for k, v := range tt.env {
				env[k] = v
			}
			p := startBinaryArgs(t, env, "mappings")
			code := p.exitCode(t, 10*time.Second)
			stdout, stderr := p.stdout.String(), p.stderr.String()
			if tt.wantVar != "" {
				if code != 2 || !strings.Contains(stderr, tt.wantVar) || !strings.Contains(stderr, "bad configuration") || stdout != "" {
					t.Errorf("exit status %d, stdout %q, stderr %q; want 2, nothing, a bad configuration naming %s", code, stdout, stderr, tt.wantVar)
				}
				return
			}
			b, err := partition.Mappings(bus.MustSubjects(tt.prefix), tt.n)
			if err != nil {
				t.Fatal(err)
			}
			if code != 0 || stderr != "" {
				t.Errorf("exit status %d, stderr %q; want 0 and nothing", code, stderr)
			}
			if want := b.Config(); stdout != want {
				t.Errorf("stdout:\n%s\nwant:\n%s", stdout, want)
			}
		})
	}
}
