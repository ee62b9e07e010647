package member

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/internal/lograte"
)

// logInterval is how often a rejected heartbeat or a name clash of one kind
// may be logged.
const logInterval = time.Second

// Membership is one worker's part in the membership of a prefix: it sends
// this worker's heartbeats and tracks everyone's. Start one with Start; it
// runs until Leave or Stop. Its methods are safe for concurrent use.
type Membership struct {
	nc       *nats.Conn
	subject  string
	cfg      Config
	instance string
	started  time.Time // monotonic; the instance's age is measured from it
	log      *slog.Logger
	limiter  *lograte.Limiter

	changes  chan struct{} // capacity 1: coalesced view changes
	conflict chan error    // capacity 1: ErrNameTaken once joined
	clash    chan error    // capacity 1: ErrNameTaken while starting
	kick     chan struct{} // capacity 1: send a heartbeat now
	stop     chan struct{} // closed by halt
	loopDone chan struct{} // closed when run returns

	haltOnce  sync.Once
	unsubOnce sync.Once
	leaveOnce sync.Once
	sub       *nats.Subscription

	mu         sync.Mutex
	roster     *roster
	owned      []int
	stopped    bool
	conflicted bool
	stats      Stats
}

// Stats are a Membership's counters.
type Stats struct {
	// Received counts heartbeats accepted (its own included).
	Received uint64 `json:"received"`
	// Sent counts heartbeats published, SendErrors those NATS refused.
	Sent       uint64 `json:"sent"`
	SendErrors uint64 `json:"send_errors"`
	// Rejected counts ignored heartbeats by reason: too_large, bad_payload,
	// bad_name, bad_partition.
	Rejected map[string]uint64 `json:"rejected"`
	// NameClashes counts heartbeats from another instance with this
	// worker's name.
	NameClashes uint64 `json:"name_clashes"`
}

// Start joins the membership of the prefix of s on nc as cfg.Name. It
// subscribes to Subject(s), listens for an interval and a quarter (at most
// cfg.Timeout)
// without sending (so it
// learns the current members and whether its name is taken), then sends
// its first heartbeat and returns; from then on it sends one every
// cfg.Interval, reporting the partitions of SetOwned.
//
// If a heartbeat with cfg.Name from another instance arrives while it
// listens, Start fails with an error wrapping ErrNameTaken: of two live
// workers with one name, the second refuses to start. ctx bounds Start
// only; the Membership runs until Leave or Stop. nc must receive its own
// messages (not nats.NoEcho): a member judges itself alive by hearing its
// own heartbeats. Errors wrap ErrBadName, ErrBadConfig, ErrNameTaken, the
// context's error or NATS's.
func Start(ctx context.Context, nc *nats.Conn, s bus.Subjects, cfg Config) (*Membership, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if nc == nil || nc.Opts.NoEcho {
		return nil, fmt.Errorf("%w: the connection must exist and receive its own messages (no NoEcho)", ErrBadConfig)
	}
	m := &Membership{
		nc:       nc,
		subject:  Subject(s),
		cfg:      cfg,
		instance: newInstance(),
		started:  time.Now(),
		log:      cfg.Logger,
		limiter:  lograte.New(logInterval, nil),
		changes:  make(chan struct{}, 1),
		conflict: make(chan error, 1),
		clash:    make(chan error, 1),
		kick:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		loopDone: make(chan struct{}),
		stats:    Stats{Rejected: map[string]uint64{}},
	}
	m.roster = newRoster(cfg.Name, m.instance, cfg.Timeout)
	if m.sub, err = nc.Subscribe(m.subject, m.receive); err != nil {
		return nil, fmt.Errorf("member: subscribe %s: %w", m.subject, err)
	}
	if err := m.listen(ctx); err != nil {
		m.mu.Lock()
		m.stopped = true
		m.mu.Unlock()
		m.unsubscribe()
		return nil, err
	}
	m.beat()
	go m.run()
	return m, nil
}

