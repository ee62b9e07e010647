package bus

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/idle-worker/idle-worker/coordinator"
)

// countingRegistry is a Registry that only reports write counts.
type countingRegistry struct{ c RegistryCounters }

func (countingRegistry) Load(context.Context) (RegistryState, error)  { return RegistryState{}, nil }
func (countingRegistry) Put(coordinator.Record)                       {}
func (countingRegistry) Delete(string)                                {}
func (countingRegistry) SetHighWater(uint64)                          {}
func (countingRegistry) StoreHighWater(context.Context, uint64) error { return nil }
func (countingRegistry) StoreID(context.Context, string) error        { return nil }
func (countingRegistry) Close(context.Context) error                  { return nil }
func (r countingRegistry) Counters() RegistryCounters                 { return r.c }

// countingPublisher is a Publisher that only reports its counters.
type countingPublisher struct{ c PublisherCounters }

func (countingPublisher) Publish(string, *QuiesceEvent) error { return nil }
func (countingPublisher) Close(context.Context) error         { return nil }
func (p countingPublisher) Counters() PublisherCounters       { return p.c }

// TestStatsReportPersistenceFailures: the publisher's and the registry's
// failure counts reach Stats, which metrics and the micro stats endpoint
// read.
func TestStatsReportPersistenceFailures(t *testing.T) {
	w := newHandleWorker(t)
	w.pub = countingPublisher{PublisherCounters{Failed: 4, Abandoned: 1}}
	w.reg = countingRegistry{RegistryCounters{Written: 9, Failed: 3}}
	s := w.Stats()
	if s.StreamFailures != 4 || s.StreamAbandoned != 1 || s.RegistryWriteFailures != 3 {
		t.Errorf("Stats: got stream failures %d, abandoned %d, registry failures %d; want 4, 1, 3",
			s.StreamFailures, s.StreamAbandoned, s.RegistryWriteFailures)
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
type failingLoad struct{ countingRegistry }

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
