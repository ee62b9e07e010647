package bus

import (
	"strings"
	"time"

	"github.com/idle-worker/idle-worker/coordinator"
)

// Warm state. A clustered worker receives every heartbeat of its prefix,
// its own partitions' and the others'. It notes when it last saw each key
// of the others, so that when it takes a partition over (its owner died) it
// restores each running backend from the last heartbeat it saw, not from
// the takeover: a backend idle since before the owner died is drained
// right after the takeover, not a whole timeout later. A time is trusted
// only from when this worker surely saw every heartbeat (since): its
// subscription's start, the end of its last NATS outage, the last time NATS
// dropped messages for it; a key not seen since then counts as last active
// then. So a takeover never brings a drain earlier than the owner would
// have, and adds at most what this worker could not see.
type warmth struct {
	seen  map[string]int64 // key -> its last heartbeat seen, ns since epoch
	epoch time.Time
	since int64  // seen times count only from here; -1: not yet (no warm state)
	drops uint64 // the dropped-messages count when since was last set
}

func newWarmth(now time.Time) warmth {
	return warmth{seen: make(map[string]int64), epoch: now, since: -1}
}

func (h *warmth) at(t time.Time) int64 { return int64(t.Sub(h.epoch)) }

// note records a heartbeat of key, of a partition the worker does not own.
func (h *warmth) note(key string, now time.Time) {
	t := h.at(now)
	if _, ok := h.seen[key]; !ok {
		key = strings.Clone(key) // key is a slice of the message's subject
	}
	h.seen[key] = t
}

// trustFrom makes seen times count only from now on.
func (h *warmth) trustFrom(now time.Time) { h.since = h.at(now) }

// lastActive returns when key was last active as far as this worker can
// tell, and false when it can tell nothing (then: a full timeout of grace
// from now).
func (h *warmth) lastActive(key string) (time.Time, bool) {
	if h.since < 0 {
		return time.Time{}, false
	}
	t := h.since
	if s, ok := h.seen[key]; ok && s > t {
		t = s
	}
	return h.epoch.Add(time.Duration(t)), true
}

// sweep drops the times that no longer tell more than since does, or that
// are older than maxTimeout (any deadline from them has passed).
func (h *warmth) sweep(now time.Time, maxTimeout time.Duration) {
	floor := max(h.since, h.at(now.Add(-maxTimeout)))
	for k, t := range h.seen {
		if t <= floor {
			delete(h.seen, k)
		}
	}
}

// warmNote applies a heartbeat or report of a key the worker does not own
// to its warm state. Loop only.
func (w *Worker) warmNote(key string, activity bool, data []byte) {
	w.stats.foreign.Add(1)
	if !w.cfg.Cluster {
		return
	}
	if activity {
		w.warm.note(key, w.now())
		return
	}
	if rep, err := ParseStateReport(data); err == nil && rep.State == StateRemoved {
		delete(w.warm.seen, key)
	}
}

// warmTrust checks, before a takeover, that no message was dropped since
// seen times were trusted; if some were, it trusts them only from now.
// Loop only.
func (w *Worker) warmTrust() {
	if d := w.droppedTotal(); d != w.warm.drops {
		w.warm.drops = d
		w.warm.trustFrom(w.now())
	}
}

// warmKeep notes the last activity of a backend the worker stops owning,
// so that taking its partition back later starts from it. Loop only.
func (w *Worker) warmKeep(b coordinator.Backend) {
	if w.cfg.Cluster && b.State == coordinator.Running {
		w.warm.seen[b.Key] = w.warm.at(b.LastActive)
	}
}
