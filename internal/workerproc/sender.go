package workerproc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
)

// Defaults of a SendConfig.
const (
	// DefaultRate is the requests per second a Sender aims at.
	DefaultRate = 250_000
	// DefaultWindow is the most requests left unanswered, over every
	// connection.
	DefaultWindow = 4096
	// DefaultConns is the connections a Sender sends on.
	DefaultConns = 4
	// DefaultStall is how long a Sender waits for a reply before it gives
	// up.
	DefaultStall = 30 * time.Second
	// DefaultBody asks for a 10-minute idle timeout: no backend falls due
	// during a measurement.
	DefaultBody = `{"idle_timeout_ms":600000}`
)

// Errors of a Sender's Run.
var (
	// ErrIncomplete: Run returned before every backend was answered ok.
	ErrIncomplete = errors.New("workerproc: not every heartbeat was answered")
	// ErrUsed: Run was called twice.
	ErrUsed = errors.New("workerproc: a Sender runs once")
)

// okPrefix starts every reply that accepted a heartbeat (subjects.md).
var okPrefix = []byte(`{"ok":true`)

// SendConfig says what a Sender sends. Zero values take the defaults.
type SendConfig struct {
	// URL is the NATS server to send to.
	URL string
	// Subjects are the worker's subjects (zero: prefix bus.DefaultPrefix).
	Subjects bus.Subjects
	// Keys names the backends; N of them, 0 to N-1, are sent one
	// heartbeat each.
	Keys Keys
	N    int
	// Body of every heartbeat (nil: DefaultBody).
	Body []byte
	// Rate is the requests per second over every connection (0:
	// DefaultRate; negative: as fast as the window allows).
	Rate int
	// Window is the most requests left unanswered over every connection
	// (0: DefaultWindow); each connection has an equal share.
	Window int
	// Conns is the connections to send on (0: DefaultConns); backend i
	// goes on connection i mod Conns.
	Conns int
	// Stall: Run gives up when no reply arrived for this long (0:
	// DefaultStall).
	Stall time.Duration
}

// Sender sends each of N backends one heartbeat as a request, keeping a
// window of them in flight: the replies come to one inbox subscription per
// connection (backend i's reply subject ends in i), not one goroutine per
// request. It records when each ok reply arrived.
type Sender struct {
	cfg     SendConfig
	start   time.Time      // set by Run before any reply can arrive
	replies []atomic.Int64 // 1 + nanoseconds from start to backend i's ok reply; 0: none
	ok      atomic.Int64
	refused atomic.Int64
	sent    atomic.Int64
	seen    atomic.Int64 // every reply, for the stall check
	marks   []mark
	ran     atomic.Bool

	mu           sync.Mutex
	firstRefusal string

	// finished is set by Run as it returns, under replyMu's write lock;
	// reply handlers hold the read lock, so none records anything after.
	replyMu  sync.RWMutex
	finished bool
}

// mark is a channel closed when the ok replies reach n.
type mark struct {
	n  int64
	ch chan struct{}
}

// NewSender checks cfg and fills in its defaults.
func NewSender(cfg SendConfig) (*Sender, error) {
	if cfg.Subjects.Prefix() == "" {
		cfg.Subjects = bus.MustSubjects(bus.DefaultPrefix)
	}
	if cfg.Body == nil {
		cfg.Body = []byte(DefaultBody)
	}
	if cfg.Rate == 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.Window == 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.Conns == 0 {
		cfg.Conns = DefaultConns
	}
	if cfg.Stall == 0 {
		cfg.Stall = DefaultStall
	}
	switch {
	case cfg.URL == "" || cfg.Keys.Instance == "":
		return nil, errors.New("workerproc: SendConfig needs URL and Keys")
	case cfg.N < 0 || cfg.Window < 0 || cfg.Conns < 0 || cfg.Stall < 0:
		return nil, errors.New("workerproc: SendConfig sizes must not be negative")
	case cfg.Window < cfg.Conns:
		return nil, fmt.Errorf("workerproc: window %d smaller than %d connections", cfg.Window, cfg.Conns)
	}
	return &Sender{cfg: cfg, replies: make([]atomic.Int64, cfg.N)}, nil
}

