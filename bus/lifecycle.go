package bus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// start subscribes the data subjects and the peer protocol's, and starts
// the admin service.
func (w *Worker) start() (micro.Service, error) {
	for _, subject := range []string{w.subj.Activity(">"), w.subj.State(">")} {
		var sub *nats.Subscription
		var err error
		if w.cfg.Router != nil {
			// Mapped messages come on the partitions' subjects; what still
			// arrives here was not mapped, and one worker refuses it.
			sub, err = w.nc.ChanQueueSubscribe(subject, unmappedQueue, w.msgs)
		} else {
			sub, err = w.nc.ChanSubscribe(subject, w.msgs)
		}
		if err != nil {
			return nil, fmt.Errorf("bus: subscribe %s: %w", subject, err)
		}
		w.subsMu.Lock()
		w.subs = append(w.subs, sub)
		w.subsMu.Unlock()
	}
	if err := w.subscribePeers(); err != nil {
		return nil, err
	}
	svc, err := w.addService()
	if err != nil {
		return nil, err
	}
	if err := w.nc.FlushTimeout(5 * time.Second); err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("bus: confirming subscriptions: %w", err)
	}
	return svc, nil
}

// unmappedQueue is the queue group of the prefix's own subjects when the
// servers map the messages (see Router).
const unmappedQueue = "idle-worker-unmapped"

// unsubscribe drops the subscriptions at once, when start fails.
func (w *Worker) unsubscribe() {
	w.subsMu.Lock()
	defer w.subsMu.Unlock()
	for _, sub := range w.subs {
		_ = sub.Unsubscribe()
	}
	w.subs = nil
	for _, sub := range w.peerSubs {
		_ = sub.Unsubscribe()
	}
	w.peerSubs = nil
}

func (w *Worker) shutdown(svc micro.Service) error {
	close(w.stopping)
	if err := svc.Stop(); err != nil {
		w.log.Warn("stopping admin service", "error", err)
	}
	w.unsubscribePeers()
	// One budget for the whole shutdown: draining takes at most half,
	// flushing and the outputs share what is left.
	deadline := time.Now().Add(w.cfg.ShutdownTimeout)
	n := w.drainSubscriptions(w.cfg.ShutdownTimeout / 2)
	if err := w.nc.FlushTimeout(max(time.Until(deadline)/3, 10*time.Millisecond)); err != nil {
		w.log.Warn("final flush", "error", err)
	}
	w.closeOutputsBy(deadline)
	w.publishGauges()
	w.summary.flush(0)
	w.log.Info("worker stopped", "applied_after_stop", n, "backends", w.coord.Len())
	return nil
}

// drainSubscriptions drains the data subscriptions: the server stops
// routing to them, and every message it routed before is applied here. (A
// plain Unsubscribe would make the client drop messages still in flight.)
// It returns how many messages it applied and gives up after timeout.
func (w *Worker) drainSubscriptions(timeout time.Duration) int {
	// Fold the subscriptions' drop counts into the worker's under the lock
	// Stats takes, so the total it reports never goes backwards.
	w.subsMu.Lock()
	subs := w.subs
	w.subs = nil
	for _, sub := range subs {
		if n, err := sub.Dropped(); err == nil && n > 0 {
			w.stats.dropped.Add(uint64(n))
		}
	}
	w.subsMu.Unlock()
	var closed []<-chan nats.SubStatus
	for _, sub := range subs {
		ch := sub.StatusChanged(nats.SubscriptionClosed)
		if err := sub.Drain(); err != nil {
			w.log.Warn("drain subscription", "subject", sub.Subject, "error", err)
			_ = sub.Unsubscribe()
			continue
		}
		closed = append(closed, ch)
	}
	n := 0
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for _, ch := range closed {
		for done := false; !done; {
			select {
			case <-ch:
				done = true
			case m := <-w.msgs:
				w.handle(m)
				n++
			case <-timer.C:
				w.log.Warn("subscriptions did not drain in time", "timeout", timeout)
				return n + w.handleQueued(len(w.msgs))
			}
		}
	}
	return n + w.handleQueued(len(w.msgs))
}

// handleQueued handles up to n messages that are already queued and returns
// how many it handled.
func (w *Worker) handleQueued(n int) int {
	for i := range n {
		select {
		case m := <-w.msgs:
			w.handle(m)
		default:
			return i
		}
	}
	return n
}

// closeOutputs waits, bounded, for the store's writes.
func (w *Worker) closeOutputs() { w.closeOutputsBy(time.Now().Add(w.cfg.ShutdownTimeout / 2)) }

// closeOutputsBy is closeOutputs with a deadline.
func (w *Worker) closeOutputsBy(deadline time.Time) {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if w.reg != nil {
		if err := w.reg.Close(ctx); err != nil {
			w.log.Warn("closing the store", "error", err)
		}
	}
}
