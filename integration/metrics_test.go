package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/internal/logtest"
	"github.com/idle-worker/idle-worker/internal/natstest"
	"github.com/idle-worker/idle-worker/metrics"
)

// opsHTTP is the client of the HTTP tests: short timeouts, no keep-alive so
// a server that went away is seen at once.
var opsHTTP = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// opsGet returns the status and body of GET url, or an error when nothing
// answers.
func opsGet(url string) (int, string, error) {
	resp, err := opsHTTP.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// opsWaitStatus polls GET url until it answers code with a body containing
// want, and fails the test after timeout.
func opsWaitStatus(t *testing.T, url string, code int, want string, timeout time.Duration) {
	t.Helper()
	var last string
	deadline := time.Now().Add(timeout)
	for {
		got, body, err := opsGet(url)
		if err == nil && got == code && strings.Contains(body, want) {
			return
		}
		last = fmt.Sprintf("status %d body %q error %v", got, body, err)
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: got %s for %v; want status %d with %q", url, last, timeout, code, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// opsScrape fetches and parses /metrics in the Prometheus text format.
func opsScrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := opsHTTP.Get(base + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: got status %d; want 200", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("scrape: parse: %v", err)
	}
	return fams
}

// opsValue returns the value of the series of family name whose labels
// include labels (name, value pairs): a counter's or gauge's value, a
// histogram's sample count. It fails the test when there is none.
func opsValue(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("metrics: got no %s", name)
	}
series:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			if !slices.ContainsFunc(m.GetLabel(), func(p *dto.LabelPair) bool {
				return p.GetName() == labels[i] && p.GetValue() == labels[i+1]
			}) {
				continue series
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		case m.Untyped != nil:
			return m.GetUntyped().GetValue()
		}
	}
	t.Fatalf("metrics: got no %s series with labels %v", name, labels)
	return 0
}

// opsWorker is a worker with its metrics handler, run by the test so that it
// can look at the handler before Run starts.
type opsWorker struct {
	w    *bus.Worker
	http *httptest.Server
	run  func() // starts Run and waits until the worker is ready
	stop func() // cancels Run and waits for it; also done when the test ends
}

// newOpsWorker wires a worker on nc with metrics exactly as idle-worker
// does: the Lateness observer, a registry of its own, the readiness check.
func newOpsWorker(t *testing.T, nc *nats.Conn, cfg bus.WorkerConfig) *opsWorker {
	t.Helper()
	logs := new(logtest.Buffer)
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("worker log:\n%s", logs)
		}
	})
	late := metrics.NewLateness()
	cfg.Observer = late
	w, err := bus.NewWorker(nc, cfg)
	if err != nil {
		t.Fatalf("NewWorker: %v", err)
	}
	reg, err := metrics.NewRegistry(metrics.NewCollector(w, nc), late)
	if err != nil {
		t.Fatalf("NewRegistry: %v", err)
	}
	srv := httptest.NewServer(metrics.Handler(reg, metrics.Readiness(nc, w.Ready()), cfg.Logger))
	t.Cleanup(srv.Close)
	ow := &opsWorker{w: w, http: srv}
	ow.run = func() {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		var once sync.Once
		ow.stop = func() {
			once.Do(func() {
				cancel()
				select {
				case err := <-done:
					if err != nil {
						t.Errorf("Run returned %v; want nil", err)
					}
				case <-time.After(bound):
					t.Errorf("Run did not return within %v of cancellation", bound)
				}
			})
		}
		t.Cleanup(ow.stop)
		select {
		case <-w.Ready():
		case err := <-done:
			t.Fatalf("Run returned %v before the worker was ready", err)
		case <-time.After(bound):
			t.Fatalf("worker not ready within %v", bound)
		}
	}
	return ow
}

