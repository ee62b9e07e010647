package integration

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/store"
)

// relStore wraps the worker's bus.Store: it counts the worker's calls per
// backend, and can drop events (with the draining record each carries), as
// a crash before the event left the worker would.
type relStore struct {
	bus.Store
	drop func(coordinator.Record) bool // events to drop; nil: none

	mu        sync.Mutex
	puts      map[string]int
	publishes map[string]int
	deletes   map[string]int
	dropped   map[string]string // key -> id of the last event dropped
}

func newRelStore(st bus.Store, drop func(coordinator.Record) bool) *relStore {
	return &relStore{Store: st, drop: drop, puts: map[string]int{}, publishes: map[string]int{}, deletes: map[string]int{}, dropped: map[string]string{}}
}

func (r *relStore) Put(rec coordinator.Record, stored func(error)) {
	r.mu.Lock()
	r.puts[rec.Key]++
	r.mu.Unlock()
	r.Store.Put(rec, stored)
}

func (r *relStore) Publish(ev *bus.QuiesceEvent, rec coordinator.Record) error {
	r.mu.Lock()
	r.publishes[rec.Key]++
	drop := r.drop != nil && r.drop(rec)
	if drop {
		r.dropped[rec.Key] = ev.ID
	}
	r.mu.Unlock()
	if drop {
		return nil
	}
	return r.Store.Publish(ev, rec)
}

func (r *relStore) Delete(key string) {
	r.mu.Lock()
	r.deletes[key]++
	r.mu.Unlock()
	r.Store.Delete(key)
}

// calls returns how often the worker asked to store key's record, to
// publish its event (with its draining record), and to delete it.
func (r *relStore) calls(key string) (puts, publishes, deletes int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.puts[key], r.publishes[key], r.deletes[key]
}

// droppedID returns the id of the last event of key the wrapper dropped.
func (r *relStore) droppedID(key string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dropped[key]
}

// relOptions says how an in-process worker persists.
type relOptions struct {
	policy     coordinator.Policy
	store      bool                          // a store in store.DefaultStreamName
	partitions int                           // the store's partition count (0: its default)
	drop       func(coordinator.Record) bool // events to drop
}

// relStartWorker starts an in-process worker on its own connection to url,
// with a store in the server's JetStream when opts says, as cmd/idle-worker
// wires it. The worker closes the store when it stops.
func relStartWorker(t *testing.T, url string, opts relOptions) (*testWorker, *relStore) {
	t.Helper()
	nc := connect(t, url)
	cfg := bus.WorkerConfig{Policy: opts.policy}
	var st *relStore
	if opts.store {
		st = newRelStore(relOpenStore(t, nc, opts.partitions), opts.drop)
		cfg.Store = st
	}
	return startWorkerOn(t, nc, cfg), st
}

// relOpenStore opens a store on nc as cmd/idle-worker does (with a shorter
// de-duplication window), and closes it when the test ends if no worker
// did.
func relOpenStore(t *testing.T, nc *nats.Conn, partitions int) *store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	st, err := store.Open(ctx, nc, bus.MustSubjects(prefix), store.Config{Partitions: partitions, Duplicates: time.Minute})
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	t.Cleanup(func() { relClose(t, "store", st.Close) })
	return st
}

// relClose closes what a worker that failed to start may have left open.
// After a normal stop it is already closed and this does nothing.
func relClose(t *testing.T, what string, closeFn func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	if err := closeFn(ctx); err != nil {
		t.Errorf("closing the %s: %v", what, err)
	}
}

func relJetStream(t *testing.T, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return js
}

// relRecord is a backend's stored record: its newest entry in the store.
type relRecord struct {
	found      bool
	rev        uint64 // the entry's lsn: every write of the record raises it
	TimeoutMS  int64
	State      string
	Generation uint64
	Reason     string
}

func relRecordOf(e storeEntry) relRecord {
	r := relRecord{found: true, rev: e.lsn, TimeoutMS: e.rec.IdleTimeout.Milliseconds(), State: e.rec.State.String(), Generation: e.rec.Generation}
	if e.rec.Reason != 0 {
		r.Reason = e.rec.Reason.String()
	}
	return r
}

func (r relRecord) String() string {
	if !r.found {
		return "(no record)"
	}
	return fmt.Sprintf("{timeout_ms:%d state:%s generation:%d reason:%q lsn:%d}", r.TimeoutMS, r.State, r.Generation, r.Reason, r.rev)
}

// relWaitRecord waits until key's stored record satisfies cond (writes are
// asynchronous) and returns it.
func relWaitRecord(t *testing.T, v *storeView, key, want string, cond func(relRecord) bool) relRecord {
	t.Helper()
	var r relRecord
	deadline := time.Now().Add(bound)
	for r = v.record(key); !cond(r); r = v.record(key) {
		if time.Now().After(deadline) {
			t.Fatalf("stored record of %s: got %v after %v; want %s", key, r, bound, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return r
}

// relEventID is the documented quiesce id: <store id>-<generation>.
func relEventID(regID string, gen uint64) string { return regID + "-" + strconv.FormatUint(gen, 10) }
