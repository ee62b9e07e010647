package metrics_test

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/metrics"
)

// fakeSource returns fixed Stats and counts how often it was read.
type fakeSource struct {
	s     bus.Stats
	reads int
}

func (f *fakeSource) Stats() bus.Stats { f.reads++; return f.s }

func sampleStats() bus.Stats {
	return bus.Stats{
		Heartbeats:    11,
		StateReports:  7,
		Quiesces:      map[string]uint64{"idle_timeout": 5, "maintenance": 2, "broker_shutdown": 0},
		PublishErrors: 1,
		StoreWrites:   4, StoreWriteFailures: 1, StoreFenced: 3,
		Rejected:       map[string]uint64{"bad_key": 3, "bad_payload": 4, "timeout_too_large": 0, "unknown_backend": 1, "backend_limit": 0, "bad_admin_request": 2},
		Dropped:        9,
		Running:        20,
		Draining:       3,
		Quiesced:       2,
		Unacknowledged: 1,
		Redeliveries:   6,
		Restored:       8,
		Outages:        2,
		OutageSeconds:  1.5,
	}
}

// gather registers cs in a pedantic registry, which also checks that every
// collected metric was described, and returns the families by name.
func gather(t *testing.T, cs ...prometheus.Collector) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			t.Fatalf("Register: %v", err)
		}
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	out := make(map[string]*dto.MetricFamily)
	for _, f := range fams {
		out[f.GetName()] = f
	}
	return out
}

// value returns the value of the metric of family name with the given label
// (or none), and false if there is none.
func value(fams map[string]*dto.MetricFamily, name, label, lv string) (float64, dto.MetricType, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, 0, false
	}
	for _, m := range f.GetMetric() {
		if label != "" && !slices.ContainsFunc(m.GetLabel(), func(p *dto.LabelPair) bool { return p.GetName() == label && p.GetValue() == lv }) {
			continue
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue(), f.GetType(), true
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue(), f.GetType(), true
		}
	}
	return 0, f.GetType(), false
}

func TestCollectorValues(t *testing.T) {
	t.Parallel()
	src := &fakeSource{s: sampleStats()}
	c := metrics.NewCollector(src, nil)
	if src.reads != 0 {
		t.Fatalf("NewCollector read Stats %d times; want 0 (only at scrape time)", src.reads)
	}
	fams := gather(t, c)
	if src.reads != 1 {
		t.Errorf("one scrape read Stats %d times; want 1", src.reads)
	}
	G, C := dto.MetricType_GAUGE, dto.MetricType_COUNTER
	tests := []struct {
		name, label, lv string
		typ             dto.MetricType
		want            float64
	}{
		{"idle_worker_backends", "state", "running", G, 20},
		{"idle_worker_backends", "state", "draining", G, 3},
		{"idle_worker_backends", "state", "quiesced", G, 2},
		{"idle_worker_unacknowledged_drains", "", "", G, 1},
		{"idle_worker_restored_backends", "", "", G, 8},
		{"idle_worker_heartbeats_total", "", "", C, 11},
		{"idle_worker_state_reports_total", "", "", C, 7},
		{"idle_worker_rejected_total", "reason", "bad_key", C, 3},
		{"idle_worker_rejected_total", "reason", "bad_payload", C, 4},
		{"idle_worker_rejected_total", "reason", "backend_limit", C, 0},
		{"idle_worker_rejected_total", "reason", "bad_admin_request", C, 2},
		{"idle_worker_quiesces_total", "reason", "idle_timeout", C, 5},
		{"idle_worker_quiesces_total", "reason", "maintenance", C, 2},
		{"idle_worker_quiesces_total", "reason", "broker_shutdown", C, 0},
		{"idle_worker_redeliveries_total", "", "", C, 6},
		{"idle_worker_dropped_messages_total", "", "", C, 9},
		{"idle_worker_publish_errors_total", "", "", C, 1},
		{"idle_worker_store_writes_total", "", "", C, 4},
		{"idle_worker_store_write_failures_total", "", "", C, 1},
		{"idle_worker_store_fenced_total", "", "", C, 3},
		{"idle_worker_nats_outages_total", "", "", C, 2},
		{"idle_worker_nats_disconnected_seconds_total", "", "", C, 1.5},
	}
	for _, tt := range tests {
		got, typ, ok := value(fams, tt.name, tt.label, tt.lv)
		if !ok {
			t.Errorf("%s{%s=%q}: got no such metric; want %v", tt.name, tt.label, tt.lv, tt.want)
			continue
		}
		if got != tt.want || typ != tt.typ {
			t.Errorf("%s{%s=%q}: got %v %v; want %v %v", tt.name, tt.label, tt.lv, got, typ, tt.want, tt.typ)
		}
	}
	if n := len(fams["idle_worker_rejected_total"].GetMetric()); n != 6 {
		t.Errorf("idle_worker_rejected_total: got %d series; want 6, one per reason", n)
	}
	// Without a connection the connection's metrics are left out.
	if _, ok := fams["idle_worker_nats_connected"]; ok {
		t.Errorf("idle_worker_nats_connected: got a value without a connection; want none")
	}
}

