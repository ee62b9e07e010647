// Package metrics exposes an idle-worker to Prometheus and to health checks.
//
// Collector reads bus.Worker.Stats (and the NATS connection's statistics)
// when Prometheus scrapes, so the worker's hot path pays nothing for it.
// Lateness is the one metric that must be recorded as it happens: it is the
// worker's bus.Observer and keeps a histogram of how late each idle quiesce
// was published after its deadline. NewRegistry puts both in a registry of
// their own, with the Go runtime and process collectors, and Handler serves
// it on /metrics next to /healthz and /readyz.
//
// Wiring, in the order the worker needs:
//
//	late := metrics.NewLateness()
//	w, _ := bus.NewWorker(nc, bus.WorkerConfig{Observer: late, ...})
//	reg, _ := metrics.NewRegistry(metrics.NewCollector(w, nc), late)
//	h := metrics.Handler(reg, metrics.Readiness(nc, w.Ready()), logger)
//
// Every metric is named idle_worker_…, in base units, counters end in
// _total; the README's Operating section says what each means and which
// alerts to set.
package metrics

import (
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
)

// Namespace prefixes every metric of this package.
const Namespace = "idle_worker"

// LatenessBuckets are the upper bounds, in seconds, of the quiesce lateness
// histogram: from half a millisecond to a second.
var LatenessBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}

// Source is what Collector reads at scrape time; *bus.Worker is one.
type Source interface {
	// Stats returns a snapshot of the worker's counters. It must be safe
	// to call from any goroutine.
	Stats() bus.Stats
}

// Collector is a prometheus.Collector for a worker's counters and gauges. It
// reads them from its Source, and from the NATS connection if it has one,
// only when it is collected.
type Collector struct {
	src Source
	nc  *nats.Conn

	backends, unacked, restored, restoreSkipped       *prometheus.Desc
	connected                                         *prometheus.Desc
	heartbeats, stateReports, rejected, quiesces      *prometheus.Desc
	redeliveries, dropped, publishErrors              *prometheus.Desc
	forgotten, heldBack                               *prometheus.Desc
	storeWrites, storeFailures, storeFenced           *prometheus.Desc
	owned, claims, releases, lost                     *prometheus.Desc
	outages, disconnected, reconnects, msgs, msgBytes *prometheus.Desc
}

// NewCollector returns a Collector for src. nc, when not nil, adds the
// connection's state, reconnects and traffic.
func NewCollector(src Source, nc *nats.Conn) *Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", name), help, labels, nil)
	}
	return &Collector{
		src: src,
		nc:  nc,

		backends:       d("backends", "Tracked backends by state (running, draining, quiesced).", "state"),
		unacked:        d("unacknowledged_drains", "Draining backends that were sent a quiesce and have had no quiesced, removed or activity since: drains no broker has confirmed."),
		restored:       d("restored_backends", "Backends loaded from the JetStream registry when the worker started."),
		restoreSkipped: d("registry_records_skipped", "Registry records refused when the worker started (undecodable, beyond a backend limit) or repaired (a fresh generation for one out of range, above the high-water mark or used twice; a timeout clamped)."),
		heartbeats:     d("heartbeats_total", "Heartbeats applied."),
		stateReports:   d("state_reports_total", "State reports (draining, quiesced, removed) applied."),
		rejected:       d("rejected_total", "Input rejected, by reason (bad_key, bad_payload, timeout_too_large, unknown_backend, backend_limit, bad_admin_request, bad_reply).", "reason"),
		quiesces:       d("quiesces_total", "Quiesce events published, by reason (idle_timeout, maintenance, broker_shutdown); redeliveries included.", "reason"),
		redeliveries:   d("redeliveries_total", "Quiesce events re-sent with the same id to a backend still draining."),
		forgotten:      d("forgotten_total", "Backends forgotten: left draining or quiesced with no activity or state report for IDLE_FORGET_AFTER, or forgotten by an operator."),
		heldBack:       d("held_back_drains", "Backends due whose quiesce waits for the event budget (IDLE_QUIESCE_RATE)."),
		dropped:        d("dropped_messages_total", "Messages NATS dropped because the worker's queue was full (slow consumer)."),
		publishErrors:  d("publish_errors_total", "Quiesce events and replies the NATS connection refused to publish."),
		storeWrites:    d("store_writes_total", "Writes the JetStream store acknowledged: log messages, events, snapshot chunks and manifests, claims."),
		storeFailures:  d("store_write_failures_total", "Store writes that failed or went unacknowledged; each is retried until stored."),
		storeFenced:    d("store_fenced_total", "Store writes the server refused because another worker claimed their partition."),
		owned:          d("partitions_owned", "Partitions this worker decides for."),
		claims:         d("partition_claims_total", "Partitions this worker claimed (at start, from a dead or leaving worker, or handed over)."),
		releases:       d("partition_releases_total", "Partitions this worker handed over to another (rebalancing, shutdown)."),
		lost:           d("partitions_lost_total", "Partitions another worker claimed while this one owned them (it was frozen, cut off or thought dead)."),
		outages:        d("nats_outages_total", "Disconnections from NATS the worker recovered from (its deadlines were extended by each)."),
		disconnected:   d("nats_disconnected_seconds_total", "Time spent disconnected from NATS, summed over recovered outages."),
		connected:      d("nats_connected", "1 while the NATS connection is connected, else 0."),
		reconnects:     d("nats_reconnects_total", "Reconnections of the NATS connection."),
		msgs:           d("nats_messages_total", "Messages through the NATS connection, by direction (in, out).", "direction"),
		msgBytes:       d("nats_bytes_total", "Payload bytes through the NATS connection, by direction (in, out).", "direction"),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs() {
		ch <- d
	}
}