// The metrics follow what the worker does: heartbeats, rejected input, idle
// and forced quiesces (only idle ones in the lateness histogram), state
// reports, backends by state, and the connection.
func TestOpsMetricsFollowWorker(t *testing.T) {
	t.Parallel()
	const timeout = 200 * time.Millisecond
	s := startServer(t)
	ow := newOpsWorker(t, connect(t, s.ClientURL()), bus.WorkerConfig{Policy: coordinator.Policy{DefaultIdleTimeout: longTimeout}})
	ow.run()
	nc := connect(t, s.ClientURL())
	events := subscribe(t, nc, prefix+".quiesce.>")

	fams := opsScrape(t, ow.http.URL)
	if got := opsValue(t, fams, "idle_worker_heartbeats_total"); got != 0 {
		t.Errorf("heartbeats before any: got %v; want 0", got)
	}
	sent, _ := heartbeat(t, nc, "ops.idle", timeoutBody(timeout))
	heartbeat(t, nc, "ops.forced", "")
	heartbeat(t, nc, "ops.forced", "")
	refusal(t, request(t, nc, prefix+".activity.ops.bad", `[]`))
	refusal(t, request(t, nc, prefix+".state.ops.unknown", `{"state":"removed"}`))
	ev := nextEvent(t, events, timeout+bound)
	checkTiming(t, sent, ev.arrived, timeout)
	if n := adminQuiesce(t, nc, `{"match":"ops.forced","reason":"maintenance"}`); n != 1 {
		t.Fatalf("forced quiesce: got %d; want 1", n)
	}
	nextEvent(t, events, bound)
	reportState(t, nc, "ops.idle", "quiesced")

	fams = opsScrape(t, ow.http.URL)
	tests := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"idle_worker_heartbeats_total", nil, 3},
		{"idle_worker_state_reports_total", nil, 1},
		{"idle_worker_rejected_total", []string{"reason", "bad_payload"}, 1},
		{"idle_worker_rejected_total", []string{"reason", "unknown_backend"}, 1},
		{"idle_worker_rejected_total", []string{"reason", "bad_key"}, 0},
		{"idle_worker_quiesces_total", []string{"reason", "idle_timeout"}, 1},
		{"idle_worker_quiesces_total", []string{"reason", "maintenance"}, 1},
		{"idle_worker_quiesce_lateness_seconds", nil, 1}, // the idle one only
		{"idle_worker_backends", []string{"state", "quiesced"}, 1},
		{"idle_worker_backends", []string{"state", "draining"}, 1},
		{"idle_worker_backends", []string{"state", "running"}, 0},
		{"idle_worker_unacknowledged_drains", nil, 1}, // ops.forced
		{"idle_worker_dropped_messages_total", nil, 0},
		{"idle_worker_redeliveries_total", nil, 0},
		{"idle_worker_nats_connected", nil, 1},
		{"idle_worker_nats_outages_total", nil, 0},
	}
	for _, tt := range tests {
		if got := opsValue(t, fams, tt.name, tt.labels...); got != tt.want {
			t.Errorf("%s%v: got %v; want %v", tt.name, tt.labels, got, tt.want)
		}
	}
	h := fams["idle_worker_quiesce_lateness_seconds"].GetMetric()[0].GetHistogram()
	if sum := h.GetSampleSum(); sum < 0 || sum > lateSlack.Seconds()+stalls.between(sent, ev.arrived).Seconds() {
		t.Errorf("lateness sum: got %vs; want between 0 and the slack %v", sum, lateSlack)
	}
	if got := opsValue(t, fams, "idle_worker_nats_messages_total", "direction", "in"); got < 7 {
		t.Errorf("messages in: got %v; want at least the 7 the test sent", got)
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "go_build_info"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("metrics: got no %s; want the runtime collectors", name)
		}
	}
}

