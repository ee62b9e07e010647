package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/idle-worker/idle-worker/coordinator"
)

// Defaults of WorkerConfig.
const (
	DefaultMaxTimeout  = 24 * time.Hour
	DefaultQueueLength = 1 << 16
	DefaultMaxBody     = 4096
	// DefaultShutdownTimeout is WorkerConfig.ShutdownTimeout's default.
	DefaultShutdownTimeout = 4 * time.Second
	// DefaultQuiesceRate is the event budget idle-worker runs with
	// (IDLE_QUIESCE_RATE); WorkerConfig.QuiesceRate's zero means no limit.
	DefaultQuiesceRate = 20000
	// DefaultSummaryInterval is WorkerConfig.SummaryInterval's default.
	DefaultSummaryInterval = 10 * time.Second
	// ServiceName is the name of the admin micro service.
	ServiceName = "idle-worker"
)

// batchSize bounds how many queued messages the loop handles before it looks
// at its timer and admin calls again.
const batchSize = 256

// WorkerConfig configures a Worker. A zero field selects its default, except
// Policy, whose zero DefaultIdleTimeout clamps to 1 ms as everywhere in the
// model: start from coordinator.DefaultPolicy().
type WorkerConfig struct {
	// Subjects is the wire contract to serve (see NewSubjects; default
	// prefix DefaultPrefix).
	Subjects Subjects
	// Policy is the coordinator's policy (default timeout, backend limit).
	Policy coordinator.Policy
	// MaxTimeout is the largest idle_timeout_ms a heartbeat may ask for
	// (default DefaultMaxTimeout).
	MaxTimeout time.Duration
	// MaxBody is the largest heartbeat or state body accepted, in bytes
	// (default DefaultMaxBody).
	MaxBody int
	// QueueLength is the capacity of the queue between NATS and the loop
	// (default DefaultQueueLength). When it is full NATS drops messages and
	// Stats.Dropped counts them.
	QueueLength int
	// ReplyPrefixes are the subject prefixes the worker answers requests on
	// (default DefaultReplyPrefixes). Whatever they say, it never answers on
	// $-subjects or under its own prefix, nor into the connection's own
	// inboxes when the connection has a prefix of its own
	// (nats.CustomInboxPrefix; natsconn.DialConfig.InboxPrefix): give it
	// one, or a client that saw a JetStream acknowledgement inbox of the
	// worker's could have it answer there. A message with any other reply
	// subject is applied as usual but not answered, and counted as rejected
	// (bad_reply).
	ReplyPrefixes []string
	// QuiesceRate bounds the quiesce events published per second (0: no
	// bound). When more backends are due, they go out in deadline order as
	// fast as the rate allows, never early; forced drains and re-sends share
	// the budget. Stats.HeldBack counts those waiting.
	QuiesceRate int
	// Version is the admin service's semantic version (default "0.0.0").
	Version string
	// Logger receives the worker's logs (default: discard).
	Logger *slog.Logger
	// SummaryInterval is how often, at most, the worker logs at info level
	// how many quiesce events it published, by reason (default
	// DefaultSummaryInterval). Each event is logged at debug level.
	SummaryInterval time.Duration
	// Now is the worker's clock (default time.Now). Its readings must carry
	// a monotonic component in production.
	Now func() time.Time
	// Store, when set, keeps tracked backends across restarts and stores
	// quiesce events before brokers see them (see package store); Run
	// loads it before serving. Nil: memory only, events on core NATS.
	Store Store
	// Router, when set, says the servers map each partition's messages to
	// subjects of their own (IDLE_MAPPED): the worker subscribes to its
	// partitions' only, and has no warm state of the others.
	Router Router
	// Cluster: partitions are claimed and released by a controller
	// (Acquire, Release) as workers come and go; the worker starts owning
	// none. False: it claims every partition at start.
	Cluster bool
	// Observer, when set, is told of every quiesce event published, for
	// metrics. Counters are in Stats.
	Observer Observer
	// ShutdownTimeout bounds Run's graceful shutdown after ctx is done:
	// draining subscriptions, flushing, and closing the publisher and
	// registry (default DefaultShutdownTimeout).
	ShutdownTimeout time.Duration
	// OutageDetection bounds how long a dead connection can go unnoticed
	// (the client's ping interval times its allowed outstanding pings,
	// plus one). An outage is taken to have begun at the last message
	// received, but no earlier than OutageDetection before it was
	// noticed. Zero: it began when it was noticed.
	OutageDetection time.Duration
	// Peers, when set, are the other workers of the prefix: the admin
	// service's list, get, quiesce and forget answer for every partition,
	// asking the other members for theirs on P.store.peer.<verb> (see
	// subjects.md), and the worker answers their questions about its own.
	// Nil: a lone worker, which answers from its own backends.
	Peers Peers
	// PeerTimeout bounds how long an admin request waits for the other
	// members' answers (default DefaultPeerTimeout); a reply without some
	// of them says "partial":true.
	PeerTimeout time.Duration
}

