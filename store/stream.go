package store

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/internal/lograte"
)

// Defaults of StreamConfig.
const (
	DefaultStreamName       = "IDLE_QUIESCE"
	DefaultStreamDuplicates = 2 * time.Minute
	DefaultStreamMaxAge     = 24 * time.Hour
	DefaultStreamMaxBytes   = 1 << 30
)

// StreamConfig describes the JetStream stream that stores quiesce events so
// an offline broker can catch up with a durable consumer.
type StreamConfig struct {
	Name       string        // default DefaultStreamName
	Duplicates time.Duration // de-duplication window on Nats-Msg-Id
	MaxAge     time.Duration
	MaxBytes   int64
}

// maxPublishTries bounds how often one event is re-published after a failed
// acknowledgement (over about 8 s with the backoff below); beyond it,
// redelivery (Policy.RetryInterval) takes over.
const maxPublishTries = 16

// Retry backoff: a failed event is re-published after firstRetry, doubling
// with each failure of the same event up to maxRetryWait. Every event
// waiting is re-published together, so a burst of failures costs one wait,
// not one wait per event.
const (
	firstRetry   = 10 * time.Millisecond
	maxRetryWait = 640 * time.Millisecond
)

// QuiesceStream is a bus.Publisher: it publishes quiesce events through JetStream with
// acknowledgement, retrying failed ones with backoff. Core NATS subscribers
// of P.quiesce.> receive every publish, the stream stores each id once.
type QuiesceStream struct {
	js      jetstream.JetStream
	log     *slog.Logger
	retries chan *nats.Msg
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once

	mu    sync.Mutex
	tries map[string]int // event id -> failed publishes so far
	why   *lograte.Limiter

	failed  atomic.Uint64
	dropped atomic.Uint64
}

// OpenQuiesceStream creates or updates the stream on P.quiesce.> and returns
// a publisher for it.
func OpenQuiesceStream(ctx context.Context, nc *nats.Conn, subjects bus.Subjects, cfg StreamConfig, logger *slog.Logger) (*QuiesceStream, error) {
	if cfg.Name == "" {
		cfg.Name = DefaultStreamName
	}
	if cfg.Duplicates <= 0 {
		cfg.Duplicates = DefaultStreamDuplicates
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = DefaultStreamMaxAge
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultStreamMaxBytes
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	q := &QuiesceStream{
		log:     logger.With("component", "quiesce-stream"),
		retries: make(chan *nats.Msg, 4096),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		tries:   make(map[string]int),
		why:     lograte.New(time.Second, nil),
	}
	js, err := jetstream.New(nc,
		// Room for a 50k burst: with 16384 the publisher stalled and
		// handed tens of events per burst to the retrier (idle-bench
		// -only durable: 39 failures; none at 65536, burst 0.64x -> 0.72x
		// of the store's limit).
		jetstream.WithPublishAsyncMaxPending(65536),
		jetstream.WithPublishAsyncTimeout(5*time.Second),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) { q.retry(m, err) }),
	)
	if err != nil {
		return nil, fmt.Errorf("store: quiesce stream: %w", err)
	}
	_, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        cfg.Name,
		Description: "idle-worker quiesce events",
		Subjects:    []string{subjects.Quiesce(">")},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		Duplicates:  cfg.Duplicates,
		MaxAge:      cfg.MaxAge,
		MaxBytes:    cfg.MaxBytes,
	})
	if err != nil {
		return nil, fmt.Errorf("store: quiesce stream %q: %w", cfg.Name, err)
	}
	q.js = js
	go q.retrier()
	return q, nil
}

// Publish sends ev on subject, with its id as Nats-Msg-Id, without waiting
// for the acknowledgement; a failure, now or at acknowledgement, is retried
// in the background. It never returns an error: the stream keeps the event
// until it is stored or given up to redelivery.
func (q *QuiesceStream) Publish(subject string, ev *bus.QuiesceEvent) error {
	m := &nats.Msg{
		Subject: subject,
		Data:    ev.AppendJSON(make([]byte, 0, 192)),
		Header:  nats.Header{bus.HeaderMsgID: []string{ev.ID}},
	}
	// Publish runs on the worker loop: never stall it waiting for room
	// among the outstanding acknowledgements; the retrier waits instead.
	if _, err := q.js.PublishMsgAsync(m, jetstream.WithStallWait(time.Millisecond)); err != nil {
		q.retry(m, err)
	}
	return nil
}

