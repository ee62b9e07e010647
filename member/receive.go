package member

import (
	"fmt"
	"math"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/internal/lograte"
)

// receive handles one heartbeat message.
func (m *Membership) receive(msg *nats.Msg) {
	now := time.Now()
	h, err := decodeHeartbeat(msg.Data, m.cfg.Partitions)
	m.mu.Lock()
	if m.stopped {
		m.mu.Unlock()
		return
	}
	if err != nil {
		reason := rejectReason(err)
		m.stats.Rejected[reason]++
		m.mu.Unlock()
		m.logLimited("reject "+reason, "rejected heartbeat", "reason", reason, "error", lograte.Clip(err.Error(), 300))
		return
	}
	m.stats.Received++
	obs := m.roster.observe(h, now)
	joined := m.roster.joined
	if obs == obsClash {
		m.stats.NameClashes++
	}
	m.mu.Unlock()
	switch obs {
	case obsJoined, obsRestarted, obsLeft:
		m.log.Info(obs.event(), "name", h.Name, "instance", h.Instance, "partitions", len(h.Partitions))
	case obsClash:
		m.nameClash(h, joined, now)
	}
	if obs.changed() {
		m.notify()
	}
}

// nameClash handles a heartbeat with this worker's name from another
// instance: before joining, Start fails; after, the younger instance gets
// the error on Conflict.
func (m *Membership) nameClash(h heartbeat, joined bool, now time.Time) {
	err := fmt.Errorf("%w: %q is also used by instance %s (this is instance %s)", ErrNameTaken, m.cfg.Name, h.Instance, m.instance)
	if !joined {
		select {
		case m.clash <- err:
		default:
		}
		return
	}
	// An age beyond what a Duration holds (292 years) is clamped.
	age, theirs := now.Sub(m.started), time.Duration(min(h.AgeMillis, math.MaxInt64/int64(time.Millisecond)))*time.Millisecond
	if !yields(age, theirs, m.instance, h.Instance, m.cfg.Interval) {
		m.logLimited("clash", "another instance uses this name; it is younger and should stop",
			"name", m.cfg.Name, "instance", m.instance, "other_instance", h.Instance)
		return
	}
	m.mu.Lock()
	first := !m.conflicted
	m.conflicted = true
	m.mu.Unlock()
	if first {
		m.log.Error("another instance uses this name and is older", "name", m.cfg.Name,
			"instance", m.instance, "other_instance", h.Instance)
		m.conflict <- err
	}
}

// notify signals Changes without blocking.
func (m *Membership) notify() {
	select {
	case m.changes <- struct{}{}:
	default:
	}
}

// logLimited writes a warning at most once per logInterval per kind.
func (m *Membership) logLimited(kind, msg string, args ...any) {
	if ok, n := m.limiter.Allow(kind); ok {
		m.log.Warn(msg, append(args, "suppressed", n)...)
	}
}
