package integration

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/internal/natstest"
)

// Two idle-worker processes with JetStream share a prefix: once they
// settle, P.admin.members lists both and every partition once (as the
// assignment has it), and a list
// through either has every backend.
func TestBinaryPeers(t *testing.T) {
	t.Parallel()
	s := startServer(t, natstest.JetStream())
	nc := connect(t, s.ClientURL())
	// One after the other: the first claims every partition, then hands
	// the second its share. (Started at the same moment, both may claim
	// every partition at once; the one whose claim lost learns it only
	// at its next write, which a heartbeat's reply then reports as an
	// error.)
	for i, name := range []string{"peer-a", "peer-b"} {
		p := startBinary(t, map[string]string{
			"IDLE_NATS_URL":        s.ClientURL(),
			"IDLE_PERSIST":         "on",
			"IDLE_PARTITIONS":      "8",
			"IDLE_WORKER_NAME":     name,
			"IDLE_OWNER_TIMEOUT":   "500ms",
			"IDLE_DEFAULT_TIMEOUT": "1h",
			"IDLE_HTTP_ADDR":       "",
		})
		if i == 0 {
			waitServing(t, p, nc)
		}
	}
	var last string
	waitFor(t, 30*time.Second, func() bool {
		m, err := nc.Request(prefix+".admin.members", nil, 250*time.Millisecond)
		if err != nil {
			return false
		}
		last = string(m.Data)
		var r bus.MembersReply
		if err := json.Unmarshal(m.Data, &r); err != nil {
			return false
		}
		return assigned(r, []string{"peer-a", "peer-b"}, 8)
	})
	t.Logf("members: %s", last)

	var keys []string
	for i := range 20 {
		k := fmt.Sprintf("bin%d.svc.%d", i%3, i)
		heartbeat(t, nc, k, "")
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for range 6 {
		r := adminList(t, nc, "") // complete: no partial members
		if got := listKeys(r); !slices.Equal(got, keys) || r.Total != len(keys) {
			t.Fatalf("list: got %v total %d; want %v", got, r.Total, keys)
		}
	}
}

// Two idle-worker processes without JetStream on one prefix: the second
// says at start that nothing coordinates them.
func TestBinaryUncoordinatedWarning(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	env := map[string]string{"IDLE_NATS_URL": s.ClientURL(), "IDLE_PERSIST": "off", "IDLE_HTTP_ADDR": ""}
	nc := connect(t, s.ClientURL())
	first := startBinary(t, env)
	waitServing(t, first, nc)
	second := startBinary(t, env)
	waitFor(t, 30*time.Second, func() bool {
		return strings.Contains(second.stdout.String()+second.stderr.String(), "there is no coordination")
	})
	if out := first.stdout.String() + first.stderr.String(); strings.Contains(out, "there is no coordination") {
		t.Errorf("the first worker warned too; it was alone when it started:\n%s", out)
	}
}

// TestBinaryNameTaken: a second live worker with a name in use refuses to
// start: exit 1, the log naming IDLE_WORKER_NAME; the first one keeps
// every partition.
func TestBinaryNameTaken(t *testing.T) {
	t.Parallel()
	s := startServer(t, natstest.JetStream())
	nc := connect(t, s.ClientURL())
	env := map[string]string{
		"IDLE_NATS_URL":      s.ClientURL(),
		"IDLE_PERSIST":       "on",
		"IDLE_PARTITIONS":    "8",
		"IDLE_WORKER_NAME":   "twin",
		"IDLE_OWNER_TIMEOUT": "500ms",
		"IDLE_HTTP_ADDR":     "",
	}
	first := startBinary(t, env)
	waitServing(t, first, nc)
	second := startBinary(t, env)
	if code := second.exitCode(t, 20*time.Second); code != 1 {
		t.Fatalf("the second worker named twin exited %d; want 1", code)
	}
	if log := second.stderr.String() + second.stdout.String(); !strings.Contains(log, "IDLE_WORKER_NAME") {
		t.Errorf("its log does not name IDLE_WORKER_NAME:\n%s", log)
	}
	st, err := serviceStats(nc)
	if err != nil || st.PartitionsOwned != 8 || first.exited() {
		t.Errorf("the first worker: %+v (%v), exited %v; want it serving with all 8 partitions", st, err, first.exited())
	}
}
