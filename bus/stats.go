package bus

import (
	"sync/atomic"
	"time"

	"github.com/idle-worker/idle-worker/coordinator"
)

// rejectReason classifies rejected input for counters and logs.
type rejectReason int

const (
	rejectBadKey rejectReason = iota
	rejectBadPayload
	rejectTimeoutTooLarge
	rejectUnknownBackend
	rejectFull
	rejectBadRequest
	rejectBadReply
	rejectBadPeer
	numRejects
)

var rejectNames = [numRejects]string{
	rejectBadKey:          "bad_key",
	rejectBadPayload:      "bad_payload",
	rejectTimeoutTooLarge: "timeout_too_large",
	rejectUnknownBackend:  "unknown_backend",
	rejectFull:            "backend_limit",
	rejectBadRequest:      "bad_admin_request",
	rejectBadReply:        "bad_reply",
	rejectBadPeer:         "bad_peer_message",
}

func (r rejectReason) String() string { return rejectNames[r] }

// Stats is a snapshot of a Worker's counters.
type Stats struct {
	// Heartbeats counts applied heartbeats, StateReports applied state
	// reports.
	Heartbeats   uint64 `json:"heartbeats"`
	StateReports uint64 `json:"state_reports"`
	// Quiesces counts published quiesce events by reason.
	Quiesces map[string]uint64 `json:"quiesces"`
	// PublishErrors counts quiesce events and replies NATS refused.
	PublishErrors uint64 `json:"publish_errors"`
	// Rejected counts rejected input by reason: bad_key, bad_payload,
	// timeout_too_large, unknown_backend, backend_limit, bad_admin_request,
	// bad_reply, bad_peer_message (a peer request or answer between the
	// workers of the prefix that did not parse).
	Rejected map[string]uint64 `json:"rejected"`
	// Dropped counts messages NATS dropped because the worker's queue was
	// full (a slow consumer).
	Dropped uint64 `json:"dropped"`
	// Running, Draining and Quiesced count tracked backends by state.
	Running  int64 `json:"running"`
	Draining int64 `json:"draining"`
	Quiesced int64 `json:"quiesced"`
	// Unacknowledged counts draining backends that were sent a quiesce and
	// have had no quiesced, removed or activity since.
	Unacknowledged int64 `json:"unacknowledged"`
	// Redeliveries counts quiesce events re-sent with the same id.
	Redeliveries uint64 `json:"redeliveries"`
	// Restored counts backends loaded from the registry at start;
	// RestoreSkipped counts stored records it refused (undecodable, or
	// beyond a backend limit) or had to repair: restored with a fresh
	// generation (theirs was out of range, above the high-water mark, or used
	// twice) or with their timeout clamped to the maximum.
	Restored       int64 `json:"restored"`
	RestoreSkipped int64 `json:"restore_skipped"`
	// StoreWrites counts writes the store acknowledged (records, events,
	// snapshots); StoreWriteFailures counts failed writes (each is retried
	// until it is stored); StoreFenced counts writes refused because another
	// worker claimed their partition.
	StoreWrites        uint64 `json:"store_writes"`
	StoreWriteFailures uint64 `json:"store_write_failures"`
	StoreFenced        uint64 `json:"store_fenced"`
	// Forgotten counts backends forgotten: left draining or quiesced with
	// no activity or report for IDLE_FORGET_AFTER, or forgotten by an
	// operator (P.admin.forget).
	Forgotten uint64 `json:"forgotten"`
	// HeldBack counts backends due whose quiesce waits for the event budget
	// (IDLE_QUIESCE_RATE); it may include a few refreshed since.
	HeldBack int64 `json:"held_back"`
	// Outages counts NATS disconnections; OutageSeconds sums their length.
	Outages       uint64  `json:"outages"`
	OutageSeconds float64 `json:"outage_seconds"`
	// Partitions is the partition count of the prefix (0 without a store);
	// PartitionsOwned is how many of them the worker decides for;
	// Claims and Releases count partitions it claimed and released,
	// PartitionsLost those another worker's claim took from it.
	Partitions int `json:"partitions"`
	// Foreign counts heartbeats and reports received for partitions other
	// workers own (ignored but for warm state; none with IDLE_MAPPED).
	Foreign         uint64 `json:"foreign"`
	PartitionsOwned int64  `json:"partitions_owned"`
	Claims          uint64 `json:"claims"`
	Releases        uint64 `json:"releases"`
	PartitionsLost  uint64 `json:"partitions_lost"`
	// AdminPartial counts admin replies that could not cover the whole
	// prefix: a member did not answer in time, or no answer covered some
	// partitions (the replies say "partial":true).
	AdminPartial uint64 `json:"admin_partial"`
}

