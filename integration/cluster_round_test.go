package integration

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/store"
)

// A round is what one cluster scenario checks: 2,000 backends heartbeat
// from a connection of the test, each with its own timeout of 2, 3 or 4
// s, and fall silent in four waves around the moment D of the disruption:
// wave 0 at D-2.5 s (due around D), wave 1 at D-1 s (due while the
// disruption is noticed), wave 2 at D+0.5 s, wave 3 (busy) when the
// scenario says, after the disruption is over. Every backend must then be
// quiesced, once (one id, its first emission seen once), and never before
// its timeout has passed since the last heartbeat the test sent.
const (
	roundBackends = 2000
	roundWaves    = 4
	roundInterval = 500 * time.Millisecond
	// roundLead is how long before D the round is scheduled: wave 0 goes
	// silent 2.5 s before D.
	roundLead = 3 * time.Second
	// earlyMargin allows for reading the clock: a quiesce that arrives
	// before the last heartbeat's publish plus the timeout, less this, is
	// early.
	earlyMargin = 5 * time.Millisecond
	// clusterPartitions is the workers' partition count (the default).
	clusterPartitions = 64
	// ownerTimeout is IDLE_OWNER_TIMEOUT (the default): a worker unheard
	// for this long is dead.
	ownerTimeout = time.Second
)

// waveStops are the silences of waves 0 to 2, after D.
var waveStops = [roundWaves - 1]time.Duration{-2500 * time.Millisecond, -time.Second, 500 * time.Millisecond}

// roundTimeout is the idle timeout of backend i.
func roundTimeout(i int) time.Duration { return time.Duration(2+(i/roundWaves)%3) * time.Second }

// clusterRound is one scenario's backends and their heartbeats.
type clusterRound struct {
	group    string
	keys     []string
	timeouts []time.Duration
	base     time.Time      // offsets below are from it (monotonic)
	stops    []atomic.Int64 // per wave: offset from base when it falls silent; 0 while it beats
	last     []atomic.Int64 // per key: offset from base just before its last heartbeat was published
	d        time.Time      // D, once scheduled
	// victim is the partitions the disrupted worker owned at D.
	victim []int

	sent, failed atomic.Int64
	stop         chan struct{}
	done         chan struct{}
	once         sync.Once
}

// startRound starts heartbeating roundBackends backends named group.0000
// and on, from
// a connection to urls (tried in order), until every wave is silent or the
// round's test ends.
func startRound(t *testing.T, group, urls string) *clusterRound {
	t.Helper()
	nc, err := nats.Connect(urls, nats.Name(t.Name()+" heartbeats"), nats.DontRandomize(), nats.Timeout(bound),
		nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.ReconnectJitter(0, 0), nats.ReconnectBufSize(-1))
	if err != nil {
		t.Fatalf("connect to %s: %v", urls, err)
	}
	t.Cleanup(nc.Close)
	r := &clusterRound{
		group: group, keys: chaosKeys(group, roundBackends), timeouts: make([]time.Duration, roundBackends),
		stops: make([]atomic.Int64, roundWaves), last: make([]atomic.Int64, roundBackends),
		stop: make(chan struct{}), done: make(chan struct{}), base: time.Now(),
	}
	subjects := make([]string, roundBackends)
	bodies := make([][]byte, roundBackends)
	for i, k := range r.keys {
		r.timeouts[i] = roundTimeout(i)
		subjects[i] = prefix + ".activity." + k
		bodies[i] = fmt.Appendf(nil, `{"idle_timeout_ms":%d}`, r.timeouts[i].Milliseconds())
	}
	go func() {
		defer close(r.done)
		tk := time.NewTicker(roundInterval)
		defer tk.Stop()
		for {
			beating := 0
			for i := range r.keys {
				stop := r.stops[i%roundWaves].Load()
				at := time.Since(r.base)
				if stop != 0 && int64(at) >= stop {
					continue
				}
				beating++
				if err := nc.Publish(subjects[i], bodies[i]); err != nil {
					r.failed.Add(1)
					continue
				}
				r.last[i].Store(int64(at))
				r.sent.Add(1)
			}
			_ = nc.Flush()
			if beating == 0 {
				return
			}
			select {
			case <-r.stop:
				return
			case <-tk.C:
			}
		}
	}()
	t.Cleanup(r.halt)
	return r
}

// halt stops the heartbeats and waits for their goroutine.
func (r *clusterRound) halt() {
	r.once.Do(func() { close(r.stop) })
	<-r.done
}

// schedule sets D, roundLead from now, and the silences of waves 0 to 2
// around it; wave 3 beats until silence(3, ...). It returns D.
func (r *clusterRound) schedule() time.Time {
	r.d = time.Now().Add(roundLead)
	for w, off := range waveStops {
		r.silence(w, r.d.Add(off))
	}
	return r.d
}

// silence makes wave w fall silent at at.
func (r *clusterRound) silence(w int, at time.Time) {
	r.stops[w].Store(int64(max(at.Sub(r.base), 1)))
}

