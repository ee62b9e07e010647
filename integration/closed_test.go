package integration

import (
	"errors"
	"testing"
	"time"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
)

// TestConnectionClosedStopsWorker: when the client gives up on the server
// for good, Run must return ErrConnectionClosed instead of idling for ever
// as a paused worker that looks alive.
func TestConnectionClosedStopsWorker(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	nc := connect(t, srv.ClientURL())
	tw := startWorkerOn(t, nc, bus.WorkerConfig{Policy: coordinator.DefaultPolicy()})
	tw.once.Do(func() {}) // this test waits for Run itself

	nc.Close()
	select {
	case err := <-tw.done:
		if !errors.Is(err, bus.ErrConnectionClosed) {
			t.Fatalf("Run returned %v; want an error wrapping bus.ErrConnectionClosed", err)
		}
	case <-time.After(bound):
		t.Fatalf("Run did not return within %v of the connection closing", bound)
	}
}
