package bus_test

import (
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/internal/natstest"
)

// quiesceCounter counts the events one SubscribeQuiesce callback received.
type quiesceCounter struct {
	mu  sync.Mutex
	ids map[string]int
}

func (c *quiesceCounter) handle(ev bus.QuiesceEvent) {
	c.mu.Lock()
	c.ids[ev.ID]++
	c.mu.Unlock()
}

func (c *quiesceCounter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.ids))
	for k, v := range c.ids {
		out[k] = v
	}
	return out
}

// publishEvents publishes n valid quiesce events for keys under dev-7.
func publishEvents(t *testing.T, nc *nats.Conn, n int) {
	t.Helper()
	s := bus.MustSubjects(bus.DefaultPrefix)
	for i := range n {
		ev := bus.QuiesceEvent{ID: "test-" + strconv.Itoa(i), Key: "dev-7.svc." + strconv.Itoa(i), Reason: "maintenance", At: time.Now(), Attempt: 1}
		if err := nc.Publish(s.Quiesce(ev.Key), ev.AppendJSON(nil)); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.FlushTimeout(waitBound); err != nil {
		t.Fatal(err)
	}
}

// waitUntil polls cond until it holds, failing t after waitBound.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	natstest.WaitFor(t, waitBound, what, cond)
}

// TestSubscribeQuiesceQueueGroup: subscribers in one queue group share the
// events, each event reaching exactly one of them; a subscriber outside the
// group sees them all.
func TestSubscribeQuiesceQueueGroup(t *testing.T) {
	e := newEnv(t, bus.WorkerConfig{})
	const n = 200
	var members [2]quiesceCounter
	var outsider quiesceCounter
	var subs []*nats.Subscription
	subscribe := func(c *quiesceCounter, opts ...bus.QuiesceOption) {
		c.ids = map[string]int{}
		nc, err := e.Connect()
		if err != nil {
			t.Fatal(err)
		}
		sub, err := bus.SubscribeQuiesce(nc, bus.Subjects{}, "dev-7.>", c.handle, opts...)
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.FlushTimeout(waitBound); err != nil {
			t.Fatal(err)
		}
		subs = append(subs, sub)
	}
	subscribe(&members[0], bus.WithQueueGroup("brokers"))
	subscribe(&members[1], bus.WithQueueGroup("brokers"))
	subscribe(&outsider)
	pub, err := e.Connect()
	if err != nil {
		t.Fatal(err)
	}
	publishEvents(t, pub, n)

	waitUntil(t, "the outsider to see every event", func() bool { return len(outsider.snapshot()) == n })
	total := func() int { return len(members[0].snapshot()) + len(members[1].snapshot()) }
	waitUntil(t, "the group to see every event", func() bool { return total() >= n })
	// Everything the server sent has reached the callbacks: nothing more can
	// arrive.
	for _, sub := range subs {
		waitUntil(t, "delivery to finish", func() bool { m, _, _ := sub.Pending(); return m == 0 })
	}
	a, b := members[0].snapshot(), members[1].snapshot()
	if len(a)+len(b) != n {
		t.Errorf("the group received %d + %d events; want %d in all", len(a), len(b), n)
	}
	for id, k := range a {
		if k != 1 || b[id] != 0 {
			t.Errorf("event %s reached member 0 %d times and member 1 %d times; want once in the group", id, k, b[id])
		}
	}
	for id, k := range outsider.snapshot() {
		if k != 1 {
			t.Errorf("event %s reached the outsider %d times; want once", id, k)
		}
	}
}

// TestSubscribeQuiesceOnBadEvent: a message that is not a quiesce event goes
// to the OnBadEvent callback with an error wrapping ErrBadPayload, and never
// to the handler.
func TestSubscribeQuiesceOnBadEvent(t *testing.T) {
	e := newEnv(t, bus.WorkerConfig{})
	nc, err := e.Connect()
	if err != nil {
		t.Fatal(err)
	}
	good := quiesceCounter{ids: map[string]int{}}
	bad := make(chan error, 4)
	sub, err := bus.SubscribeQuiesce(nc, bus.Subjects{}, "dev-7.>", good.handle,
		bus.OnBadEvent(func(m *nats.Msg, err error) { bad <- err }))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.FlushTimeout(waitBound); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("idle.quiesce.dev-7.svc.1", []byte(`{"id":`)); err != nil {
		t.Fatal(err)
	}
	publishEvents(t, nc, 1)
	select {
	case err := <-bad:
		if !errors.Is(err, bus.ErrBadPayload) {
			t.Errorf("OnBadEvent got %v; want an error wrapping ErrBadPayload", err)
		}
	case <-time.After(waitBound):
		t.Fatal("OnBadEvent was not called")
	}
	waitUntil(t, "the good event", func() bool { return len(good.snapshot()) == 1 })
	if got := good.snapshot(); got["test-0"] != 1 {
		t.Errorf("handler got %v; want test-0 once", got)
	}
}