// WhenAnswered returns a channel that is closed as the n-th ok reply
// arrives (at once when n <= 0; never when n > N). Call it before Run.
func (s *Sender) WhenAnswered(n int) <-chan struct{} {
	ch := make(chan struct{})
	if n <= 0 {
		close(ch)
		return ch
	}
	s.marks = append(s.marks, mark{n: int64(n), ch: ch})
	return ch
}

// Start is when Run began sending (after connecting); ReplyAt's durations
// count from it. Read it once Run has returned or a WhenAnswered channel
// has closed.
func (s *Sender) Start() time.Time { return s.start }

// Answered returns how many ok replies have arrived so far.
func (s *Sender) Answered() int { return int(s.ok.Load()) }

// ReplyAt returns when backend i's ok reply arrived, counted from Start,
// and false when none has. Once Run has returned, it no longer changes.
func (s *Sender) ReplyAt(i int) (time.Duration, bool) {
	v := s.replies[i].Load()
	return time.Duration(v - 1), v != 0
}

// SendResult is what a Run did.
type SendResult struct {
	N int `json:"n"`
	// Sent requests; Answered of them got an ok reply, Refused an
	// ok:false one (FirstRefusal is the first such reply).
	Sent         int    `json:"sent"`
	Answered     int    `json:"answered"`
	Refused      int    `json:"refused"`
	FirstRefusal string `json:"first_refusal,omitempty"`
	// LastReply is the arrival of the last ok reply, counted from Start;
	// PerSecond is Answered over it.
	LastReply time.Duration `json:"last_reply_ns"`
	PerSecond float64       `json:"answered_per_second"`
}

// Run connects, sends every backend's heartbeat and returns when every
// one has been answered, ctx is done, a connection closed (the worker's
// server went away), or no reply came for the stall time. The result says
// what was sent and answered in every case; the error wraps ErrIncomplete
// (and the cause) unless every backend was answered ok.
func (s *Sender) Run(ctx context.Context) (SendResult, error) {
	if s.ran.Swap(true) {
		return SendResult{}, ErrUsed
	}
	cfg := s.cfg
	stop := make(chan struct{})
	var stopOnce sync.Once
	var cause error
	halt := func(err error) {
		stopOnce.Do(func() { cause = err; close(stop) })
	}
	conns := make([]*nats.Conn, cfg.Conns)
	defer func() {
		for _, nc := range conns {
			if nc != nil {
				nc.Close()
			}
		}
	}()
	for c := range conns {
		nc, err := nats.Connect(cfg.URL, nats.Name("workerproc sender "+strconv.Itoa(c)), nats.NoReconnect(),
			nats.ClosedHandler(func(*nats.Conn) { halt(fmt.Errorf("connection %d closed", c)) }))
		if err != nil {
			return SendResult{N: cfg.N}, fmt.Errorf("workerproc: sender: %w", err)
		}
		conns[c] = nc
	}
	all := make(chan struct{})
	var allOnce sync.Once
	finished := func() { allOnce.Do(func() { close(all) }) }
	if cfg.N == 0 {
		finished()
	}
	// Start is set before the subscriptions, whose delivery goroutines
	// read it: starting a goroutine orders the write before their reads.
	s.start = time.Now()
	inboxes := make([]string, cfg.Conns)
	slots := make([]chan struct{}, cfg.Conns)
	for c, nc := range conns {
		inboxes[c] = nats.NewInbox() + "."
		slots[c] = make(chan struct{}, cfg.Window/cfg.Conns)
		sub, err := nc.Subscribe(inboxes[c]+"*", s.onReply(inboxes[c], slots[c], finished))
		if err != nil {
			return SendResult{N: cfg.N}, fmt.Errorf("workerproc: sender: %w", err)
		}
		if err := sub.SetPendingLimits(-1, -1); err != nil {
			return SendResult{N: cfg.N}, fmt.Errorf("workerproc: sender: %w", err)
		}
		if err := nc.Flush(); err != nil {
			return SendResult{N: cfg.N}, fmt.Errorf("workerproc: sender: %w", err)
		}
	}
	var wg sync.WaitGroup
	for c, nc := range conns {
		wg.Go(func() {
			if err := s.publish(nc, c, inboxes[c], slots[c], stop); err != nil {
				halt(err)
			}
		})
	}
	s.wait(ctx, all, stop, halt)
	halt(nil)
	wg.Wait()
	return s.result(cause)
}

