package bus_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
)

// heldStore is a bus.Store that holds every Put's stored callback until the
// test releases it, and fails it with failWith when set.
type heldStore struct {
	mu       sync.Mutex
	held     []func(error)
	puts     []coordinator.Record
	failWith error
}

func (s *heldStore) Load(context.Context) (bus.RegistryState, error) {
	return bus.RegistryState{ID: "held", NewID: true}, nil
}
func (s *heldStore) Put(rec coordinator.Record, stored func(error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.puts = append(s.puts, rec)
	if stored != nil {
		s.held = append(s.held, stored)
	}
}
func (s *heldStore) Claim(context.Context, []int) (bus.Claimed, error) { return bus.Claimed{}, nil }
func (s *heldStore) Release(context.Context, []int) error              { return nil }
func (s *heldStore) Verify(context.Context, []int) error               { return nil }
func (s *heldStore) Lost() <-chan int                                  { return nil }
func (s *heldStore) Partitions() int                                   { return 1 }
func (s *heldStore) Reserve(_ context.Context, floor, _ uint64) (uint64, error) {
	return max(floor, 1), nil
}
func (s *heldStore) Delete(string)                                       {}
func (s *heldStore) Publish(*bus.QuiesceEvent, coordinator.Record) error { return nil }
func (s *heldStore) StoreID(context.Context, string) error               { return nil }
func (s *heldStore) Counters() bus.StoreCounters                         { return bus.StoreCounters{} }
func (s *heldStore) Close(context.Context) error                         { return nil }

// release calls the held callbacks with err.
func (s *heldStore) release(err error) int {
	s.mu.Lock()
	held := s.held
	s.held = nil
	s.mu.Unlock()
	for _, f := range held {
		f(err)
	}
	return len(held)
}

func (s *heldStore) waitHeld(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(waitBound)
	for {
		s.mu.Lock()
		got := len(s.held)
		s.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d stored callbacks held; want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestReplyWaitsForTheStore: a heartbeat that changes a backend's record
// (its first, or a new timeout) is answered only once the store says the
// record is stored, and with an error when it cannot be; a plain refresh
// is answered at once.
func TestReplyWaitsForTheStore(t *testing.T) {
	st := &heldStore{}
	e := newEnv(t, bus.WorkerConfig{Store: st, Policy: coordinator.DefaultPolicy()})
	nc, err := e.Connect()
	if err != nil {
		t.Fatal(err)
	}
	s := bus.MustSubjects(bus.DefaultPrefix)
	ask := func(key string, opts ...bus.HeartbeatOption) <-chan error {
		out := make(chan error, 1)
		h, err := bus.NewHeartbeater(nc, s, key, opts...)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), waitBound)
			defer cancel()
			_, err := h.Check(ctx)
			out <- err
		}()
		return out
	}
	first := ask("svc.a")
	st.waitHeld(t, 1)
	select {
	case err := <-first:
		t.Fatalf("first heartbeat answered before its record was stored (%v)", err)
	case <-time.After(50 * time.Millisecond):
	}
	st.release(nil)
	if err := <-first; err != nil {
		t.Fatalf("first heartbeat, once stored: %v", err)
	}
	if err := <-ask("svc.a"); err != nil {
		t.Fatalf("refresh: %v", err)
	}
	changed := ask("svc.a", bus.WithIdleTimeout(5*time.Second))
	st.waitHeld(t, 1)
	st.release(errors.New("store: partition claimed by another worker"))
	if err := <-changed; err == nil {
		t.Fatal("a heartbeat whose record could not be stored was answered ok")
	}
}
