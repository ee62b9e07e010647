package bus

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/coordinator"
)

// handle applies one message of the data subscriptions: a heartbeat or a
// state report.
func (w *Worker) handle(m *nats.Msg) {
	if activity, key, ok := w.routeKey(m.Subject); ok {
		// Mapped to one of this worker's partitions' subjects.
		if !w.owns(key) {
			return // a client published on P.p.… itself, or a partition just dropped
		}
		if activity {
			w.onActivity(key, m)
		} else {
			w.onState(key, m)
		}
		return
	}
	if w.cfg.Router != nil {
		if key, ok := w.subj.ActivityKey(m.Subject); ok {
			w.unmapped(m, key)
		} else if key, ok := w.subj.StateKey(m.Subject); ok {
			w.unmapped(m, key)
		}
		return
	}
	if key, ok := w.subj.ActivityKey(m.Subject); ok {
		if w.owns(key) {
			w.onActivity(key, m)
		} else {
			w.warmNote(key, true, nil)
		}
		return
	}
	if key, ok := w.subj.StateKey(m.Subject); ok {
		if w.owns(key) {
			w.onState(key, m)
		} else {
			w.warmNote(key, false, m.Data)
		}
	}
}

// admit checks what heartbeats and state reports share, the key and the body
// size, and rejects the message when either is bad.
func (w *Worker) admit(key string, m *nats.Msg) bool {
	if err := ValidateKey(key); err != nil {
		w.reject(m, rejectBadKey, err)
		return false
	}
	if len(m.Data) > w.cfg.MaxBody {
		w.reject(m, rejectBadPayload, fmt.Errorf("%w: body of %d bytes exceeds %d", ErrBadPayload, len(m.Data), w.cfg.MaxBody))
		return false
	}
	return true
}

// onActivity applies a heartbeat of key and answers it.
func (w *Worker) onActivity(key string, m *nats.Msg) {
	if !w.admit(key, m) {
		return
	}
	hb, err := ParseHeartbeat(m.Data)
	if err != nil {
		r := rejectBadPayload
		if errors.Is(err, errTimeoutOverflow) {
			r = rejectTimeoutTooLarge
		}
		w.reject(m, r, err)
		return
	}
	timeout := w.defTO
	if hb.HasTimeout {
		if hb.Timeout > w.cfg.MaxTimeout {
			w.reject(m, rejectTimeoutTooLarge, fmt.Errorf("%w: idle_timeout_ms %d exceeds the maximum %d",
				ErrBadPayload, hb.Timeout.Milliseconds(), w.cfg.MaxTimeout.Milliseconds()))
			return
		}
		timeout = coordinator.ClampTimeout(hb.Timeout)
	}
	ch, err := w.coord.MarkActivityWithTimeout(key, w.now(), timeout)
	if err != nil {
		w.reject(m, rejectFull, fmt.Errorf("bus: %w (%d backends tracked in all)", err, w.coord.Len()))
		return
	}
	w.stats.heartbeats.Add(1)
	if ch != 0 && w.reg != nil {
		// A change is answered once its record is stored: a backend told
		// it is tracked is tracked across a crash too.
		w.reserveAhead()
		rec, _ := w.coord.Record(key)
		if m.Reply == "" || !w.replies.allow(m.Reply) {
			w.reg.Put(rec, nil)
			if m.Reply != "" {
				w.refuseReply(m.Reply)
			}
			return
		}
		reply, body := m.Reply, appendHeartbeatReply(nil, key, timeout)
		w.reg.Put(rec, func(err error) {
			if err != nil {
				body = errorReply(err)
			}
			w.publishReply(reply, body)
		})
		return
	}
	if m.Reply != "" {
		w.buf = appendHeartbeatReply(w.buf[:0], key, timeout)
		w.respond(m.Reply, w.buf)
	}
}

// onState applies a broker's state report of key and answers it.
func (w *Worker) onState(key string, m *nats.Msg) {
	if !w.admit(key, m) {
		return
	}
	rep, err := ParseStateReport(m.Data)
	if err != nil {
		w.reject(m, rejectBadPayload, err)
		return
	}
	before, known := w.coord.State(key)
	if !known {
		w.reject(m, rejectUnknownBackend, unknownBackend(key))
		return
	}
	now := w.now()
	switch rep.State {
	case StateDraining:
		w.coord.MarkDraining(key, now)
	case StateQuiesced:
		w.coord.MarkQuiesced(key, now)
	case StateRemoved:
		w.coord.Remove(key)
	}
	w.stats.stateReports.Add(1)
	// The registry changes on transitions only: a broker repeating its
	// report costs no write.
	if w.reg != nil {
		if after, tracked := w.coord.State(key); !tracked {
			w.reg.Delete(key)
		} else if after != before {
			if rec, ok := w.coord.Record(key); ok {
				w.reg.Put(rec, nil)
			}
		}
	}
	if m.Reply != "" {
		b, _ := json.Marshal(StateReply{OK: true, Key: key, State: rep.State})
		w.respond(m.Reply, b)
	}
}

// unknownBackend is the error for a key the worker does not track.
func unknownBackend(key string) error {
	return fmt.Errorf("%w: %q is not tracked", ErrUnknownBackend, key)
}

// reject counts, logs (rate-limited) and answers refused input.
func (w *Worker) reject(m *nats.Msg, r rejectReason, err error) {
	w.stats.rejected[r].Add(1)
	w.rl.log(w.now(), r, m.Subject, err)
	if m.Reply != "" {
		w.respond(m.Reply, errorReply(err))
	}
}

// respond publishes a reply, counting a refusal. A reply subject outside
// the allowed inboxes is not answered: it is counted and logged as bad_reply.
func (w *Worker) respond(reply string, data []byte) {
	if !w.replies.allow(reply) {
		w.refuseReply(reply)
		return
	}
	w.publishReply(reply, data)
}

// publishReply publishes a reply to an allowed inbox; any goroutine may
// call it.
func (w *Worker) publishReply(reply string, data []byte) {
	if err := w.nc.Publish(reply, data); err != nil {
		w.stats.publishErrors.Add(1)
		w.log.Warn("reply", "subject", reply, "error", err)
	}
}

// refuseReply counts and logs (rate-limited) a reply subject the worker will
// not publish on.
func (w *Worker) refuseReply(reply string) {
	w.stats.rejected[rejectBadReply].Add(1)
	w.rl.log(w.now(), rejectBadReply, reply, errBadReply)
}

// errBadReply is logged for a refused reply subject.
var errBadReply = fmt.Errorf("%w: not an allowed inbox; applied, not answered", ErrBadReply)
