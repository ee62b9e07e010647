package bus

import (
	"fmt"

	"github.com/nats-io/nats.go"
)

// Router is how a worker finds its partitions' messages when the NATS
// servers route them with partition mappings (package partition builds one
// from the block `idle-worker mappings` prints): each worker then receives
// only the heartbeats and reports of the partitions it owns, so ingest
// grows with the workers. Without a Router every worker receives every
// message of the prefix.
type Router interface {
	// Subjects returns the subjects carrying partition p's heartbeats and
	// state reports.
	Subjects(p int) []string
	// Parse takes a message's subject apart: a heartbeat (else a state
	// report) of key; ok is false for a subject not of the mappings.
	Parse(subject string) (activity bool, key string, ok bool)
}

// routeKey returns the key of a message on a mapped subject. Loop only.
func (w *Worker) routeKey(subject string) (activity bool, key string, ok bool) {
	if w.cfg.Router == nil {
		return false, "", false
	}
	return w.cfg.Router.Parse(subject)
}

// subscribeParts subscribes to the mapped subjects of parts. Loop only.
func (w *Worker) subscribeParts(parts []int) {
	if w.cfg.Router == nil {
		return
	}
	for _, p := range parts {
		if len(w.partSubs[p]) > 0 {
			continue
		}
		for _, subject := range w.cfg.Router.Subjects(p) {
			sub, err := w.nc.ChanSubscribe(subject, w.msgs)
			if err != nil {
				w.log.Error("subscribing to a partition's subjects", "partition", p, "subject", subject, "error", err)
				continue
			}
			w.partSubs[p] = append(w.partSubs[p], sub)
			w.subsMu.Lock()
			w.subs = append(w.subs, sub)
			w.subsMu.Unlock()
		}
	}
	if err := w.nc.Flush(); err != nil {
		w.log.Warn("confirming a partition's subscriptions", "error", err)
	}
}

// unsubscribeParts drops the mapped subscriptions of parts, folding what
// NATS dropped for them into the worker's count. Loop only.
func (w *Worker) unsubscribeParts(parts []int) {
	if w.cfg.Router == nil {
		return
	}
	w.subsMu.Lock()
	defer w.subsMu.Unlock()
	for _, p := range parts {
		for _, sub := range w.partSubs[p] {
			if n, err := sub.Dropped(); err == nil && n > 0 {
				w.stats.dropped.Add(uint64(n))
			}
			_ = sub.Unsubscribe()
			for i, s := range w.subs {
				if s == sub {
					w.subs = append(w.subs[:i], w.subs[i+1:]...)
					break
				}
			}
		}
		delete(w.partSubs, p)
	}
}

// unmapped handles a message that reached the prefix's own subjects while
// the servers are meant to map them: a key the mappings do not cover (more
// tokens than they handle), or servers that lack the mappings. Loop only.
func (w *Worker) unmapped(m *nats.Msg, key string) {
	err := ValidateKey(key)
	if err == nil {
		err = fmt.Errorf("%w: received on %q, not through the partition mappings: load the block of idle-worker mappings into every server, or unset IDLE_MAPPED", ErrBadKey, m.Subject)
	}
	w.reject(m, rejectBadKey, err)
}