// Observer receives the worker's decisions as they happen. Its methods run on
// the worker loop: they must be quick and must not block.
type Observer interface {
	// Quiesced is called for each quiesce event published. lateness is the
	// publish time minus the backend's deadline for a first idle_timeout
	// emission, and zero for forced drains and redeliveries.
	Quiesced(d coordinator.Due, lateness time.Duration)
}

// Worker connects a coordinator.Coordinator to NATS: it applies heartbeats
// and state reports, publishes quiesce events when the coordinator finds a
// backend idle, and serves the admin service. One goroutine, the one running
// Run, owns the coordinator and every field below that is not marked
// otherwise.
type Worker struct {
	nc       *nats.Conn
	cfg      WorkerConfig
	subj     Subjects
	log      *slog.Logger
	now      func() time.Time
	coord    *coordinator.Coordinator
	defTO    time.Duration
	incarn   string
	msgs     chan *nats.Msg
	calls    chan func()
	ready    chan struct{}
	stopping chan struct{}
	stats    counters // atomic: read by any goroutine
	rl       rateLog
	summary  quiesceSummary
	pace     pacer
	heldAt   time.Time // when the held-back gauge was last counted
	replies  replyFilter
	buf      []byte            // scratch for replies
	due      []coordinator.Due // scratch for AppendDueN
	pub      publisher

	// Pattern scans (scan.go). Set before Run, by tests only: scanSlice
	// overrides the slice size (0: scanSlice); afterSlice, when set, runs
	// off the loop between two slices of a scan.
	scanSlice  int
	afterSlice func()

	timer   *time.Timer
	armed   bool
	armedAt time.Time

	reg        Store
	warm       warmth // last heartbeats seen of other workers' partitions
	hwm        uint64 // end of the block of generations reserved
	blockStart uint64 // its start
	reserving  bool   // a reservation of the next block is under way
	overrun    bool   // generations went past hwm (logged once)
	owned      []bool // by partition: decided here; nil without a Store
	ownsAll    bool   // every partition (or no Store): owns needs no hash
	ownMu      sync.Mutex
	ownedList  []int                        // owned, for Owned (under ownMu)
	partSubs   map[int][]*nats.Subscription // with a Router: each owned partition's
	status     chan nats.Status
	paused     bool // disconnected from NATS: no quiesce decisions
	pausedAt   time.Time
	lastIn     time.Time // when the loop last took a message
	reconnects uint64    // the connection's reconnect count at the last look

	subsMu sync.Mutex // guards subs and ran, for Stats and Run
	subs   []*nats.Subscription
	ran    bool

	// The peer protocol (peer.go): the reply subjects of the other
	// members' questions it answers, their subscriptions (under subsMu),
	// and the admin service's instance id, set before it serves.
	peerReplies replyFilter
	peerSubs    []*nats.Subscription
	svcID       string
}

