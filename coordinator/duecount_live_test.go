package coordinator_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/idle-worker/idle-worker/coordinator"
)

// DueCount backs the held-back gauge: it counts only backends that
// are due, not live ones that heartbeated after their first deadline.
func TestDueCountSkipsLiveBackends(t *testing.T) {
	t0 := time.Unix(1000, 0)
	c := coordinator.New(coordinator.Policy{DefaultIdleTimeout: time.Second})
	if _, err := c.MarkActivity("herd.0", t0); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if _, err := c.MarkActivity(fmt.Sprintf("live.%d", i), t0); err != nil {
			t.Fatal(err)
		}
	}
	now := t0.Add(1500 * time.Millisecond)
	for i := range 100 { // alive: heartbeats every 100 ms
		if _, err := c.MarkActivity(fmt.Sprintf("live.%d", i), now.Add(-100*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
	_, _ = c.NextDeadline() // what countHeld does first
	if got := c.DueCount(now); got != 1 {
		t.Errorf("DueCount = %d; want 1 (only herd.0 is due)", got)
	}
}
