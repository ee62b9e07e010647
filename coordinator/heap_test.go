package coordinator

import (
	"slices"
	"strconv"
	"testing"
	"time"
)

// TestHeapShrinks checks the deadline index gives memory back after a mass
// drain and keeps working afterwards.
func TestHeapShrinks(t *testing.T) {
	const n = 20000
	tests := []struct {
		name  string
		drain func(c *Coordinator) int
	}{
		{name: "CollectDue", drain: func(c *Coordinator) int { return len(c.CollectDue(t0.Add(time.Hour))) }},
		{name: "Force", drain: func(c *Coordinator) int {
			for i := range n {
				c.Force("k"+strconv.Itoa(i), t0, BrokerShutdown)
			}
			return len(c.CollectDue(t0))
		}},
		{name: "MarkQuiesced", drain: func(c *Coordinator) int {
			for i := range n {
				c.MarkQuiesced("k"+strconv.Itoa(i), t0)
			}
			return c.Count(Quiesced)
		}},
		{name: "Remove", drain: func(c *Coordinator) int {
			for i := range n {
				c.Remove("k" + strconv.Itoa(i))
			}
			return n - c.Len()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(Policy{DefaultIdleTimeout: time.Second})
			for i := range n {
				c.MarkActivity("k"+strconv.Itoa(i), t0.Add(time.Duration(i)))
			}
			grown := cap(c.heap)
			if grown < n {
				t.Fatalf("heap capacity with %d running: got %d; want >= %d", n, grown, n)
			}
			if got := tt.drain(c); got != n {
				t.Fatalf("drained: got %d; want %d", got, n)
			}
			if len(c.heap) != 0 || cap(c.heap) > 2048 {
				t.Errorf("heap after mass drain: got len %d cap %d; want len 0, cap <= 2048 (was %d)", len(c.heap), cap(c.heap), grown)
			}
			checkInvariants(t, c)
			// Still usable: rearm a few out of order and check the order.
			for i, k := range []string{"k7", "k3", "k11", "k5"} {
				c.MarkActivityWithTimeout(k, t0.Add(time.Hour), time.Duration(4-i)*time.Second)
			}
			c.MarkActivity("new", t0.Add(time.Hour))
			checkInvariants(t, c)
			got := c.CollectDue(t0.Add(2 * time.Hour))
			if want := []string{"k5", "new", "k11", "k3", "k7"}; !slices.Equal(dueKeys(got), want) {
				t.Errorf("CollectDue after shrink: got %v; want %v", dueKeys(got), want)
			}
		})
	}
}