// The names follow Prometheus's conventions, as promlint checks them.
func TestCollectorLint(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]prometheus.Collector{
		"Collector": metrics.NewCollector(&fakeSource{s: sampleStats()}, nil),
		"Lateness":  metrics.NewLateness(),
	} {
		problems, err := testutil.CollectAndLint(c)
		if err != nil {
			t.Fatalf("%s: CollectAndLint: %v", name, err)
		}
		for _, p := range problems {
			t.Errorf("%s: lint: %s: %s", name, p.Metric, p.Text)
		}
	}
}

func TestLateness(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		due       coordinator.Due
		lateness  time.Duration
		wantCount uint64
		wantSum   float64
	}{
		{"first idle quiesce", coordinator.Due{Reason: coordinator.IdleTimeout, Attempt: 1}, 3 * time.Millisecond, 1, 0.003},
		{"redelivery", coordinator.Due{Reason: coordinator.IdleTimeout, Attempt: 2}, time.Second, 0, 0},
		{"maintenance", coordinator.Due{Reason: coordinator.Maintenance, Attempt: 1}, 0, 0, 0},
		{"broker shutdown", coordinator.Due{Reason: coordinator.BrokerShutdown, Attempt: 1}, 0, 0, 0},
		{"late beyond the buckets", coordinator.Due{Reason: coordinator.IdleTimeout, Attempt: 1}, 2 * time.Second, 1, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := metrics.NewLateness()
			var _ bus.Observer = l
			l.Quiesced(tt.due, tt.lateness)
			h := gather(t, l)["idle_worker_quiesce_lateness_seconds"].GetMetric()[0].GetHistogram()
			if h.GetSampleCount() != tt.wantCount || h.GetSampleSum() != tt.wantSum {
				t.Errorf("histogram: got count %d sum %v; want %d %v", h.GetSampleCount(), h.GetSampleSum(), tt.wantCount, tt.wantSum)
			}
			var bounds []float64
			for _, b := range h.GetBucket() {
				bounds = append(bounds, b.GetUpperBound())
			}
			if !slices.Equal(bounds, metrics.LatenessBuckets) || bounds[0] != 0.0005 || bounds[len(bounds)-1] != 1 {
				t.Errorf("buckets: got %v; want %v, 0.5 ms to 1 s", bounds, metrics.LatenessBuckets)
			}
		})
	}
}