func (q *QuiesceStream) retry(m *nats.Msg, err error) {
	q.failed.Add(1)
	if ok, n := q.why.Allow(err.Error()); ok {
		q.log.Warn("quiesce event not stored yet; retrying", "subject", m.Subject, "error", err, "suppressed", n)
	}
	id := m.Header.Get(bus.HeaderMsgID)
	q.mu.Lock()
	if len(q.tries) > 1<<16 {
		// Ids whose retry later succeeded are never removed one by one;
		// forget them all rather than grow without bound.
		clear(q.tries)
	}
	q.tries[id]++
	n := q.tries[id]
	if n >= maxPublishTries {
		delete(q.tries, id)
	}
	q.mu.Unlock()
	if n >= maxPublishTries {
		q.dropped.Add(1)
		q.log.Error("quiesce event not stored; leaving it to redelivery", "subject", m.Subject, "id", id, "error", err)
		return
	}
	select {
	case q.retries <- m:
	default:
		q.dropped.Add(1)
		q.log.Error("quiesce retry queue full; leaving it to redelivery", "subject", m.Subject, "id", id)
	}
}

// retrier re-publishes failed events: it takes every event waiting, waits
// the backoff of the most-tried one, and publishes them all again.
func (q *QuiesceStream) retrier() {
	defer close(q.done)
	var batch []*nats.Msg
	for {
		select {
		case <-q.stop:
			return
		case m := <-q.retries:
			batch = append(batch[:0], m)
		}
		for more := true; more; {
			select {
			case m := <-q.retries:
				batch = append(batch, m)
			default:
				more = false
			}
		}
		n := 1
		q.mu.Lock()
		for _, m := range batch {
			n = max(n, q.tries[m.Header.Get(bus.HeaderMsgID)])
		}
		q.mu.Unlock()
		select {
		case <-q.stop:
			q.putBack(batch)
			return
		case <-time.After(retryWait(n)):
		}
		for _, m := range batch {
			// A fresh message: the failed one may still be referenced by
			// the publisher's bookkeeping.
			again := &nats.Msg{Subject: m.Subject, Data: m.Data, Header: m.Header}
			if _, err := q.js.PublishMsgAsync(again, jetstream.WithStallWait(firstRetry)); err != nil {
				q.retry(again, err)
			}
		}
		clear(batch)
	}
}

// retryWait is the wait before re-publishing an event that failed n times.
func retryWait(n int) time.Duration {
	return min(firstRetry<<min(max(n-1, 0), 16), maxRetryWait)
}

// putBack returns events taken for a retry to the queue when the retrier
// stops, so Close counts them.
func (q *QuiesceStream) putBack(batch []*nats.Msg) {
	for _, m := range batch {
		select {
		case q.retries <- m:
		default:
			q.dropped.Add(1)
		}
	}
}

// Counters returns the stream publisher's counters: events whose publish
// failed at least once, and events given up to redelivery.
func (q *QuiesceStream) Counters() bus.PublisherCounters {
	return bus.PublisherCounters{Failed: q.failed.Load(), Abandoned: q.dropped.Load()}
}

// Close waits, bounded by ctx, for outstanding acknowledgements and stops
// retrying.
func (q *QuiesceStream) Close(ctx context.Context) error {
	var err error
	q.once.Do(func() {
		select {
		case <-q.js.PublishAsyncComplete():
		case <-ctx.Done():
			err = fmt.Errorf("store: quiesce stream close: %w", ctx.Err())
		}
		close(q.stop)
		<-q.done
		if n := len(q.retries); n > 0 {
			// Left to redelivery after a restart: count them, say so.
			q.dropped.Add(uint64(n))
			q.log.Warn("quiesce events still waiting for a stream retry at shutdown", "events", n)
		}
	})
	return err
}
