package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// DefaultHeartbeatInterval is a Heartbeater's interval when neither an
// interval nor an idle timeout is given: a third of the worker's 30 s default.
const DefaultHeartbeatInterval = 10 * time.Second

// Heartbeater publishes heartbeats for one backend. Create it with
// NewHeartbeater and call Run in the backend's own goroutine.
type Heartbeater struct {
	nc       *nats.Conn
	subject  string
	key      string
	body     []byte
	interval time.Duration
}

// HeartbeatOption configures a Heartbeater.
type HeartbeatOption func(*Heartbeater) error

// WithInterval sets the time between heartbeats. It must be positive.
func WithInterval(d time.Duration) HeartbeatOption {
	return func(h *Heartbeater) error {
		if d <= 0 {
			return fmt.Errorf("bus: heartbeat interval %v must be positive", d)
		}
		h.interval = d
		return nil
	}
}

// WithIdleTimeout sends the backend's own idle timeout with every heartbeat
// (zero asks for the minimum, 1 ms). Without it the worker's default
// applies. Unless WithInterval is given too, the interval becomes a third of
// the timeout.
func WithIdleTimeout(d time.Duration) HeartbeatOption {
	return func(h *Heartbeater) error {
		if d < 0 {
			return fmt.Errorf("bus: idle timeout %v must not be negative", d)
		}
		h.body = []byte(`{"idle_timeout_ms":` + strconv.FormatInt(d.Milliseconds(), 10) + `}`)
		if h.interval == 0 {
			h.interval = max(d/3, time.Millisecond)
		}
		return nil
	}
}

// NewHeartbeater returns a Heartbeater for backend key on nc.
func NewHeartbeater(nc *nats.Conn, subjects Subjects, key string, opts ...HeartbeatOption) (*Heartbeater, error) {
	if nc == nil {
		return nil, errors.New("bus: NewHeartbeater: nil connection")
	}
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	if subjects.prefix == "" {
		subjects = MustSubjects(DefaultPrefix)
	}
	h := &Heartbeater{nc: nc, subject: subjects.Activity(key), key: key}
	for _, o := range opts {
		if err := o(h); err != nil {
			return nil, err
		}
	}
	if h.interval == 0 {
		h.interval = DefaultHeartbeatInterval
	}
	return h, nil
}

// Beat publishes one heartbeat without waiting for the worker.
func (h *Heartbeater) Beat() error {
	if err := h.nc.Publish(h.subject, h.body); err != nil {
		return fmt.Errorf("bus: heartbeat %s: %w", h.key, err)
	}
	return nil
}

// Check sends one heartbeat as a request and returns the worker's answer: a
// backend can call it once at start to learn that the worker accepted its
// key and timeout. A refusal wraps ErrRejected.
func (h *Heartbeater) Check(ctx context.Context) (HeartbeatReply, error) {
	msg, err := h.nc.RequestWithContext(ctx, h.subject, h.body)
	if err != nil {
		return HeartbeatReply{}, fmt.Errorf("bus: heartbeat %s: %w", h.key, err)
	}
	var r HeartbeatReply
	if err := decodeReply(msg.Data, &r); err != nil {
		return HeartbeatReply{}, fmt.Errorf("bus: heartbeat %s: %w", h.key, err)
	}
	return r, nil
}

// Run publishes a heartbeat at once and then every interval until ctx ends,
// and returns nil then. Publish errors while NATS reconnects are retried at
// the next tick; Run returns an error only when the connection is closed.
func (h *Heartbeater) Run(ctx context.Context) error {
	t := time.NewTicker(h.interval)
	defer t.Stop()
	for {
		if err := h.Beat(); errors.Is(err, nats.ErrConnectionClosed) {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// QuiesceOption configures SubscribeQuiesce.
type QuiesceOption func(*quiesceOpts)

type quiesceOpts struct {
	queue string
	onBad func(*nats.Msg, error)
}

// WithQueueGroup shares the quiesce events among subscribers in a NATS queue
// group, so each event reaches one broker of the group.
func WithQueueGroup(name string) QuiesceOption {
	return func(o *quiesceOpts) { o.queue = name }
}

// OnBadEvent is called with every message that does not decode as a
// QuiesceEvent. By default such messages are skipped.
func OnBadEvent(f func(*nats.Msg, error)) QuiesceOption {
	return func(o *quiesceOpts) { o.onBad = f }
}

// SubscribeQuiesce subscribes to the quiesce events of the backends matching
// pattern (a key, or a pattern such as "host1.>") and calls handle with each
// decoded event, on the subscription's goroutine. Unsubscribe or Drain the
// returned subscription to stop.
func SubscribeQuiesce(nc *nats.Conn, subjects Subjects, pattern string, handle func(QuiesceEvent), opts ...QuiesceOption) (*nats.Subscription, error) {
	if _, err := ParsePattern(pattern); err != nil {
		return nil, err
	}
	if subjects.prefix == "" {
		subjects = MustSubjects(DefaultPrefix)
	}
	var o quiesceOpts
	for _, opt := range opts {
		opt(&o)
	}
	cb := func(m *nats.Msg) {
		ev, err := ParseQuiesceEvent(m.Data)
		if err != nil {
			if o.onBad != nil {
				o.onBad(m, err)
			}
			return
		}
		handle(ev)
	}
	sub, err := nc.QueueSubscribe(subjects.Quiesce(pattern), o.queue, cb)
	if err != nil {
		return nil, fmt.Errorf("bus: subscribe quiesce %s: %w", pattern, err)
	}
	return sub, nil
}

// ReportState tells the worker that backend key is now state (StateDraining,
// StateQuiesced or StateRemoved) and waits for its answer. A refusal, such
// as an untracked key, wraps ErrRejected.
func ReportState(ctx context.Context, nc *nats.Conn, subjects Subjects, key, state string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if subjects.prefix == "" {
		subjects = MustSubjects(DefaultPrefix)
	}
	body, _ := json.Marshal(StateReport{State: state})
	msg, err := nc.RequestWithContext(ctx, subjects.State(key), body)
	if err != nil {
		return fmt.Errorf("bus: report state %s: %w", key, err)
	}
	var r StateReply
	if err := decodeReply(msg.Data, &r); err != nil {
		return fmt.Errorf("bus: report state %s: %w", key, err)
	}
	return nil
}

// decodeReply decodes a worker reply into v, turning {"ok":false} into an
// error wrapping ErrRejected.
func decodeReply(data []byte, v any) error {
	var e ErrorReply
	if err := json.Unmarshal(data, &e); err != nil {
		return fmt.Errorf("%w: reply: %w", ErrBadPayload, err)
	}
	if !e.OK {
		return fmt.Errorf("%w: %s", ErrRejected, e.Error)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: reply: %w", ErrBadPayload, err)
	}
	return nil
}