// listen waits for a name clash, then joins: a heartbeat interval and a
// quarter (a live member is heard at least once in that time), at most
// cfg.Timeout. A clash found later still arrives on Conflict; two members
// that claimed one partition meanwhile are sorted out by the store (see
// package cluster).
func (m *Membership) listen(ctx context.Context) error {
	if err := flush(ctx, m.nc, m.cfg.Timeout); err != nil {
		return fmt.Errorf("member: subscribe %s: %w", m.subject, err)
	}
	t := time.NewTimer(min(m.cfg.Interval*5/4, m.cfg.Timeout))
	defer t.Stop()
	select {
	case err := <-m.clash:
		return err
	case <-ctx.Done():
		return fmt.Errorf("member: start: %w", ctx.Err())
	case <-t.C:
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	select {
	case err := <-m.clash: // arrived as the timer fired
		return err
	default:
	}
	m.roster.join(time.Now())
	m.log.Info("joined", "name", m.cfg.Name, "instance", m.instance, "members", len(m.roster.members))
	return nil
}

// Name returns the worker's name.
func (m *Membership) Name() string { return m.cfg.Name }

// Instance returns the random id of this process start, which the
// heartbeats carry.
func (m *Membership) Instance() string { return m.instance }

// SetOwned sets the partitions the heartbeats report as owned (values
// outside [0, Partitions) and duplicates are dropped) and, when that
// changes them, sends a heartbeat at once, so that a partition released is
// claimed by its next owner without waiting for the interval.
func (m *Membership) SetOwned(parts []int) {
	set := sortedSet(parts)
	set = slices.DeleteFunc(set, func(p int) bool { return p < 0 || p >= m.cfg.Partitions })
	m.mu.Lock()
	same := slices.Equal(set, m.owned)
	m.owned = set
	m.mu.Unlock()
	if !same {
		select {
		case m.kick <- struct{}{}:
		default:
		}
	}
}

// View returns a snapshot of the membership as this worker sees it.
func (m *Membership) View() View {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.roster.view(m.cfg.Partitions)
}

// Changes returns a channel that receives a value when the view changes: a
// member joins, restarts, dies, announces leaving, or reports other
// partitions. Changes are coalesced: one value may stand for several;
// read View after receiving. The channel is never closed.
func (m *Membership) Changes() <-chan struct{} { return m.changes }

// Conflict returns a channel that receives, at most once, an error wrapping
// ErrNameTaken when, after Start, another instance with this worker's name
// is heard and this instance is the younger of the two (the older one
// counts the clash in Stats and carries on). The caller should then give
// up its partitions and exit. The channel is never closed.
func (m *Membership) Conflict() <-chan error { return m.conflict }

// Stats returns the counters.
func (m *Membership) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.stats
	st.Rejected = make(map[string]uint64, len(m.stats.Rejected))
	for k, v := range m.stats.Rejected {
		st.Rejected[k] = v
	}
	return st
}

// Leave says goodbye: it stops the heartbeats, sends one with leaving true
// and no partitions, waits (bounded by ctx) until the server has it, and
// unsubscribes. The other members count this worker gone at once and claim
// what it owned. Release every partition in the store before calling Leave:
// the others claim as soon as they hear it. Leave after Leave does nothing;
// Leave after Stop still says goodbye. Errors wrap NATS's or the context's.
func (m *Membership) Leave(ctx context.Context) error {
	var err error
	m.leaveOnce.Do(func() {
		m.halt()
		data := encodeHeartbeat(heartbeat{Name: m.cfg.Name, Instance: m.instance, Leaving: true, AgeMillis: m.age().Milliseconds()})
		if err = m.nc.Publish(m.subject, data); err == nil {
			err = flush(ctx, m.nc, m.cfg.Timeout)
		}
		m.unsubscribe()
		if err != nil {
			err = fmt.Errorf("member: leave: %w", err)
		}
		if err != nil {
			m.log.Warn("left", "name", m.cfg.Name, "instance", m.instance, "error", err)
		} else {
			m.log.Info("left", "name", m.cfg.Name, "instance", m.instance)
		}
	})
	return err
}

// Stop stops the heartbeats without saying goodbye and unsubscribes: the
// others count this worker dead after their timeout. View keeps returning
// the last view. Stop is idempotent.
func (m *Membership) Stop() {
	m.halt()
	m.unsubscribe()
}

// halt stops the loop and waits for it.
func (m *Membership) halt() {
	m.haltOnce.Do(func() {
		m.mu.Lock()
		m.stopped = true
		m.mu.Unlock()
		close(m.stop)
		<-m.loopDone
	})
}

// unsubscribe ends the subscription; one already gone with its connection
// is fine.
func (m *Membership) unsubscribe() {
	m.unsubOnce.Do(func() {
		if err := m.sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) &&
			!errors.Is(err, nats.ErrBadSubscription) {
			m.log.Warn("unsubscribe", "subject", m.subject, "error", err)
		}
	})
}

// age is how long this instance has run.
func (m *Membership) age() time.Duration { return time.Since(m.started) }
