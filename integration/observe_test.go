package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/internal/logtest"
)

// Rejected input is logged at most once per second per reason, and the next
// line says how many were suppressed. The worker's clock is frozen so the
// test controls the second.
func TestRejectedInputLogIsRateLimited(t *testing.T) {
	t.Parallel()
	base := time.Now()
	var offset atomic.Int64
	logs := new(logtest.Buffer)
	s := startServer(t)
	startWorker(t, s.ClientURL(), bus.WorkerConfig{
		Policy: coordinator.Policy{DefaultIdleTimeout: longTimeout},
		Now:    func() time.Time { return base.Add(time.Duration(offset.Load())) },
		Logger: slog.New(slog.NewJSONHandler(logs, nil)),
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("worker log:\n%s", logs)
		}
	})
	nc := connect(t, s.ClientURL())

	const n = 50
	for range n {
		refusal(t, request(t, nc, prefix+".activity.rl.one", `[]`))
	}
	refusal(t, request(t, nc, prefix+".activity.caf\u00e9", ""))
	lines := rejectedLines(t, logs.String())
	if len(lines) != 2 {
		t.Fatalf("got %d rejected-input lines for %d bad payloads and 1 bad key within a second; want 2", len(lines), n)
	}
	first := lines[0]
	if first["reason"] != "bad_payload" || first["subject"] != prefix+".activity.rl.one" || first["component"] != "worker" ||
		first["suppressed"] != 0.0 || !strings.Contains(first["error"].(string), "JSON object") {
		t.Errorf("first line: got %v; want reason bad_payload, subject, component worker, error, suppressed 0", first)
	}
	if lines[1]["reason"] != "bad_key" {
		t.Errorf("second line: got reason %v; want bad_key (reasons are limited separately)", lines[1]["reason"])
	}

	offset.Store(int64(time.Second))
	refusal(t, request(t, nc, prefix+".activity.rl.one", `[]`))
	lines = rejectedLines(t, logs.String())
	if len(lines) != 3 {
		t.Fatalf("got %d rejected-input lines a second later; want 3", len(lines))
	}
	if last := lines[2]; last["reason"] != "bad_payload" || last["suppressed"] != float64(n-1) {
		t.Errorf("line a second later: got %v; want reason bad_payload, suppressed %d", last, n-1)
	}
}

// rejectedLines returns the "rejected input" lines of a JSON log.
func rejectedLines(t *testing.T, log string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		if m["msg"] == "rejected input" {
			out = append(out, m)
		}
	}
	return out
}

// When the worker's queue is full NATS drops messages; the worker counts
// them in Stats().Dropped and its micro stats, and keeps serving.
func TestFullQueueCountsDropped(t *testing.T) {
	t.Parallel()
	const extra = 20
	var blockNext atomic.Bool
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	var releaseOnce sync.Once
	s := startServer(t)
	w := startWorker(t, s.ClientURL(), bus.WorkerConfig{
		Policy:      coordinator.Policy{DefaultIdleTimeout: longTimeout},
		QueueLength: 1,
		// The first reading after blockNext is set holds the worker's loop
		// until release: it reads the clock while it applies a heartbeat.
		Now: func() time.Time {
			if blockNext.CompareAndSwap(true, false) {
				entered <- struct{}{}
				<-release
			}
			return time.Now()
		},
	})
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	nc := connect(t, s.ClientURL())

	blockNext.Store(true)
	if err := nc.Publish(prefix+".activity.dq.0", nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(bound):
		t.Fatalf("the worker did not apply the first heartbeat within %v", bound)
	}
	// The loop holds dq.0; the queue has room for one more.
	for i := 1; i <= extra; i++ {
		if err := nc.Publish(fmt.Sprintf("%s.activity.dq.%d", prefix, i), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.FlushTimeout(bound); err != nil {
		t.Fatal(err)
	}
	waitFor(t, bound, func() bool { return w.Stats().Dropped >= extra-1 })
	releaseOnce.Do(func() { close(release) })

	waitFor(t, bound, func() bool { return w.Stats().Heartbeats == 2 })
	if r := adminList(t, nc, ""); strings.Join(listKeys(r), ",") != "dq.0,dq.1" {
		t.Errorf("backends: got %v; want dq.0 and dq.1 (the rest were dropped)", listKeys(r))
	}
	if d := w.Stats().Dropped; d != extra-1 {
		t.Errorf("Stats().Dropped: got %d; want %d", d, extra-1)
	}
	statsSubj, _ := micro.ControlSubject(micro.StatsVerb, bus.ServiceName, "")
	var ms micro.Stats
	if err := json.Unmarshal(request(t, nc, statsSubj, "").Data, &ms); err != nil || len(ms.Endpoints) == 0 {
		t.Fatalf("micro stats: %v", err)
	}
	var st bus.Stats
	if err := json.Unmarshal(ms.Endpoints[0].Data, &st); err != nil {
		t.Fatal(err)
	}
	if st.Dropped != extra-1 {
		t.Errorf("micro stats dropped: got %d; want %d", st.Dropped, extra-1)
	}
	heartbeat(t, nc, "dq.after", "")

	// Shutting down folds the subscriptions' drops into the worker's own
	// count: a reader polling meanwhile never sees the total go down.
	stopped := make(chan error, 1)
	go func() { stopped <- w.stop(bound) }()
	last := w.Stats().Dropped
	for polling := true; polling; {
		select {
		case err := <-stopped:
			if err != nil {
				t.Fatal(err)
			}
			polling = false
		default:
		}
		d := w.Stats().Dropped
		if d < last {
			t.Fatalf("Stats().Dropped went from %d down to %d during shutdown", last, d)
		}
		last = d
	}
	if d := w.Stats().Dropped; d != extra-1 {
		t.Errorf("Stats().Dropped after shutdown: got %d; want %d", d, extra-1)
	}
}