// /readyz says 503 until the worker has loaded its state and subscribed,
// 200 while it serves, 503 while NATS is down, and 200 again once it is
// back; /healthz says 200 throughout.
func TestOpsReadyzFollowsNATS(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	onPort := natstest.Configure(func(o *server.Options) { o.Port = port })
	s := startServer(t, onPort)
	reconnect := func(o *nats.Options) error { o.AllowReconnect = true; return nil } // connect says NoReconnect
	nc := connect(t, s.ClientURL(), reconnect, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	ow := newOpsWorker(t, nc, bus.WorkerConfig{Policy: coordinator.Policy{DefaultIdleTimeout: longTimeout}})
	readyz, healthz := ow.http.URL+"/readyz", ow.http.URL+"/healthz"

	if code, body, err := opsGet(readyz); err != nil || code != 503 || !strings.Contains(body, "not serving") {
		t.Errorf("readyz before Run: got %d %q %v; want 503 not serving", code, body, err)
	}
	opsWaitStatus(t, healthz, 200, "ok", bound)
	ow.run()
	opsWaitStatus(t, readyz, 200, "ready", bound)

	s.Shutdown()
	s.WaitForShutdown()
	opsWaitStatus(t, readyz, 503, "not connected", bound)
	opsWaitStatus(t, healthz, 200, "ok", bound)
	if got := opsValue(t, opsScrape(t, ow.http.URL), "idle_worker_nats_connected"); got != 0 {
		t.Errorf("nats_connected while the server is down: got %v; want 0", got)
	}

	startServer(t, onPort)
	opsWaitStatus(t, readyz, 200, "ready", 2*bound)
	waitFor(t, bound, func() bool { return ow.w.Stats().Outages == 1 })
	fams := opsScrape(t, ow.http.URL)
	if got := opsValue(t, fams, "idle_worker_nats_reconnects_total"); got < 1 {
		t.Errorf("reconnects: got %v; want at least 1", got)
	}
	if got := opsValue(t, fams, "idle_worker_nats_outages_total"); got != 1 {
		t.Errorf("outages: got %v; want 1", got)
	}
	if got := opsValue(t, fams, "idle_worker_nats_disconnected_seconds_total"); got <= 0 {
		t.Errorf("disconnected seconds: got %v; want more than 0", got)
	}
	// Stop the worker while the second server, whose cleanup comes first,
	// still runs.
	ow.stop()
}

// The binary serves /metrics, /healthz and /readyz on IDLE_HTTP_ADDR,
// /readyz fails while NATS is away, and the server stops with the worker.
func TestOpsBinaryHTTP(t *testing.T) {
	t.Parallel()
	const timeout = 200 * time.Millisecond
	natsPort, httpPort := freePort(t), freePort(t)
	onPort := natstest.Configure(func(o *server.Options) { o.Port = natsPort })
	s := startServer(t, onPort)
	base := fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	p := startBinary(t, map[string]string{
		"IDLE_NATS_URL":           s.ClientURL(),
		"IDLE_HTTP_ADDR":          fmt.Sprintf("127.0.0.1:%d", httpPort),
		"IDLE_NATS_PING_INTERVAL": "500ms",
	})
	opsWaitStatus(t, base+"/readyz", 200, "ready", 30*time.Second)
	opsWaitStatus(t, base+"/healthz", 200, "ok", bound)

	nc := connect(t, s.ClientURL())
	events := subscribe(t, nc, prefix+".quiesce.>")
	heartbeat(t, nc, "ops.bin", timeoutBody(timeout))
	nextEvent(t, events, timeout+bound)
	fams := opsScrape(t, base)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"idle_worker_heartbeats_total", nil, 1},
		{"idle_worker_quiesces_total", []string{"reason", "idle_timeout"}, 1},
		{"idle_worker_quiesce_lateness_seconds", nil, 1},
		{"idle_worker_backends", []string{"state", "draining"}, 1},
		{"idle_worker_nats_connected", nil, 1},
	} {
		if got := opsValue(t, fams, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v: got %v; want %v", c.name, c.labels, got, c.want)
		}
	}
	if _, ok := fams["process_resident_memory_bytes"]; !ok {
		t.Errorf("metrics: got no process_resident_memory_bytes; want the process collector")
	}

	s.Shutdown()
	s.WaitForShutdown()
	opsWaitStatus(t, base+"/readyz", 503, "not connected", bound)
	opsWaitStatus(t, base+"/healthz", 200, "ok", bound)
	startServer(t, onPort)
	opsWaitStatus(t, base+"/readyz", 200, "ready", 2*bound)

	p.signal(t, syscall.SIGTERM)
	if code := p.exitCode(t, 10*time.Second); code != 0 {
		t.Errorf("exit status after SIGTERM: got %d; want 0", code)
	}
	if _, _, err := opsGet(base + "/healthz"); !opsIsRefused(err) {
		t.Errorf("healthz after exit: got %v; want the connection refused (HTTP server gone)", err)
	}
}

// An IDLE_HTTP_ADDR in use stops the start (status 1, naming the variable);
// IDLE_HTTP_ADDR set but empty serves no HTTP.
func TestOpsBinaryHTTPAddr(t *testing.T) {
	t.Parallel()
	t.Run("in use", func(t *testing.T) {
		t.Parallel()
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		s := startServer(t)
		p := startBinary(t, map[string]string{"IDLE_NATS_URL": s.ClientURL(), "IDLE_HTTP_ADDR": l.Addr().String()})
		if code := p.exitCode(t, 10*time.Second); code != 1 {
			t.Errorf("exit status: got %d; want 1", code)
		}
		if stderr := p.stderr.String(); !strings.Contains(stderr, "IDLE_HTTP_ADDR") || !strings.Contains(stderr, "address already in use") {
			t.Errorf("stderr %q: want it to name IDLE_HTTP_ADDR and say the address is in use", stderr)
		}
	})
	t.Run("empty", func(t *testing.T) {
		t.Parallel()
		s := startServer(t)
		p := startBinary(t, map[string]string{"IDLE_NATS_URL": s.ClientURL(), "IDLE_HTTP_ADDR": ""})
		nc := connect(t, s.ClientURL())
		waitServing(t, p, nc)
		if stderr := p.stderr.String(); strings.Contains(stderr, "/metrics") {
			t.Errorf("log: got a line about /metrics; want no HTTP server:\n%s", stderr)
		}
		p.signal(t, syscall.SIGTERM)
		if code := p.exitCode(t, 10*time.Second); code != 0 {
			t.Errorf("exit status after SIGTERM: got %d; want 0", code)
		}
	})
}

// opsIsRefused reports whether err is a refused connection.
func opsIsRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }
