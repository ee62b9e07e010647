package bus

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/coordinator"
)

// maxFireBatch bounds the backends one timer firing handles, so that a mass
// deadline does not hold heartbeats back: the loop takes the messages that
// arrived meanwhile between batches. 256 events take well under a
// millisecond to hand to the stream publisher.
const maxFireBatch = 256

// heldRecount is how often, at most, the worker counts the backends that are
// due but held back by IDLE_QUIESCE_RATE.
const heldRecount = 100 * time.Millisecond

// rearm points the single timer at the coordinator's next deadline, or later
// when the event budget is spent.
func (w *Worker) rearm() {
	if w.paused {
		return
	}
	dl, ok := w.coord.NextDeadline()
	if !ok {
		if w.armed {
			w.timer.Stop()
			w.armed = false
		}
		return
	}
	if next := w.pace.next(); next.After(dl) {
		dl = next
	}
	if w.armed && dl.Equal(w.armedAt) {
		return
	}
	w.timer.Reset(dl.Sub(w.now()))
	w.armed, w.armedAt = true, dl
}

// fire publishes a quiesce for the backends due now, in deadline order, as
// many as the event budget and one batch allow, and forgets those left
// untouched for IDLE_FORGET_AFTER. The rest stay due: rearm fires again.
func (w *Worker) fire() {
	if w.paused {
		return
	}
	now := w.now()
	n := min(w.pace.available(now), maxFireBatch)
	if n > 0 {
		w.due = w.coord.AppendDueN(w.due[:0], now, n)
		sent := 0
		for _, d := range w.due {
			if !w.owns(d.Key) {
				continue // being dropped: its partition went to another worker
			}
			if d.Forgotten {
				w.forgotten(d)
				continue
			}
			w.emit(d, now)
			sent++
		}
		w.pace.spend(sent)
		clear(w.due) // keep no key alive
	}
	w.countHeld(now)
}

// countHeld refreshes the gauge of backends due but held back by the event
// budget: zero when nothing is due any more, else a count at most every
// heldRecount.
func (w *Worker) countHeld(now time.Time) {
	if !w.pace.limited() {
		return
	}
	next, pending := w.coord.NextDeadline()
	switch {
	case !pending || next.After(now):
		w.stats.held.Store(0)
	case now.Sub(w.heldAt) >= heldRecount:
		w.heldAt = now
		w.stats.held.Store(int64(w.coord.DueCount(now)))
	}
}

// forgotten records that the model forgot a backend left untouched for
// IDLE_FORGET_AFTER, as if its broker had reported it removed.
func (w *Worker) forgotten(d coordinator.Due) {
	if w.reg != nil {
		w.reg.Delete(d.Key)
	}
	w.stats.forgotten.Add(1)
	w.summary.forgotten++
	if w.log.Enabled(context.Background(), slog.LevelDebug) {
		w.log.Debug("forgot backend", "backend", d.Key, "idle_for", d.IdleFor)
	}
}

// eventID names one emission: the worker's incarnation and the running
// period's generation, which the coordinator never reuses.
func (w *Worker) eventID(gen uint64) string {
	b := make([]byte, 0, 64) // on the stack: one allocation, the string
	b = append(append(b, w.incarn...), '-')
	return string(strconv.AppendUint(b, gen, 10))
}

// emit publishes d's event, then records what it implies.
func (w *Worker) emit(d coordinator.Due, now time.Time) {
	ev := QuiesceEvent{
		ID:                  w.eventID(d.Generation),
		Key:                 d.Key,
		Reason:              d.Reason.String(),
		IdleForMS:           d.IdleFor.Milliseconds(),
		ConfiguredTimeoutMS: d.ConfiguredTimeout.Milliseconds(),
		At:                  now,
		Attempt:             d.Attempt,
	}
	rec, _ := w.coord.Record(d.Key)
	if err := w.pub.Publish(w.subj.Quiesce(d.Key), &ev, rec); err != nil {
		w.stats.publishErrors.Add(1)
		w.log.Error("publish quiesce", "backend", d.Key, "id", ev.ID, "error", err)
	}
	if d.Attempt > 1 {
		w.stats.redeliveries.Add(1)
	}
	if w.cfg.Observer != nil {
		var late time.Duration
		if d.Reason == coordinator.IdleTimeout && d.Attempt <= 1 {
			late = max(now.Sub(d.Deadline), 0)
		}
		w.cfg.Observer.Quiesced(d, late)
	}
	w.stats.quiesces[d.Reason].Add(1)
	w.summary.add(d)
	if w.log.Enabled(context.Background(), slog.LevelDebug) {
		w.log.Debug("quiesce", "backend", d.Key, "id", ev.ID, "reason", ev.Reason, "attempt", d.Attempt, "idle_for", d.IdleFor)
	}
}

// publisher sends quiesce events: to the Store, or on core NATS.
type publisher interface {
	Publish(subject string, ev *QuiesceEvent, rec coordinator.Record) error
}

// storePublisher hands events to the worker's Store, which stores each
// with its draining record rec.
type storePublisher struct{ st Store }

func (p storePublisher) Publish(_ string, ev *QuiesceEvent, rec coordinator.Record) error {
	return p.st.Publish(ev, rec)
}

// corePublisher is the publisher of a worker without a Store: core NATS, no
// acknowledgement. It reuses one message, owned by the worker loop:
// PublishMsg copies subject, header and body into the connection's buffer
// before it returns, so nothing of it need outlive the call.
type corePublisher struct {
	nc   *nats.Conn
	msg  nats.Msg
	id   [1]string // the Nats-Msg-Id header's values
	body []byte
}

// Publish publishes ev on subject; a worker without a Store keeps no record.
func (p *corePublisher) Publish(subject string, ev *QuiesceEvent, _ coordinator.Record) error {
	if p.msg.Header == nil {
		p.msg.Header = nats.Header{HeaderMsgID: p.id[:]}
	}
	p.id[0] = ev.ID
	p.body = ev.AppendJSON(p.body[:0])
	p.msg.Subject, p.msg.Data = subject, p.body
	return p.nc.PublishMsg(&p.msg)
}

// quiesceSummary counts the events published since its last line and logs
// them at info level, by reason, at most once per WorkerConfig.SummaryInterval.
// It is owned by the worker loop.
type quiesceSummary struct {
	logger       *slog.Logger
	first        [coordinator.NumReasons]uint64 // first emissions by reason
	redeliveries uint64
	forgotten    uint64
}

func (s *quiesceSummary) add(d coordinator.Due) {
	if d.Attempt > 1 {
		s.redeliveries++
		return
	}
	s.first[d.Reason]++
}

// flush logs what was counted over the last interval, if anything, and
// starts again. interval is only reported (zero: at shutdown).
func (s *quiesceSummary) flush(interval time.Duration) {
	total := s.redeliveries + s.forgotten
	attrs := make([]any, 0, 2*coordinator.NumReasons+6)
	for _, r := range coordinator.Reasons() {
		total += s.first[r]
		attrs = append(attrs, r.String(), s.first[r])
	}
	if total == 0 {
		return
	}
	attrs = append(attrs, "redeliveries", s.redeliveries, "forgotten", s.forgotten)
	if interval > 0 {
		attrs = append(attrs, "interval", interval)
	}
	s.logger.Info("quiesce events published", attrs...)
	*s = quiesceSummary{logger: s.logger}
}
