package bus

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/idle-worker/idle-worker/coordinator"
)

// countingStore is a Store that stores nothing and only reports counts.
type countingStore struct{ c StoreCounters }

func (countingStore) Load(context.Context) (RegistryState, error) { return RegistryState{}, nil }
func (countingStore) Put(_ coordinator.Record, stored func(error)) {
	if stored != nil {
		stored(nil)
	}
}
func (countingStore) Claim(context.Context, []int) (Claimed, error) { return Claimed{}, nil }
func (countingStore) Release(context.Context, []int) error          { return nil }
func (countingStore) Verify(context.Context, []int) error           { return nil }
func (countingStore) Lost() <-chan int                              { return nil }
func (countingStore) Partitions() int                               { return 4 }
func (countingStore) Reserve(_ context.Context, floor, _ uint64) (uint64, error) {
	return max(floor, 1), nil
}
func (countingStore) Delete(string)                                   {}
func (countingStore) Publish(*QuiesceEvent, coordinator.Record) error { return nil }
func (countingStore) StoreID(context.Context, string) error           { return nil }
func (countingStore) Close(context.Context) error                     { return nil }
func (r countingStore) Counters() StoreCounters                       { return r.c }

// TestStatsReportStoreCounters: the store's write, failure and fencing
// counts reach Stats, which metrics and the micro stats endpoint read.
func TestStatsReportStoreCounters(t *testing.T) {
	w := newHandleWorker(t)
	w.reg = countingStore{StoreCounters{Written: 9, Failed: 3, Fenced: 2}}
	s := w.Stats()
	if s.StoreWrites != 9 || s.StoreWriteFailures != 3 || s.StoreFenced != 2 {
		t.Errorf("Stats: got store writes %d, failures %d, fenced %d; want 9, 3, 2",
			s.StoreWrites, s.StoreWriteFailures, s.StoreFenced)
	}
}

// TestStatsCountEveryReason: Stats has a quiesce count for every reason of
// the model, so a reason added to the coordinator is counted and exported.
func TestStatsCountEveryReason(t *testing.T) {
	w := newHandleWorker(t)
	for i, r := range coordinator.Reasons() {
		w.stats.quiesces[r].Add(uint64(i + 1))
	}
	s := w.Stats()
	if len(s.Quiesces) != len(coordinator.Reasons()) {
		t.Errorf("Stats.Quiesces has %d reasons; want %d", len(s.Quiesces), len(coordinator.Reasons()))
	}
	for i, r := range coordinator.Reasons() {
		if got := s.Quiesces[r.String()]; got != uint64(i+1) {
			t.Errorf("Stats.Quiesces[%s] = %d; want %d", r, got, i+1)
		}
	}
}

// failingLoad is a Registry whose Load fails, so Run fails before serving.
type failingLoad struct{ countingStore }

func (failingLoad) Load(context.Context) (RegistryState, error) {
	return RegistryState{}, errors.New("load failed")
}

// TestFailedRunRefusesCalls: after Run fails to start, an admin call handed
// to the loop is refused at once instead of waiting for a loop that will
// never run.
func TestFailedRunRefusesCalls(t *testing.T) {
	w := newHandleWorker(t)
	w.reg = failingLoad{}
	if err := w.Run(context.Background()); err == nil {
		t.Fatal("Run with a failing registry returned nil; want its error")
	}
	done := make(chan error, 1)
	go func() { done <- w.do(func() {}) }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrShuttingDown) {
			t.Errorf("do after a failed Run: %v; want ErrShuttingDown", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("do after a failed Run blocked")
	}
}
