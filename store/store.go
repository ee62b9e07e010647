package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/internal/lograte"
)

// Sentinel errors; errors of this package wrap one of them or a NATS error.
var (
	// ErrNoJetStream: the server does not offer JetStream to this account.
	ErrNoJetStream = errors.New("store: JetStream not available")
	// ErrPartitions: the stream was set up with another partition count.
	ErrPartitions = errors.New("store: partition count differs from the stored one")
	// ErrFenced: another worker claimed the partition; the server refused
	// this worker's write.
	ErrFenced = errors.New("store: partition claimed by another worker")
	// ErrNotOwner: this worker holds no claim on the key's partition.
	ErrNotOwner = errors.New("store: partition not claimed by this worker")
	// ErrClosed: the store is closed.
	ErrClosed = errors.New("store: closed")
	// ErrV1Registry: a v1 registry bucket was found but cannot be migrated.
	ErrV1Registry = errors.New("store: v1 registry bucket")
)

// DefaultPartitions is the partition count of a new stream.
const DefaultPartitions = 64

// Config describes the store of one prefix.
type Config struct {
	// Stream is the stream's name (default DefaultStreamName).
	Stream string
	// Partitions is the partition count (default DefaultPartitions). A
	// stream keeps the count it was created with: Open refuses another
	// with ErrPartitions.
	Partitions int
	// Replicas is the stream's replica count (default 1).
	Replicas int
	// Duplicates and MaxAge: see DefaultDuplicates, DefaultMaxAge.
	Duplicates time.Duration
	MaxAge     time.Duration
	// V1Bucket is the v1 registry bucket to migrate from (default
	// V1RegistryBucket).
	V1Bucket string
	// Worker names this worker in its claims (default: a random id).
	Worker string
	// Logger receives the store's logs (default: none).
	Logger *slog.Logger
}

// Tuning. Each constant says what it trades.
const (
	// flushEvery is how long a partition's changes wait to be written
	// together: the first heartbeat's reply waits for its record, so this
	// is most of the reply's added latency, and it sets the log's message
	// rate (at most 64 partitions / 2 ms = 32k messages/s).
	flushEvery = 2 * time.Millisecond
	// flushBytes writes a partition's log at once when it holds this much.
	flushBytes = 32 << 10
	// maxInflight bounds unacknowledged writes; beyond it, writes queue in
	// the store (never blocking the worker loop).
	maxInflight = 1 << 16
	// ackWait is how long a write waits for its acknowledgement before it
	// is sent again (with the same Nats-Msg-Id where it has one).
	ackWait = 2 * time.Second
	// firstRetry and maxRetry bound the backoff of a failed write.
	firstRetry = 10 * time.Millisecond
	maxRetry   = 640 * time.Millisecond
)

// Store is the worker's durable state on one JetStream stream: it
// implements bus.Store. See docs/design.md for the layout.
type Store struct {
	nc    *nats.Conn
	js    jetstream.JetStream
	cfg   Config
	l     layout
	log   *slog.Logger
	why   *lograte.Limiter
	inbox string // acknowledgements arrive on inbox.<n>
	run   string // this process's token in re-sent events' Nats-Msg-Id
	sub   *nats.Subscription
	wake  chan struct{}
	lost  chan int // partitions lost to another worker\'s claim
	stop  chan struct{}
	done  chan struct{}

	mu       sync.Mutex
	closing  bool // Close has begun: no new snapshot starts
	closed   bool
	parts    []*part
	inflight map[uint64]*write
	next     uint64    // the next acknowledgement number
	backlog  []*write  // waiting for room in the window
	retries  []*write  // failed, waiting for their retry time
	sweepAt  time.Time // when to look for unacknowledged writes next
	lastSeq  uint64    // the highest stream sequence acknowledged
	stream   jetstream.Stream
	purges   sync.WaitGroup // purges in flight; Close waits for them
	pre      []*prefetched  // what Prefetch read, by partition; used once
	idle     *sync.Cond

	written, failed, fenced atomic.Uint64
}

// Open checks that the server offers JetStream (an error wrapping
// ErrNoJetStream when it does not) and creates the stream or updates it in
// place (a v1 IDLE_QUIESCE keeps its events and consumers). Load then
// claims every partition and reads what the stream holds.
func Open(ctx context.Context, nc *nats.Conn, subjects bus.Subjects, cfg Config) (*Store, error) {
	if cfg.Stream == "" {
		cfg.Stream = DefaultStreamName
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = DefaultPartitions
	}
	if cfg.Duplicates <= 0 {
		cfg.Duplicates = DefaultDuplicates
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = DefaultMaxAge
	}
	if cfg.V1Bucket == "" {
		cfg.V1Bucket = V1RegistryBucket
	}
	if cfg.Worker == "" {
		cfg.Worker = nuid.Next()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := CheckJetStream(ctx, nc); err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	s := &Store{
		nc: nc, js: js, cfg: cfg, l: newLayout(subjects),
		log:      cfg.Logger.With("component", "store"),
		why:      lograte.New(time.Second, nil),
		inbox:    nc.NewRespInbox(),
		run:      nuid.Next(), // per Store: a reopened store in one process must not repeat it
		wake:     make(chan struct{}, 1),
		lost:     make(chan int, cfg.Partitions),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		inflight: make(map[uint64]*write),
	}
	s.idle = sync.NewCond(&s.mu)
	s.parts = make([]*part, cfg.Partitions)
	for p := range s.parts {
		s.parts[p] = &part{recs: make(map[string]value)}
	}
	scfg := s.l.streamConfig(cfg.Stream, cfg.Replicas, cfg.Duplicates, cfg.MaxAge)
	if s.stream, err = ensureStream(ctx, js, scfg); err != nil {
		return nil, fmt.Errorf("store: stream %q: %w", cfg.Stream, err)
	}
	// Acknowledgements: one subscription for every write, on an inbox of
	// the connection's own prefix.
	s.inbox = strings.TrimSuffix(s.inbox, ".") + "."
	sub, err := nc.Subscribe(s.inbox+"*", s.onAck)
	if err != nil {
		return nil, fmt.Errorf("store: acknowledgement subscription: %w", err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("store: acknowledgement subscription: %w", err)
	}
	s.sub = sub
	go s.flusher()
	return s, nil
}

// streamTry bounds one attempt to create or update the stream: on a
// cluster, an update that arrives while another worker's create of the
// same stream is in flight gets no answer (nats-server 2.15.2), so workers
// started together try again.
const streamTry = 2 * time.Second

// ensureStream creates the stream, or updates it in place when it exists,
// trying again until ctx ends.
func ensureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	for {
		tctx, cancel := context.WithTimeout(ctx, streamTry)
		str, err := js.CreateStream(tctx, cfg)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			str, err = js.UpdateStream(tctx, cfg)
		}
		cancel()
		if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return str, err
		}
	}
}

