package bus

import (
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/internal/natstest"
)

// The heartbeat hot path, measured without the network: a Worker on a real
// connection to an embedded server, fed prebuilt messages through handle,
// exactly as its loop feeds what NATS queued. Key cutting, key validation,
// body parsing, the clock and the coordinator are all included.

var handleSizes = []int{1_000, 100_000, 1_000_000}

// handleBodies are the two heartbeat shapes of the wire contract.
var handleBodies = []struct {
	name string
	data []byte
}{
	{"empty", nil},
	{"timeout", []byte(`{"idle_timeout_ms":30000}`)},
}

// newHandleWorker returns a Worker that is not running, on a connection to
// an embedded server (127.0.0.1, random port) closed in cleanup.
func newHandleWorker(tb testing.TB) *Worker {
	tb.Helper()
	srv := natstest.Start(tb)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	w, err := NewWorker(nc, WorkerConfig{Policy: coordinator.DefaultPolicy()})
	if err != nil {
		tb.Fatal(err)
	}
	return w
}

// heartbeatMsgs returns n heartbeats of distinct keys with body data.
func heartbeatMsgs(s Subjects, n int, data []byte) []nats.Msg {
	msgs := make([]nats.Msg, n)
	for i := range msgs {
		msgs[i] = nats.Msg{Subject: s.Activity("dev-" + strconv.Itoa(i%1000) + ".gopls." + strconv.Itoa(i)), Data: data}
	}
	return msgs
}

// BenchmarkHandleHeartbeat measures one heartbeat of an already tracked
// backend among n, from a *nats.Msg to the coordinator. allocs/op must be 0
// (without -race, under which sync.Pool drops items).
func BenchmarkHandleHeartbeat(b *testing.B) {
	for _, n := range handleSizes {
		for _, body := range handleBodies {
			b.Run("n="+strconv.Itoa(n)+"/body="+body.name, func(b *testing.B) {
				w := newHandleWorker(b)
				msgs := heartbeatMsgs(w.subj, n, body.data)
				for i := range msgs {
					w.handle(&msgs[i])
				}
				if got := w.coord.Len(); got != n {
					b.Fatalf("tracking %d backends; want %d", got, n)
				}
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					w.handle(&msgs[i%n])
				}
				b.StopTimer()
				if got, want := w.stats.heartbeats.Load(), uint64(n+b.N); got != want {
					b.Fatalf("applied %d heartbeats; want %d", got, want)
				}
			})
		}
	}
}

// TestHandleHeartbeatAllocs guards what BenchmarkHandleHeartbeat reports:
// the heartbeat path allocates nothing of its own.
func TestHandleHeartbeatAllocs(t *testing.T) {
	w := newHandleWorker(t)
	for _, body := range handleBodies {
		if body.data != nil && raceOn {
			t.Logf("skipping body %s: the race detector makes sync.Pool drop items", body.name)
			continue
		}
		msgs := heartbeatMsgs(w.subj, 100, body.data)
		for i := range msgs {
			w.handle(&msgs[i])
		}
		i := 0
		if n := testing.AllocsPerRun(1000, func() {
			w.handle(&msgs[i%len(msgs)])
			i++
		}); n != 0 {
			t.Errorf("body %s: handle allocates %v times per heartbeat; want 0", body.name, n)
		}
	}
}

// BenchmarkFire measures a timer firing that finds 100 backends due among
// n and publishes a quiesce event for each (core NATS, no subscriber):
// CollectDue, the event's id, subject, JSON body and header, and the
// publish into the connection's buffer. Divide by 100 for one event.
func BenchmarkFire(b *testing.B) {
	const k = 100
	for _, n := range handleSizes {
		b.Run("n="+strconv.Itoa(n)+"/k="+strconv.Itoa(k), func(b *testing.B) {
			w := newHandleWorker(b)
			clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			w.now = func() time.Time { return clock }
			keys := make([]string, n)
			for i := range keys {
				keys[i] = "dev-" + strconv.Itoa(i%1000) + ".gopls." + strconv.Itoa(i)
				if _, err := w.coord.MarkActivityWithTimeout(keys[i], clock, time.Hour); err != nil {
					b.Fatal(err)
				}
			}
			next := 0
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				for range k {
					if _, err := w.coord.MarkActivityWithTimeout(keys[next%n], clock, time.Millisecond); err != nil {
						b.Fatal(err)
					}
					next++
				}
				clock = clock.Add(time.Millisecond)
				b.StartTimer()
				w.fire()
			}
			b.StopTimer()
			if got, want := w.stats.quiesces[coordinator.IdleTimeout].Load(), uint64(k*b.N); got != want {
				b.Fatalf("published %d quiesce events; want %d", got, want)
			}
		})
	}
}
