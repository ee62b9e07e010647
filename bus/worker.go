package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
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
	// Version is the admin service's semantic version (default "0.0.0").
	Version string
	// Logger receives the worker's logs (default: discard).
	Logger *slog.Logger
	// Now is the worker's clock (default time.Now). Its readings must carry
	// a monotonic component in production.
	Now func() time.Time
	// Registry, when set, keeps tracked backends across restarts (see
	// OpenKVRegistry); Run loads it before serving. Nil: memory only.
	Registry Registry
	// Stream, when set, publishes quiesce events through JetStream with
	// acknowledgement (see OpenQuiesceStream). Nil: core NATS publish.
	Stream *QuiesceStream
	// Observer, when set, is told of every quiesce event published, for
	// metrics. Counters are in Stats.
	Observer Observer
	// ShutdownTimeout bounds Run's graceful shutdown after ctx is done:
	// draining subscriptions, flushing, and closing the stream and registry
	// (default DefaultShutdownTimeout).
	ShutdownTimeout time.Duration
	// OutageDetection bounds how long a dead connection can go unnoticed
	// (the client's ping interval times its allowed outstanding pings,
	// plus one). An outage is taken to have begun at the last message
	// received, but no earlier than OutageDetection before it was
	// noticed. Zero: it began when it was noticed.
	OutageDetection time.Duration
}

// Observer receives the worker's decisions as they happen. Its methods run on
// the worker loop: they must be quick and must not block.
type Observer interface {
	// Quiesced is called for each quiesce event published. lateness is the
	// publish time minus the backend's deadline for a first idle_timeout
	// emission, and zero for forced drains and redeliveries.
	Quiesced(d coordinator.Due, lateness time.Duration)
}

// generationBlock is how far ahead the worker reserves generations in the
// registry's high-water mark, so ids are never reused after a crash.
const generationBlock = 1 << 16

// Worker connects a coordinator.Coordinator to NATS: it applies heartbeats
// and state reports, publishes quiesce events when the coordinator finds a
// backend idle, and serves the admin service. One goroutine, the one running
// Run, owns the coordinator.
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
	stats    counters
	rl       rateLog
	buf      []byte            // scratch for replies, owned by the loop
	due      []coordinator.Due // scratch for CollectDue, owned by the loop
	// ev is the loop's scratch for quiesce events published on core NATS.
	ev struct {
		msg  nats.Msg
		id   [1]string // the Nats-Msg-Id header's values
		body []byte
	}

	timer   *time.Timer
	armed   bool
	armedAt time.Time

	reg        Registry
	hwm        uint64 // generation high-water mark last given to reg
	status     chan nats.Status
	paused     bool // disconnected from NATS: no quiesce decisions
	pausedAt   time.Time
	lastIn     time.Time // when the loop last took a message
	reconnects uint64    // the connection's reconnect count at the last look

	subsMu sync.Mutex
	subs   []*nats.Subscription
	ran    bool
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
		reg:      cfg.Registry,
	}
	return w, nil
}

// Ready is closed once Run has subscribed and the server has confirmed the
// subscriptions.
func (w *Worker) Ready() <-chan struct{} { return w.ready }

// Stats returns a snapshot of the worker's counters. It is safe to call from
// any goroutine.
func (w *Worker) Stats() Stats {
	s := Stats{
		Heartbeats:     w.stats.heartbeats.Load(),
		StateReports:   w.stats.stateReports.Load(),
		PublishErrors:  w.stats.publishErrors.Load(),
		Quiesces:       make(map[string]uint64),
		Rejected:       make(map[string]uint64),
		Dropped:        w.stats.dropped.Load(),
		Running:        w.stats.running.Load(),
		Draining:       w.stats.draining.Load(),
		Quiesced:       w.stats.quiesced.Load(),
		Unacknowledged: w.stats.unacked.Load(),
		Redeliveries:   w.stats.redeliveries.Load(),
		Restored:       w.stats.restored.Load(),
		Outages:        w.stats.outages.Load(),
		OutageSeconds:  time.Duration(w.stats.outageNanos.Load()).Seconds(),
	}
	for _, r := range reasons() {
		s.Quiesces[r.String()] = w.stats.quiesces[r].Load()
	}
	for r := range numRejects {
		s.Rejected[r.String()] = w.stats.rejected[r].Load()
	}
	if w.cfg.Stream != nil {
		s.StreamFailures, s.StreamAbandoned = w.cfg.Stream.Stats()
	}
	if r, ok := w.reg.(interface{ Writes() (ok, failed uint64) }); ok {
		_, s.RegistryWriteFailures = r.Writes()
	}
	w.subsMu.Lock()
	for _, sub := range w.subs {
		if n, err := sub.Dropped(); err == nil && n > 0 {
			s.Dropped += uint64(n)
		}
	}
	w.subsMu.Unlock()
	return s
}

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
		w.closeOutputs()
		return err
	}
	w.status = w.nc.StatusChanged(nats.CONNECTED, nats.DISCONNECTED, nats.RECONNECTING, nats.CLOSED)
	w.reconnects = w.nc.Stats().Reconnects
	defer w.nc.RemoveStatusListener(w.status)
	svc, err := w.start()
	if err != nil {
		w.unsubscribe()
		w.closeOutputs()
		return err
	}
	w.timer = time.NewTimer(time.Hour)
	w.timer.Stop()
	defer w.timer.Stop()
	w.publishGauges()
	close(w.ready)
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