// CheckJetStream reports whether the server behind nc offers JetStream to
// this account: nil, an error wrapping ErrNoJetStream, or another failure
// as it is.
func CheckJetStream(ctx context.Context, nc *nats.Conn) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if _, err := js.AccountInfo(ctx); err != nil {
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) || errors.Is(err, nats.ErrNoResponders) {
			return fmt.Errorf("%w: %w", ErrNoJetStream, err)
		}
		return fmt.Errorf("store: JetStream account info: %w", err)
	}
	return nil
}

// Counters implements bus.Store.
func (s *Store) Counters() bus.StoreCounters {
	return bus.StoreCounters{Written: s.written.Load(), Failed: s.failed.Load(), Fenced: s.fenced.Load()}
}

// Lost implements bus.Store: it receives each partition another worker's
// claim took from this one, once per loss.
func (s *Store) Lost() <-chan int { return s.lost }

// Partitions returns the partition count.
func (s *Store) Partitions() int { return s.cfg.Partitions }

// Close writes what is pending, snapshots the partitions with a log since
// their last snapshot (so the next start reads snapshots only), and waits,
// bounded by ctx, for every write to be acknowledged; then it stops.
// Writes after Close are dropped.
func (s *Store) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed || s.closing {
		s.mu.Unlock()
		return nil
	}
	s.closing = true
	s.flushAll(time.Now())
	for pi, p := range s.parts {
		if p.written > 0 && !p.snap.running && !p.lost && p.token != 0 && p.retrying == 0 {
			s.startSnapshot(pi)
		}
	}
	s.mu.Unlock()
	stopWait := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		s.idle.Broadcast()
		s.mu.Unlock()
	})
	defer stopWait()
	s.mu.Lock()
	for (len(s.inflight) > 0 || len(s.backlog) > 0 || len(s.retries) > 0 || s.snapshotting()) && ctx.Err() == nil {
		s.idle.Wait()
	}
	left := len(s.inflight) + len(s.backlog) + len(s.retries)
	s.closed = true
	s.mu.Unlock()
	purged := make(chan struct{})
	go func() { s.purges.Wait(); close(purged) }()
	select {
	case <-purged:
	case <-ctx.Done():
	}
	close(s.stop)
	<-s.done
	_ = s.sub.Unsubscribe()
	if left > 0 {
		return fmt.Errorf("store: closed with %d writes unacknowledged: %w", left, ctx.Err())
	}
	return nil
}

// snapshotting says whether a snapshot is being written. Under Store.mu.
func (s *Store) snapshotting() bool {
	for _, p := range s.parts {
		if p.snap.running {
			return true
		}
	}
	return false
}

// compile-time check
var _ bus.Store = (*Store)(nil)

// value is a record as a partition keeps it, the key aside: 24 bytes, the
// lsn sharing its word with the state and the reason (a million backends'
// values cost the store about 40 bytes each with the map's slot).
type value struct {
	timeout time.Duration
	gen     uint64
	tag     uint64 // lsn | state<<60 | reason<<62
}

const (
	tagStateShift  = 60
	tagReasonShift = 62
	tagLSNMask     = 1<<tagStateShift - 1
)

func (v value) lsn() uint64                { return v.tag & tagLSNMask }
func (v value) state() coordinator.State   { return coordinator.State(v.tag >> tagStateShift & 3) }
func (v value) reason() coordinator.Reason { return coordinator.Reason(v.tag >> tagReasonShift) }
func (v value) tombstone() bool            { return v.state() == 0 }
func tombstone(lsn uint64) value           { return value{tag: lsn} }

func (v value) record(key string) coordinator.Record {
	return coordinator.Record{Key: key, IdleTimeout: v.timeout, State: v.state(), Generation: v.gen, Reason: v.reason()}
}

// valueOf packs rec numbered lsn. lsn < 2^60 (maxLSN), the state and the
// reason < 4 (coordinator has three of each).
func valueOf(rec *coordinator.Record, lsn uint64) value {
	return value{timeout: rec.IdleTimeout, gen: rec.Generation,
		tag: lsn&tagLSNMask | uint64(rec.State&3)<<tagStateShift | uint64(rec.Reason&3)<<tagReasonShift}
}
