package member

import (
	"context"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
)

// run sends the heartbeats and expires silent members until halt.
func (m *Membership) run() {
	defer close(m.loopDone)
	nextBeat := time.Now().Add(m.cfg.Interval)
	timer := time.NewTimer(m.cfg.Interval)
	defer timer.Stop()
	for {
		now := time.Now()
		if !now.Before(nextBeat) {
			m.beat()
			nextBeat = now.Add(m.cfg.Interval)
		}
		m.mu.Lock()
		gone := m.roster.expire(now)
		next, ok := m.roster.next()
		m.mu.Unlock()
		switch {
		case slices.Equal(gone, []string{m.cfg.Name}):
			m.log.Warn("own heartbeats not heard: judging no other member until they are",
				"name", m.cfg.Name, "timeout", m.cfg.Timeout)
		case len(gone) > 0:
			m.log.Info("members timed out", "names", gone, "timeout", m.cfg.Timeout)
		}
		if len(gone) > 0 {
			m.notify()
		}
		wait := nextBeat.Sub(now)
		if ok && next.Sub(now) < wait {
			wait = next.Sub(now)
		}
		timer.Reset(max(wait, time.Millisecond))
		select {
		case <-m.stop:
			return
		case <-m.kick:
			nextBeat = time.Now()
		case <-timer.C:
		}
	}
}

// beat publishes a heartbeat with the owned partitions.
func (m *Membership) beat() {
	m.mu.Lock()
	h := heartbeat{Name: m.cfg.Name, Instance: m.instance, Partitions: m.owned, AgeMillis: m.age().Milliseconds()}
	data := encodeHeartbeat(h)
	m.mu.Unlock()
	err := m.nc.Publish(m.subject, data)
	m.mu.Lock()
	if err != nil {
		m.stats.SendErrors++
	} else {
		m.stats.Sent++
	}
	m.mu.Unlock()
	if err != nil {
		m.logLimited("send", "heartbeat not sent", "subject", m.subject, "error", err)
	}
}

// flush waits until the server has processed what nc sent, bounded by ctx
// and, when ctx has no deadline, by d.
func flush(ctx context.Context, nc *nats.Conn, d time.Duration) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	return nc.FlushWithContext(ctx)
}
