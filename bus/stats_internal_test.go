package bus

import (
	"context"
	"testing"

	"github.com/idle-worker/idle-worker/coordinator"
)

// failingRegistry is a Registry that only reports write counts.
type failingRegistry struct{ ok, failed uint64 }

func (failingRegistry) Load(context.Context) (RegistryState, error)  { return RegistryState{}, nil }
func (failingRegistry) Put(coordinator.Record)                       {}
func (failingRegistry) Delete(string)                                {}
func (failingRegistry) SetHighWater(uint64)                          {}
func (failingRegistry) StoreHighWater(context.Context, uint64) error { return nil }
func (failingRegistry) Close(context.Context) error                  { return nil }
func (r failingRegistry) Writes() (ok, failed uint64)                { return r.ok, r.failed }

// TestStatsReportPersistenceFailures: the stream's and the registry's failure
// counts reach Stats, which metrics and the micro stats endpoint read.
func TestStatsReportPersistenceFailures(t *testing.T) {
	w := newHandleWorker(t)
	w.cfg.Stream = &QuiesceStream{}
	w.cfg.Stream.failed.Add(4)
	w.cfg.Stream.dropped.Add(1)
	w.reg = failingRegistry{ok: 9, failed: 3}
	s := w.Stats()
	if s.StreamFailures != 4 || s.StreamAbandoned != 1 || s.RegistryWriteFailures != 3 {
		t.Errorf("Stats: got stream failures %d, abandoned %d, registry failures %d; want 4, 1, 3",
			s.StreamFailures, s.StreamAbandoned, s.RegistryWriteFailures)
	}
}