// counters are written by the worker loop and read by anyone.
type counters struct {
	heartbeats     atomic.Uint64
	stateReports   atomic.Uint64
	quiesces       [coordinator.NumReasons]atomic.Uint64
	publishErrors  atomic.Uint64
	rejected       [numRejects]atomic.Uint64
	dropped        atomic.Uint64 // folded in from closed subscriptions
	droppedSeen    atomic.Uint64 // the most Stats has reported
	running        atomic.Int64
	draining       atomic.Int64
	quiesced       atomic.Int64
	unacked        atomic.Int64
	redeliveries   atomic.Uint64
	restored       atomic.Int64
	restoreSkipped atomic.Int64
	forgotten      atomic.Uint64
	held           atomic.Int64
	outages        atomic.Uint64
	outageNanos    atomic.Int64
	owned          atomic.Int64
	partitions     atomic.Int64
	foreign        atomic.Uint64
	claims         atomic.Uint64
	releases       atomic.Uint64
	lost           atomic.Uint64
	adminPartial   atomic.Uint64
}

// Stats returns a snapshot of the worker's counters. It is safe to call from
// any goroutine.
func (w *Worker) Stats() Stats {
	s := Stats{
		Heartbeats:      w.stats.heartbeats.Load(),
		StateReports:    w.stats.stateReports.Load(),
		PublishErrors:   w.stats.publishErrors.Load(),
		Quiesces:        make(map[string]uint64),
		Rejected:        make(map[string]uint64),
		Running:         w.stats.running.Load(),
		Draining:        w.stats.draining.Load(),
		Quiesced:        w.stats.quiesced.Load(),
		Unacknowledged:  w.stats.unacked.Load(),
		Redeliveries:    w.stats.redeliveries.Load(),
		Restored:        w.stats.restored.Load(),
		RestoreSkipped:  w.stats.restoreSkipped.Load(),
		Forgotten:       w.stats.forgotten.Load(),
		HeldBack:        w.stats.held.Load(),
		Outages:         w.stats.outages.Load(),
		OutageSeconds:   time.Duration(w.stats.outageNanos.Load()).Seconds(),
		Partitions:      int(w.stats.partitions.Load()),
		Foreign:         w.stats.foreign.Load(),
		PartitionsOwned: w.stats.owned.Load(),
		Claims:          w.stats.claims.Load(),
		Releases:        w.stats.releases.Load(),
		PartitionsLost:  w.stats.lost.Load(),
		AdminPartial:    w.stats.adminPartial.Load(),
	}
	for _, r := range coordinator.Reasons() {
		s.Quiesces[r.String()] = w.stats.quiesces[r].Load()
	}
	for r := range numRejects {
		s.Rejected[r.String()] = w.stats.rejected[r].Load()
	}
	if w.reg != nil {
		c := w.reg.Counters()
		s.StoreWrites, s.StoreWriteFailures, s.StoreFenced = c.Written, c.Failed, c.Fenced
	}
	s.Dropped = w.droppedTotal()
	return s
}

// droppedTotal returns the messages dropped so far: the worker's own count
// plus what its live subscriptions report, never less than it returned
// before (Prometheus reads a drop as a counter reset).
func (w *Worker) droppedTotal() uint64 {
	w.subsMu.Lock()
	n := w.stats.dropped.Load()
	for _, sub := range w.subs {
		if d, err := sub.Dropped(); err == nil && d > 0 {
			n += uint64(d)
		}
	}
	w.subsMu.Unlock()
	for {
		seen := w.stats.droppedSeen.Load()
		if n <= seen {
			return seen
		}
		if w.stats.droppedSeen.CompareAndSwap(seen, n) {
			return n
		}
	}
}

// publishGauges refreshes the gauges Stats reads; the loop calls it after
// every step.
func (w *Worker) publishGauges() {
	w.stats.running.Store(int64(w.coord.Count(coordinator.Running)))
	w.stats.draining.Store(int64(w.coord.Count(coordinator.Draining)))
	w.stats.quiesced.Store(int64(w.coord.Count(coordinator.Quiesced)))
	w.stats.unacked.Store(int64(w.coord.Unacknowledged()))
}