// NewRegistry is a registry of its own with the runtime collectors, and the
// global default registry is left alone.
func TestNewRegistry(t *testing.T) {
	t.Parallel()
	before, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	reg, err := metrics.NewRegistry(metrics.NewCollector(&fakeSource{s: sampleStats()}, nil), metrics.NewLateness())
	if err != nil {
		t.Fatalf("NewRegistry: %v", err)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	var names []string
	for _, f := range fams {
		names = append(names, f.GetName())
	}
	for _, want := range []string{"go_goroutines", "process_resident_memory_bytes", "go_build_info", "idle_worker_heartbeats_total", "idle_worker_quiesce_lateness_seconds"} {
		if !slices.Contains(names, want) {
			t.Errorf("registry: got no %s; want it among %v", want, names)
		}
	}
	after, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range after {
		if strings.HasPrefix(f.GetName(), "idle_worker_") {
			t.Errorf("default registry: got %s; want nothing registered globally", f.GetName())
		}
	}
	if len(after) != len(before) {
		t.Errorf("default registry: got %d families after NewRegistry; want %d as before", len(after), len(before))
	}
	if _, err := metrics.NewRegistry(metrics.NewLateness(), metrics.NewLateness()); err == nil {
		t.Errorf("NewRegistry with a duplicate collector: got nil; want an error")
	}
}

func TestHandler(t *testing.T) {
	t.Parallel()
	reg, err := metrics.NewRegistry(metrics.NewCollector(&fakeSource{s: sampleStats()}, nil), metrics.NewLateness())
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu       sync.Mutex
		readyErr error
	)
	ready := func() error {
		mu.Lock()
		defer mu.Unlock()
		return readyErr
	}
	srv := httptest.NewServer(metrics.Handler(reg, ready, slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)
	tests := []struct {
		name, method, path string
		notReady           error
		wantCode           int
		wantBody           *regexp.Regexp
	}{
		{"healthz", "GET", "/healthz", nil, 200, regexp.MustCompile(`^ok\n$`)},
		{"healthz while not ready", "GET", "/healthz", metrics.ErrNotServing, 200, regexp.MustCompile(`^ok\n$`)},
		{"readyz", "GET", "/readyz", nil, 200, regexp.MustCompile(`^ready\n$`)},
		{"readyz not ready", "GET", "/readyz", metrics.ErrNotServing, 503, regexp.MustCompile(`^not ready: .*not serving yet`)},
		{"readyz disconnected", "GET", "/readyz", errors.New("NATS connection not connected: RECONNECTING"), 503, regexp.MustCompile(`RECONNECTING`)},
		{"metrics", "GET", "/metrics", nil, 200, regexp.MustCompile(`(?m)^idle_worker_heartbeats_total 11$`)},
		{"metrics has the histogram", "GET", "/metrics", nil, 200, regexp.MustCompile(`(?m)^idle_worker_quiesce_lateness_seconds_bucket\{le="0.0005"\} 0$`)},
		{"HEAD healthz", "HEAD", "/healthz", nil, 200, regexp.MustCompile(`^$`)},
		{"POST readyz", "POST", "/readyz", nil, 405, nil},
		{"unknown path", "GET", "/", nil, 404, nil},
	}
	for _, tt := range tests {
		mu.Lock()
		readyErr = tt.notReady
		mu.Unlock()
		req, err := http.NewRequest(tt.method, srv.URL+tt.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if resp.StatusCode != tt.wantCode {
			t.Errorf("%s: %s %s: got status %d; want %d", tt.name, tt.method, tt.path, resp.StatusCode, tt.wantCode)
		}
		if tt.wantBody != nil && !tt.wantBody.Match(body) {
			t.Errorf("%s: %s %s: got body %q; want it to match %s", tt.name, tt.method, tt.path, body, tt.wantBody)
		}
	}
}

// Readiness waits for the worker to serve before it looks at the connection.
func TestReadinessBeforeServing(t *testing.T) {
	t.Parallel()
	serving := make(chan struct{})
	ready := metrics.Readiness(nil, serving)
	if err := ready(); !errors.Is(err, metrics.ErrNotServing) {
		t.Errorf("before serving: got %v; want ErrNotServing", err)
	}
}
