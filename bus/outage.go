package bus

import (
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// onStatus follows the NATS connection. While it is down no heartbeat can
// arrive, so the worker makes no idle decisions; when it is back, every
// deadline moves by the length of the outage. first is the status that woke
// the loop. A connection closed for good ends Run with ErrConnectionClosed.
func (w *Worker) onStatus(first nats.Status) error {
	// Statuses may have queued up (a fast reconnect can leave RECONNECTING
	// and CONNECTED both waiting), so remember whether any of them said
	// down, and back that up with the reconnect counter.
	down := first != nats.CONNECTED
	for drained := false; !drained; {
		select {
		case s := <-w.status:
			down = down || s != nats.CONNECTED
		default:
			drained = true
		}
	}
	if r := w.nc.Stats().Reconnects; r != w.reconnects {
		w.reconnects, down = r, true
	}
	if w.nc.IsClosed() {
		return fmt.Errorf("%w: the client gave up on the server", ErrConnectionClosed)
	}
	now := w.now()
	if down && !w.paused {
		// The connection died somewhere between the last message and now.
		// Take the earliest plausible moment: extending too much only
		// delays a drain, extending too little drains a live backend.
		start := now
		if w.cfg.OutageDetection > 0 {
			start = now.Add(-w.cfg.OutageDetection)
			if w.lastIn.After(start) {
				start = w.lastIn
			}
		}
		w.paused, w.pausedAt = true, start
		if w.armed {
			w.timer.Stop()
			w.armed = false
		}
		w.log.Warn("NATS connection lost; idle decisions paused")
	}
	if w.paused && w.nc.IsConnected() {
		outage := now.Sub(w.pausedAt)
		w.paused = false
		w.coord.Extend(outage, now)
		w.warm.trustFrom(now) // heartbeats were missed during the outage
		w.stats.outages.Add(1)
		w.stats.outageNanos.Add(int64(outage))
		w.log.Warn("NATS connection back; deadlines extended by the outage", "outage", outage.Round(time.Millisecond))
	}
	return nil
}