// onReply returns the handler of one connection's replies: it records ok
// replies, counts refusals and frees a slot of the window.
func (s *Sender) onReply(inbox string, slots chan struct{}, finished func()) nats.MsgHandler {
	n := int64(s.cfg.N)
	return func(m *nats.Msg) {
		at := time.Since(s.start)
		s.replyMu.RLock()
		defer s.replyMu.RUnlock()
		if s.finished {
			return
		}
		s.seen.Add(1)
		i, err := strconv.Atoi(m.Subject[len(inbox):])
		if err != nil || i < 0 || i >= s.cfg.N {
			return
		}
		if !bytes.HasPrefix(m.Data, okPrefix) {
			if s.refused.Add(1) == 1 {
				s.mu.Lock()
				s.firstRefusal = string(m.Data)
				s.mu.Unlock()
			}
		} else if s.replies[i].CompareAndSwap(0, int64(at)+1) {
			got := s.ok.Add(1)
			for _, mk := range s.marks {
				if got == mk.n {
					close(mk.ch)
				}
			}
		} else {
			return // a second reply for i: the first freed its slot
		}
		select {
		case <-slots:
		default:
		}
		if s.ok.Load()+s.refused.Load() == n {
			finished()
		}
	}
}

// publish sends connection c's backends: c, c+Conns, ... below N, paced at
// its share of the rate, each waiting for a slot of the window.
func (s *Sender) publish(nc *nats.Conn, c int, inbox string, slots chan struct{}, stop <-chan struct{}) error {
	cfg := s.cfg
	perConn := float64(cfg.Rate) / float64(cfg.Conns) // requests per second, <= 0: unpaced
	sent := 0
	for i := c; i < cfg.N; i += cfg.Conns {
		if perConn > 0 {
			due := s.start.Add(time.Duration(float64(sent) / perConn * float64(time.Second)))
			// Sleeps shorter than a millisecond cost more than they
			// pace: a connection runs at most that far ahead.
			if d := time.Until(due); d > time.Millisecond {
				select {
				case <-time.After(d):
				case <-stop:
					return nil
				}
			}
		}
		select {
		case slots <- struct{}{}:
		case <-stop:
			return nil
		}
		if err := nc.PublishRequest(cfg.Subjects.Activity(cfg.Keys.Key(i)), inbox+strconv.Itoa(i), cfg.Body); err != nil {
			return fmt.Errorf("connection %d: %w", c, err)
		}
		s.sent.Add(1)
		sent++
	}
	return nil
}

// wait returns when every backend is answered or refused, stop is closed,
// ctx is done (halting with its error), or no reply came for the stall
// time (halting with that).
func (s *Sender) wait(ctx context.Context, all, stop <-chan struct{}, halt func(error)) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	last, lastAt := s.seen.Load(), time.Now()
	for {
		select {
		case <-all:
			return
		case <-stop:
			return
		case <-ctx.Done():
			halt(ctx.Err())
			return
		case now := <-tick.C:
			if seen := s.seen.Load(); seen != last {
				last, lastAt = seen, now
			} else if now.Sub(lastAt) >= s.cfg.Stall {
				halt(fmt.Errorf("no reply for %v", s.cfg.Stall))
				return
			}
		}
	}
}

// result sums up a Run that stopped for cause (nil: it finished); no reply
// is recorded after it.
func (s *Sender) result(cause error) (SendResult, error) {
	s.replyMu.Lock()
	s.finished = true
	s.replyMu.Unlock()
	r := SendResult{N: s.cfg.N, Sent: int(s.sent.Load()), Refused: int(s.refused.Load())}
	for i := range s.replies {
		if at, ok := s.ReplyAt(i); ok {
			r.Answered++
			r.LastReply = max(r.LastReply, at)
		}
	}
	if r.LastReply > 0 {
		r.PerSecond = float64(r.Answered) / r.LastReply.Seconds()
	}
	s.mu.Lock()
	r.FirstRefusal = s.firstRefusal
	s.mu.Unlock()
	switch {
	case r.Answered == r.N:
		return r, nil
	case cause != nil:
		return r, fmt.Errorf("%w: %d of %d answered ok, %d refused: %w", ErrIncomplete, r.Answered, r.N, r.Refused, cause)
	default:
		return r, fmt.Errorf("%w: %d of %d answered ok, %d refused (first: %s)", ErrIncomplete, r.Answered, r.N, r.Refused, r.FirstRefusal)
	}
}