// start subscribes the data subjects and starts the admin service.
func (w *Worker) start() (micro.Service, error) {
	for _, subject := range []string{w.subj.Activity(">"), w.subj.State(">")} {
		sub, err := w.nc.ChanSubscribe(subject, w.msgs)
		if err != nil {
			return nil, fmt.Errorf("bus: subscribe %s: %w", subject, err)
		}
		w.subsMu.Lock()
		w.subs = append(w.subs, sub)
		w.subsMu.Unlock()
	}
	svc, err := micro.AddService(w.nc, micro.Config{
		Name:         ServiceName,
		Version:      w.cfg.Version,
		Description:  "Decides when backends are idle and asks their brokers to drain them.",
		StatsHandler: func(*micro.Endpoint) any { return w.Stats() },
	})
	if err != nil {
		return nil, fmt.Errorf("bus: admin service: %w", err)
	}
	g := svc.AddGroup(w.subj.AdminGroup())
	for name, h := range map[string]micro.HandlerFunc{
		"list": w.adminList, "quiesce": w.adminQuiesce, "get": w.adminGet,
	} {
		if err := g.AddEndpoint(name, h); err != nil {
			_ = svc.Stop()
			return nil, fmt.Errorf("bus: admin endpoint %s: %w", name, err)
		}
	}
	if err := w.nc.FlushTimeout(5 * time.Second); err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("bus: confirming subscriptions: %w", err)
	}
	return svc, nil
}

// unsubscribe drops the subscriptions at once, when start fails.
func (w *Worker) unsubscribe() {
	w.subsMu.Lock()
	defer w.subsMu.Unlock()
	for _, sub := range w.subs {
		_ = sub.Unsubscribe()
	}
	w.subs = nil
}

func (w *Worker) shutdown(svc micro.Service) error {
	close(w.stopping)
	if err := svc.Stop(); err != nil {
		w.log.Warn("stopping admin service", "error", err)
	}
	// One budget for the whole shutdown: draining takes at most half,
	// flushing and the outputs share what is left.
	deadline := time.Now().Add(w.cfg.ShutdownTimeout)
	n := w.drainSubscriptions(w.cfg.ShutdownTimeout / 2)
	if err := w.nc.FlushTimeout(max(time.Until(deadline)/3, 10*time.Millisecond)); err != nil {
		w.log.Warn("final flush", "error", err)
	}
	w.closeOutputsBy(deadline)
	w.publishGauges()
	w.log.Info("worker stopped", "applied_after_stop", n, "backends", w.coord.Len())
	return nil
}