// lastStop is when the last wave falls silent, and false while one has no
// silence set.
func (r *clusterRound) lastStop() (time.Time, bool) {
	var last int64
	for w := range r.stops {
		s := r.stops[w].Load()
		if s == 0 {
			return time.Time{}, false
		}
		last = max(last, s)
	}
	return r.base.Add(time.Duration(last)), true
}

// deadline is when backend i was due by the heartbeats the test sent: its
// last heartbeat's publish plus its timeout.
func (r *clusterRound) deadline(i int) time.Time {
	return r.base.Add(time.Duration(r.last[i].Load()) + r.timeouts[i])
}

// waitTracked waits until the workers between them count every backend of
// the round running, and the store holds every one's record: a worker
// killed from now on loses no registration.
func (r *clusterRound) waitTracked(t *testing.T, ws *clusterWorkers, nc *nats.Conn) {
	t.Helper()
	chaosWait(t, 20*time.Second, "every backend of the round tracked", func() bool {
		return int(sumOf(ws.counters(), mRunning)) == roundBackends
	})
	v := openStoreView(t, nc)
	missing := 0
	chaosWait(t, 20*time.Second, "every backend of the round stored", func() bool {
		recs, ok := v.records()
		if !ok {
			return false
		}
		missing = 0
		for _, k := range r.keys {
			if _, ok := recs[k]; !ok {
				missing++
			}
		}
		return missing == 0
	})
}

// roundEvents are the quiesce events of the round's keys: as each of the
// test's subscribers received them, and as the stream stores them.
type roundEvents struct {
	subs   [][]chaosEvent // per subscriber, in arrival order
	stored map[string][]chaosStoredEvent
}

// waitQuiesced waits until a subscriber has received an event for every
// backend of the round, or until timeout after the last wave fell silent.
func (r *clusterRound) waitQuiesced(t *testing.T, timeout time.Duration, subs ...*chaosEvents) {
	t.Helper()
	last, ok := r.lastStop()
	if !ok {
		t.Fatalf("round %s: wave without a silence", r.group)
	}
	for time.Now().Before(last.Add(timeout)) {
		seen := map[string]bool{}
		for _, s := range subs {
			for k := range s.byKey(time.Now()) {
				if strings.HasPrefix(k, r.group+".") {
					seen[k] = true
				}
			}
		}
		if len(seen) == roundBackends {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// collect returns the round's events the subscribers received before
// until, and those the stream holds.
func (r *clusterRound) collect(t *testing.T, nc *nats.Conn, until time.Time, subs ...*chaosEvents) roundEvents {
	t.Helper()
	var evs roundEvents
	for _, s := range subs {
		var mine []chaosEvent
		for k, es := range s.byKey(until) {
			if strings.HasPrefix(k, r.group+".") {
				mine = append(mine, es...)
			}
		}
		sort.Slice(mine, func(i, j int) bool { return mine[i].arrived.Before(mine[j].arrived) })
		evs.subs = append(evs.subs, mine)
	}
	var err error
	for try := 0; try < 5; try++ {
		if evs.stored, err = r.stored(nc); err == nil {
			return evs
		}
	}
	t.Fatalf("reading the stored events: %v", err)
	return evs
}

// stored reads the round's events from the stream, through an ordered
// consumer of its own, until it has caught up.
func (r *clusterRound) stored(nc *nats.Conn) (map[string][]chaosStoredEvent, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	cons, err := js.OrderedConsumer(ctx, store.DefaultStreamName, jetstream.OrderedConsumerConfig{FilterSubjects: []string{prefix + ".quiesce." + r.group + ".>"}})
	if err != nil {
		return nil, fmt.Errorf("consumer: %w", err)
	}
	out := map[string][]chaosStoredEvent{}
	for ctx.Err() == nil {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return nil, fmt.Errorf("fetch: %w", err)
		}
		got, caughtUp := 0, false
		for m := range batch.Messages() {
			got++
			if md, err := m.Metadata(); err == nil && md.NumPending == 0 {
				caughtUp = true
			}
			ev, err := bus.ParseQuiesceEvent(m.Data())
			if err != nil {
				return nil, fmt.Errorf("stored event %s: %w", m.Data(), err)
			}
			out[ev.Key] = append(out[ev.Key], chaosStoredEvent{QuiesceEvent: ev, msgID: m.Headers().Get(bus.HeaderMsgID)})
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, fmt.Errorf("fetch: %w", err)
		}
		if got == 0 || caughtUp {
			return out, nil
		}
	}
	return nil, fmt.Errorf("still reading after 20s: %w", ctx.Err())
}

// acknowledge reports every backend of the round quiesced, as its broker
// would, so that the workers stop re-sending their events.
func (r *clusterRound) acknowledge(t *testing.T, nc *nats.Conn) {
	t.Helper()
	for _, k := range r.keys {
		if err := nc.Publish(prefix+".state."+k, []byte(`{"state":"quiesced"}`)); err != nil {
			t.Fatalf("report %s quiesced: %v", k, err)
		}
	}
	if err := nc.FlushTimeout(bound); err != nil {
		t.Fatalf("flush: %v", err)
	}
}