// descs lists every metric the Collector may collect; those of the
// connection are described even without one, so the set of names does not
// depend on the wiring.
func (c *Collector) descs() []*prometheus.Desc {
	return []*prometheus.Desc{c.backends, c.unacked, c.restored, c.restoreSkipped, c.heartbeats, c.stateReports, c.rejected,
		c.quiesces, c.redeliveries, c.forgotten, c.heldBack, c.dropped, c.publishErrors, c.storeWrites, c.storeFailures,
		c.storeFenced, c.owned, c.claims, c.releases, c.lost, c.outages, c.disconnected,
		c.connected, c.reconnects, c.msgs, c.msgBytes}
}

// Collect implements prometheus.Collector: it reads the Source's Stats and
// the connection's statistics once per scrape.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.src.Stats()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge(c.backends, float64(s.Running), coordinator.Running.String())
	gauge(c.backends, float64(s.Draining), coordinator.Draining.String())
	gauge(c.backends, float64(s.Quiesced), coordinator.Quiesced.String())
	gauge(c.unacked, float64(s.Unacknowledged))
	gauge(c.restored, float64(s.Restored))
	gauge(c.restoreSkipped, float64(s.RestoreSkipped))
	counter(c.heartbeats, float64(s.Heartbeats))
	counter(c.stateReports, float64(s.StateReports))
	for reason, n := range s.Rejected {
		counter(c.rejected, float64(n), reason)
	}
	for reason, n := range s.Quiesces {
		counter(c.quiesces, float64(n), reason)
	}
	counter(c.redeliveries, float64(s.Redeliveries))
	counter(c.forgotten, float64(s.Forgotten))
	gauge(c.heldBack, float64(s.HeldBack))
	counter(c.dropped, float64(s.Dropped))
	counter(c.publishErrors, float64(s.PublishErrors))
	counter(c.storeWrites, float64(s.StoreWrites))
	counter(c.storeFailures, float64(s.StoreWriteFailures))
	counter(c.storeFenced, float64(s.StoreFenced))
	gauge(c.owned, float64(s.PartitionsOwned))
	counter(c.claims, float64(s.Claims))
	counter(c.releases, float64(s.Releases))
	counter(c.lost, float64(s.PartitionsLost))
	counter(c.outages, float64(s.Outages))
	counter(c.disconnected, s.OutageSeconds)
	if c.nc == nil {
		return
	}
	up := 0.0
	if c.nc.Status() == nats.CONNECTED {
		up = 1
	}
	gauge(c.connected, up)
	ns := c.nc.Stats()
	counter(c.reconnects, float64(ns.Reconnects))
	counter(c.msgs, float64(ns.InMsgs), "in")
	counter(c.msgs, float64(ns.OutMsgs), "out")
	counter(c.msgBytes, float64(ns.InBytes), "in")
	counter(c.msgBytes, float64(ns.OutBytes), "out")
}

// Lateness records how late quiesce events are published: it is a
// bus.Observer and a prometheus.Collector of the histogram
// idle_worker_quiesce_lateness_seconds. Only first emissions for an idle
// timeout count; forced drains and redeliveries have no deadline to be late
// for.
type Lateness struct {
	h prometheus.Histogram
}

// NewLateness returns a Lateness with LatenessBuckets.
func NewLateness() *Lateness {
	return &Lateness{h: prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: Namespace,
		Name:      "quiesce_lateness_seconds",
		Help:      "How long after its deadline an idle backend's first quiesce event was published.",
		Buckets:   LatenessBuckets,
	})}
}

// Quiesced implements bus.Observer. It runs on the worker loop and costs an
// atomic histogram update.
func (l *Lateness) Quiesced(d coordinator.Due, lateness time.Duration) {
	if d.Reason != coordinator.IdleTimeout || d.Attempt > 1 {
		return
	}
	l.h.Observe(lateness.Seconds())
}

// Describe implements prometheus.Collector.
func (l *Lateness) Describe(ch chan<- *prometheus.Desc) { l.h.Describe(ch) }

// Collect implements prometheus.Collector.
func (l *Lateness) Collect(ch chan<- prometheus.Metric) { l.h.Collect(ch) }

// NewRegistry returns a registry of its own (not Prometheus's global one)
// holding cs, the Go runtime and process collectors, and go_build_info.
func NewRegistry(cs ...prometheus.Collector) (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	all := append([]prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector(),
	}, cs...)
	for _, c := range all {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: register collector: %w", err)
		}
	}
	return reg, nil
}