// drainSubscriptions drains the data subscriptions: the server stops
// routing to them, and every message it routed before is applied here. (A
// plain Unsubscribe would make the client drop messages still in flight.)
// It returns how many messages it applied and gives up after timeout.
func (w *Worker) drainSubscriptions(timeout time.Duration) int {
	w.subsMu.Lock()
	subs := w.subs
	w.subs = nil
	w.subsMu.Unlock()
	var closed []<-chan nats.SubStatus
	for _, sub := range subs {
		if n, err := sub.Dropped(); err == nil && n > 0 {
			w.stats.dropped.Add(uint64(n))
		}
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

func (w *Worker) publishGauges() {
	w.stats.running.Store(int64(w.coord.Count(coordinator.Running)))
	w.stats.draining.Store(int64(w.coord.Count(coordinator.Draining)))
	w.stats.quiesced.Store(int64(w.coord.Count(coordinator.Quiesced)))
	w.stats.unacked.Store(int64(w.coord.Unacknowledged()))
}

// closeOutputs waits, bounded, for the stream's acknowledgements and the
// registry's writes.
func (w *Worker) closeOutputs() { w.closeOutputsBy(time.Now().Add(w.cfg.ShutdownTimeout / 2)) }

// closeOutputsBy is closeOutputs with a deadline.
func (w *Worker) closeOutputsBy(deadline time.Time) {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if w.cfg.Stream != nil {
		if err := w.cfg.Stream.Close(ctx); err != nil {
			w.log.Warn("closing quiesce stream", "error", err)
		}
	}
	if w.reg != nil {
		if err := w.reg.Close(ctx); err != nil {
			w.log.Warn("closing registry", "error", err)
		}
	}
}

// restore loads the registry into the coordinator before the worker serves.
func (w *Worker) restore(ctx context.Context) error {
	if w.reg == nil {
		return nil
	}
	st, err := w.reg.Load(ctx)
	if err != nil {
		return err
	}
	now := w.now()
	restored := 0
	for _, rec := range st.Records {
		if err := w.coord.Restore(rec, now); err != nil {
			w.log.Warn("registry record not restored", "backend", rec.Key, "error", err)
			continue
		}
		restored++
	}
	w.coord.SetGenerationFloor(st.HighWater)
	w.incarn = st.ID
	w.hwm = w.coord.Generation() + generationBlock
	// Stored before any id of this run is used, so a crash right after
	// start cannot hand out a generation twice.
	if err := w.reg.StoreHighWater(ctx, w.hwm); err != nil {
		return err
	}
	w.stats.restored.Store(int64(restored))
	w.log.Info("registry loaded", "restored", restored, "skipped", st.Skipped,
		"running", w.coord.Count(coordinator.Running), "draining", w.coord.Count(coordinator.Draining),
		"quiesced", w.coord.Count(coordinator.Quiesced))
	return nil
}

// putRecord queues key's record for the registry.
func (w *Worker) putRecord(key string) {
	if rec, ok := w.coord.Record(key); ok {
		w.reg.Put(rec)
	}
}

// keepHighWater moves the stored generation high-water mark ahead of the
// generations in use, half a block early.
func (w *Worker) keepHighWater() {
	if g := w.coord.Generation(); g+generationBlock/2 > w.hwm {
		w.hwm = g + generationBlock
		w.reg.SetHighWater(w.hwm)
	}
}

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
		w.coord.Extend(outage)
		w.stats.outages.Add(1)
		w.stats.outageNanos.Add(int64(outage))
		w.log.Warn("NATS connection back; deadlines extended by the outage", "outage", outage.Round(time.Millisecond))
	}
	return nil
}

// rearm points the single timer at the coordinator's next deadline.
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
	if w.armed && dl.Equal(w.armedAt) {
		return
	}
	w.timer.Reset(dl.Sub(w.now()))
	w.armed, w.armedAt = true, dl
}

// fire publishes a quiesce for every backend due now.
func (w *Worker) fire() {
	if w.paused {
		return
	}
	now := w.now()
	w.due = w.coord.AppendDue(w.due[:0], now)
	for _, d := range w.due {
		w.emit(d, now)
	}
	clear(w.due) // keep no key alive
}

// eventID names one emission: the worker's incarnation and the running
// period's generation, which the coordinator never reuses.
func (w *Worker) eventID(gen uint64) string {
	b := make([]byte, 0, 64) // on the stack: one allocation, the string
	b = append(append(b, w.incarn...), '-')
	return string(strconv.AppendUint(b, gen, 10))
}

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
	if w.cfg.Stream != nil {
		// The stream keeps the message until it is acknowledged.
		w.cfg.Stream.Publish(&nats.Msg{
			Subject: w.subj.Quiesce(d.Key),
			Data:    ev.AppendJSON(make([]byte, 0, 192)),
			Header:  nats.Header{HeaderMsgID: []string{ev.ID}},
		})
	} else if err := w.publishEvent(w.subj.Quiesce(d.Key), &ev); err != nil {
		w.stats.publishErrors.Add(1)
		w.log.Error("publish quiesce", "backend", d.Key, "id", ev.ID, "error", err)
	}
	// The registry write is queued after the publish on the same
	// connection, so a stored "draining" never precedes its event.
	if d.Attempt <= 1 && w.reg != nil {
		w.putRecord(d.Key)
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
	if w.log.Enabled(context.Background(), slog.LevelDebug) {
		w.log.Debug("quiesce", "backend", d.Key, "id", ev.ID, "reason", ev.Reason, "idle_for", d.IdleFor)
	}
}