// NewWorker returns a Worker that will serve cfg on nc once Run is called.
func NewWorker(nc *nats.Conn, cfg WorkerConfig) (*Worker, error) {
	if nc == nil {
		return nil, errors.New("bus: NewWorker: nil connection")
	}
	if cfg.Subjects.prefix == "" {
		cfg.Subjects = MustSubjects(DefaultPrefix)
	}
	if cfg.MaxTimeout <= 0 {
		cfg.MaxTimeout = DefaultMaxTimeout
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.QueueLength <= 0 {
		cfg.QueueLength = DefaultQueueLength
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.SummaryInterval <= 0 {
		cfg.SummaryInterval = DefaultSummaryInterval
	}
	if cfg.PeerTimeout <= 0 {
		cfg.PeerTimeout = DefaultPeerTimeout
	}
	if cfg.Version == "" {
		cfg.Version = "0.0.0"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Policy.DefaultIdleTimeout > cfg.MaxTimeout {
		return nil, fmt.Errorf("bus: default idle timeout %v exceeds the maximum %v", cfg.Policy.DefaultIdleTimeout, cfg.MaxTimeout)
	}
	replies, err := newReplyFilter(cfg.ReplyPrefixes, cfg.Subjects)
	if err != nil {
		return nil, fmt.Errorf("bus: reply prefixes: %w", err)
	}
	if p := nc.Opts.InboxPrefix; p != "" && p != "_INBOX" {
		// The connection's inboxes are its own (natsconn.DialConfig's
		// InboxPrefix): a reply there would land in the worker's own
		// request or acknowledgement handlers.
		replies.inbox = p + "."
	} else if cfg.Store != nil {
		cfg.Logger.Warn("the worker's connection shares the default inbox prefix; replies into its own JetStream acknowledgement inboxes cannot be refused (give the connection an inbox prefix of its own)",
			"component", "worker")
	}
	log := cfg.Logger.With("component", "worker")
	w := &Worker{
		nc:       nc,
		cfg:      cfg,
		subj:     cfg.Subjects,
		log:      log,
		now:      cfg.Now,
		coord:    coordinator.New(cfg.Policy),
		defTO:    coordinator.ClampTimeout(cfg.Policy.DefaultIdleTimeout),
		incarn:   nuid.Next(),
		msgs:     make(chan *nats.Msg, cfg.QueueLength),
		calls:    make(chan func()),
		ready:    make(chan struct{}),
		stopping: make(chan struct{}),
		rl:       rateLog{logger: log, interval: time.Second},
		summary:  quiesceSummary{logger: log},
		pace:     newPacer(cfg.QuiesceRate),
		replies:  replies,
		reg:      cfg.Store,
		warm:     newWarmth(cfg.Now()),
		partSubs: make(map[int][]*nats.Subscription),
		ownsAll:  cfg.Store == nil,
	}
	if w.peerReplies, err = newPeerReplyFilter(cfg, replies); err != nil {
		return nil, err
	}
	w.pub = &corePublisher{nc: nc}
	if cfg.Store != nil {
		w.pub = storePublisher{cfg.Store}
	}
	return w, nil
}

// Store returns the worker's store, nil without one.
func (w *Worker) Store() Store { return w.reg }

// Ready is closed once Run has subscribed and the server has confirmed the
// subscriptions.
func (w *Worker) Ready() <-chan struct{} { return w.ready }

// Run subscribes, serves until ctx is done, then shuts down gracefully: it
// stops the admin service, unsubscribes, applies what was already queued and
// flushes replies and events. It returns nil after a clean shutdown. Run may
// be called once.
func (w *Worker) Run(ctx context.Context) error {
	w.subsMu.Lock()
	if w.ran {
		w.subsMu.Unlock()
		return errors.New("bus: Worker.Run called twice")
	}
	w.ran = true
	w.subsMu.Unlock()

	if err := w.restore(ctx); err != nil {
		close(w.stopping)
		w.closeOutputs()
		return err
	}
	w.status = w.nc.StatusChanged(nats.CONNECTED, nats.DISCONNECTED, nats.RECONNECTING, nats.CLOSED)
	w.reconnects = w.nc.Stats().Reconnects
	defer w.nc.RemoveStatusListener(w.status)
	svc, err := w.start()
	if err != nil {
		close(w.stopping)
		w.unsubscribe()
		w.closeOutputs()
		return err
	}
	w.timer = time.NewTimer(time.Hour)
	w.timer.Stop()
	defer w.timer.Stop()
	summary := time.NewTicker(w.cfg.SummaryInterval)
	defer summary.Stop()
	var lost <-chan int
	if w.reg != nil {
		lost = w.reg.Lost()
	}
	w.publishGauges()
	if w.cfg.Router == nil {
		w.warm.trustFrom(w.now()) // subscribed: every heartbeat is seen from here
	}
	w.rearm() // restored backends are due with no message arriving
	close(w.ready)
	go w.checkAlone()
	w.log.Info("worker ready", "prefix", w.subj.Prefix(), "default_timeout", w.defTO, "max_timeout", w.cfg.MaxTimeout)

	for {
		select {
		case m := <-w.msgs:
			w.handle(m)
			w.handleQueued(batchSize)
			w.lastIn = w.now()
		case <-w.timer.C:
			w.armed = false
			w.fire()
		case call := <-w.calls:
			call()
		case <-summary.C:
			w.summary.flush(w.cfg.SummaryInterval)
			w.warm.sweep(w.now(), w.cfg.MaxTimeout)
		case p := <-lost:
			w.lose(p)
		case st := <-w.status:
			if err := w.onStatus(st); err != nil {
				w.log.Error("NATS connection closed; stopping", "error", err)
				_ = w.shutdown(svc)
				return err
			}
		case <-ctx.Done():
			return w.shutdown(svc)
		}
		w.publishGauges()
		w.rearm()
	}
}
