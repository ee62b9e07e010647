package integration

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
)

// Cancelling Run's context stops the worker promptly and cleanly: Run returns
// nil, a heartbeat request that reached the server just before the
// cancellation is answered, and nothing serves afterwards.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	w := startWorker(t, s.ClientURL(), bus.WorkerConfig{Policy: coordinator.Policy{DefaultIdleTimeout: longTimeout}})
	nc := connect(t, s.ClientURL())
	heartbeat(t, nc, "down.before", "")
	inbox := nats.NewInbox()
	replies := subscribe(t, nc, inbox)

	if err := nc.PublishRequest(prefix+".activity.down.last", inbox, nil); err != nil {
		t.Fatalf("publish: %v", err)
	}
	// The server has routed the request to the worker once this returns.
	if err := nc.FlushTimeout(bound); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := w.stop(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("Run returned %v after cancellation", time.Since(start))

	m, err := replies.NextMsg(bound)
	if err != nil {
		t.Fatalf("reply to the heartbeat sent just before cancellation: %v", err)
	}
	var r bus.HeartbeatReply
	decodeOK(t, m, &r)
	if r.Key != "down.last" {
		t.Errorf("reply key: got %q; want down.last", r.Key)
	}
	if h := w.Stats().Heartbeats; h != 2 {
		t.Errorf("Stats().Heartbeats: got %d; want 2", h)
	}
	// Nothing serves any more.
	for _, subj := range []string{prefix + ".activity.down.last", prefix + ".state.down.last", prefix + ".admin.list"} {
		if _, err := nc.Request(subj, nil, bound); !errors.Is(err, nats.ErrNoResponders) {
			t.Errorf("request %s after shutdown: got %v; want nats.ErrNoResponders", subj, err)
		}
	}
}

// Requests that the server routed to the worker before it unsubscribed are
// answered even when the worker's connection had not read them yet when it
// cancelled. The test holds back the worker connection's reads (its writes
// flow), queues heartbeat requests at the server, cancels, and lets reads
// resume once the worker has sent the UNSUBs of its data subscriptions: the
// server delivers those requests before its answer to the worker's final
// flush, so a worker that applies "what was already queued" answers them.
func TestShutdownAnswersRequestsInFlight(t *testing.T) {
	t.Parallel()
	const n = 10
	s := startServer(t)
	gate := newReadGate()
	wnc := connect(t, s.ClientURL(), nats.SetCustomDialer(gate))
	w := startWorkerOn(t, wnc, bus.WorkerConfig{Policy: coordinator.Policy{DefaultIdleTimeout: longTimeout}})
	nc := connect(t, s.ClientURL())

	// Hold the worker's reads from the one that carries a probe on.
	gate.holdAfter(prefix+".activity.probe", prefix+".activity.>", prefix+".state.>")
	if err := nc.Publish(prefix+".activity.probe", nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, bound, func() bool { return w.Stats().Heartbeats == 1 })

	inbox := nats.NewInbox()
	replies := subscribe(t, nc, inbox)
	for i := range n {
		if err := nc.PublishRequest(fmt.Sprintf("%s.activity.inflight.%d", prefix, i), inbox, nil); err != nil {
			t.Fatal(err)
		}
	}
	// Once this returns the server has routed every request to the worker.
	if err := nc.FlushTimeout(bound); err != nil {
		t.Fatal(err)
	}
	if err := w.stop(bound); err != nil {
		t.Fatal(err)
	}
	if !gate.released() {
		t.Fatalf("the worker stopped without sending UNSUB for its data subscriptions")
	}
	for i := range n {
		m, err := replies.NextMsg(bound)
		if err != nil {
			t.Fatalf("got %d of %d replies to heartbeats the server had routed to the worker before it unsubscribed: %v", i, n, err)
		}
		var r bus.HeartbeatReply
		decodeOK(t, m, &r)
	}
	if h := w.Stats().Heartbeats; h != n+1 {
		t.Errorf("Stats().Heartbeats: got %d; want %d", h, n+1)
	}
}

// readGate is a nats.CustomDialer whose connection can hold back reads
// from the read that carries a marker on, until the client has written
// UNSUB for the subscriptions on given subjects.
type readGate struct {
	mu      sync.Mutex
	cond    *sync.Cond
	marker  string   // a read containing it engages the gate
	held    bool     // reads wait
	subs    []string // subjects whose UNSUB releases the gate
	written strings.Builder
	freed   bool
}

func newReadGate() *readGate {
	g := &readGate{}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// Dial implements nats.CustomDialer.
func (g *readGate) Dial(network, address string) (net.Conn, error) {
	c, err := net.DialTimeout(network, address, bound)
	if err != nil {
		return nil, err
	}
	return &gatedConn{Conn: c, g: g}, nil
}

// holdAfter holds back the reads that follow the one that carries marker,
// until UNSUB was written for every subject.
func (g *readGate) holdAfter(marker string, subjects ...string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.marker, g.subs = marker, subjects
}

func (g *readGate) released() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.freed
}

// sawUnsubs reports whether the protocol written so far subscribed to every
// gated subject and then unsubscribed from it.
func (g *readGate) sawUnsubs() bool {
	w := g.written.String()
	for _, subj := range g.subs {
		// SUB <subject> [queue] <sid>, and UNSUB <sid> [max].
		m := regexp.MustCompile(`(?m)^SUB ` + regexp.QuoteMeta(subj) + ` +(?:\S+ +)?(\d+)\r$`).FindStringSubmatch(w)
		if m == nil || !regexp.MustCompile(`(?m)^UNSUB `+m[1]+` *\r$`).MatchString(w) {
			return false
		}
	}
	return true
}

type gatedConn struct {
	net.Conn
	g *readGate
}

func (c *gatedConn) Read(b []byte) (int, error) {
	c.g.mu.Lock()
	for c.g.held {
		c.g.cond.Wait()
	}
	c.g.mu.Unlock()
	n, err := c.Conn.Read(b)
	c.g.mu.Lock()
	if c.g.marker != "" && strings.Contains(string(b[:n]), c.g.marker) {
		c.g.marker, c.g.held = "", true
	}
	c.g.mu.Unlock()
	return n, err
}

func (c *gatedConn) Write(b []byte) (int, error) {
	c.g.mu.Lock()
	c.g.written.Write(b)
	if c.g.held && !c.g.freed && c.g.sawUnsubs() {
		c.g.held, c.g.freed = false, true
		c.g.cond.Broadcast()
	}
	c.g.mu.Unlock()
	return c.Conn.Write(b)
}