// publishEvent publishes ev on core NATS through the loop's scratch message:
// PublishMsg copies subject, header and body into the connection's buffer
// before it returns, so nothing of it need outlive the call.
func (w *Worker) publishEvent(subject string, ev *QuiesceEvent) error {
	m := &w.ev.msg
	if m.Header == nil {
		m.Header = nats.Header{HeaderMsgID: w.ev.id[:]}
	}
	w.ev.id[0] = ev.ID
	w.ev.body = ev.AppendJSON(w.ev.body[:0])
	m.Subject, m.Data = subject, w.ev.body
	return w.nc.PublishMsg(m)
}

func (w *Worker) handle(m *nats.Msg) {
	if key, ok := w.subj.ActivityKey(m.Subject); ok {
		w.onActivity(key, m)
		return
	}
	if key, ok := w.subj.StateKey(m.Subject); ok {
		w.onState(key, m)
	}
}

// admit checks what heartbeats and state reports share, the key and the body
// size, and rejects the message when either is bad.
func (w *Worker) admit(key string, m *nats.Msg) bool {
	if err := ValidateKey(key); err != nil {
		w.reject(m, rejectBadKey, err)
		return false
	}
	if len(m.Data) > w.cfg.MaxBody {
		w.reject(m, rejectBadPayload, fmt.Errorf("%w: body of %d bytes exceeds %d", ErrBadPayload, len(m.Data), w.cfg.MaxBody))
		return false
	}
	return true
}

func (w *Worker) onActivity(key string, m *nats.Msg) {
	if !w.admit(key, m) {
		return
	}
	hb, err := ParseHeartbeat(m.Data)
	if err != nil {
		r := rejectBadPayload
		if errors.Is(err, errTimeoutOverflow) {
			r = rejectTimeoutTooLarge
		}
		w.reject(m, r, err)
		return
	}
	timeout := w.defTO
	if hb.HasTimeout {
		if hb.Timeout > w.cfg.MaxTimeout {
			w.reject(m, rejectTimeoutTooLarge, fmt.Errorf("%w: idle_timeout_ms %d exceeds the maximum %d",
				ErrBadPayload, hb.Timeout.Milliseconds(), w.cfg.MaxTimeout.Milliseconds()))
			return
		}
		timeout = coordinator.ClampTimeout(hb.Timeout)
	}
	ch, err := w.coord.MarkActivityWithTimeout(key, w.now(), timeout)
	if err != nil {
		w.reject(m, rejectFull, fmt.Errorf("%w: %d backends tracked", ErrFull, w.coord.Len()))
		return
	}
	if ch != 0 && w.reg != nil {
		w.putRecord(key)
		w.keepHighWater()
	}
	w.stats.heartbeats.Add(1)
	if m.Reply != "" {
		w.buf = appendHeartbeatReply(w.buf[:0], key, timeout)
		w.respond(m.Reply, w.buf)
	}
}

func (w *Worker) onState(key string, m *nats.Msg) {
	if !w.admit(key, m) {
		return
	}
	rep, err := ParseStateReport(m.Data)
	if err != nil {
		w.reject(m, rejectBadPayload, err)
		return
	}
	var known bool
	switch rep.State {
	case StateDraining:
		known = w.coord.MarkDraining(key)
	case StateQuiesced:
		known = w.coord.MarkQuiesced(key)
	case StateRemoved:
		known = w.coord.Remove(key)
	}
	if !known {
		w.reject(m, rejectUnknownBackend, unknownBackend(key))
		return
	}
	w.stats.stateReports.Add(1)
	if w.reg != nil {
		if rep.State == StateRemoved {
			w.reg.Delete(key)
		} else {
			w.putRecord(key)
		}
	}
	if m.Reply != "" {
		b, _ := json.Marshal(StateReply{OK: true, Key: key, State: rep.State})
		w.respond(m.Reply, b)
	}
}

// unknownBackend is the error for a key the worker does not track.
func unknownBackend(key string) error {
	return fmt.Errorf("%w: %q is not tracked", ErrUnknownBackend, key)
}

func (w *Worker) reject(m *nats.Msg, r rejectReason, err error) {
	w.stats.rejected[r].Add(1)
	w.rl.log(w.now(), r, m.Subject, err)
	if m.Reply != "" {
		w.respond(m.Reply, errorReply(err))
	}
}

func (w *Worker) respond(reply string, data []byte) {
	if err := w.nc.Publish(reply, data); err != nil {
		w.stats.publishErrors.Add(1)
		w.log.Warn("reply", "subject", reply, "error", err)
	}
}

// do runs f on the loop goroutine and waits for it.
func (w *Worker) do(f func()) error {
	done := make(chan struct{})
	select {
	case w.calls <- func() { f(); close(done) }:
		<-done
		return nil
	case <-w.stopping:
		return ErrShuttingDown
	}
}

func (w *Worker) adminError(req micro.Request, code string, r rejectReason, err error) {
	if r >= 0 {
		w.stats.rejected[r].Add(1)
	}
	if rerr := req.Error(code, err.Error(), errorReply(err)); rerr != nil {
		w.log.Warn("admin reply", "error", rerr)
	}
}

func (w *Worker) adminReply(req micro.Request, v any) {
	b, err := json.Marshal(v)
	if err == nil && int64(len(b)) > w.nc.MaxPayload() {
		err = fmt.Errorf("bus: reply of %d bytes exceeds the server's max payload; narrow match or lower limit", len(b))
	}
	if err != nil {
		w.adminError(req, "500", -1, err)
		return
	}
	if rerr := req.Respond(b); rerr != nil {
		w.log.Warn("admin reply", "error", rerr)
	}
}

func info(b coordinator.Backend) BackendInfo {
	return BackendInfo{Key: b.Key, State: b.State.String(), IdleForMS: b.IdleFor.Milliseconds(),
		IdleTimeoutMS: b.IdleTimeout.Milliseconds(), Attempts: b.Attempts}
}

func (w *Worker) adminList(req micro.Request) {
	lr, pat, err := ParseListRequest(req.Data())
	if err != nil {
		w.adminError(req, "400", rejectBadRequest, err)
		return
	}
	reply := ListReply{OK: true, Backends: []BackendInfo{}}
	err = w.do(func() {
		bs, total := w.coord.List(w.now(), pat.Match, lr.Limit)
		for _, b := range bs {
			reply.Backends = append(reply.Backends, info(b))
		}
		reply.Total, reply.Truncated = total, total > len(bs)
		reply.Unacknowledged = w.coord.Unacknowledged()
	})
	if err != nil {
		w.adminError(req, "503", -1, err)
		return
	}
	w.adminReply(req, reply)
}

func (w *Worker) adminGet(req micro.Request) {
	key, err := ParseGetRequest(req.Data())
	if err != nil {
		w.adminError(req, "400", rejectBadRequest, err)
		return
	}
	var b coordinator.Backend
	var found bool
	if err := w.do(func() { b, found = w.coord.Get(key, w.now()) }); err != nil {
		w.adminError(req, "503", -1, err)
		return
	}
	if !found {
		w.adminError(req, "404", rejectUnknownBackend, unknownBackend(key))
		return
	}
	w.adminReply(req, GetReply{OK: true, Backend: info(b)})
}

func (w *Worker) adminQuiesce(req micro.Request) {
	pat, reason, err := ParseQuiesceRequest(req.Data())
	if err != nil {
		w.adminError(req, "400", rejectBadRequest, err)
		return
	}
	var n int
	err = w.do(func() {
		now := w.now()
		var due []coordinator.Due
		if pat.Literal() {
			if d, ok := w.coord.Quiesce(pat.String(), now, reason); ok {
				due = append(due, d)
			}
		} else {
			due = w.coord.QuiesceMatching(now, reason, pat.Match)
		}
		for _, d := range due {
			w.emit(d, now)
		}
		n = len(due)
		if n > 0 {
			w.log.Info("forced quiesce", "match", pat.String(), "reason", reason.String(), "quiesced", n)
		}
	})
	if err != nil {
		w.adminError(req, "503", -1, err)
		return
	}
	w.adminReply(req, QuiesceReply{OK: true, Quiesced: n})
}
