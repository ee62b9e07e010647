package coordinator

import (
	"strconv"
	"testing"
	"time"
)

// TestDueCount: DueCount counts the backends AppendDue would return now
// (plus refreshed ones whose index is stale), and drops as they are taken.
func TestDueCount(t *testing.T) {
	c := New(Policy{DefaultIdleTimeout: time.Second})
	for i := range 10 {
		mustMark(t, c, "k"+strconv.Itoa(i), t0.Add(time.Duration(i)*100*time.Millisecond), time.Second)
	}
	tests := []struct {
		at   time.Duration
		want int
	}{
		{0, 0},
		{999 * time.Millisecond, 0},
		{time.Second, 1},
		{1450 * time.Millisecond, 5},
		{time.Hour, 10},
	}
	for _, tt := range tests {
		if got := c.DueCount(t0.Add(tt.at)); got != tt.want {
			t.Errorf("DueCount(t0+%v) = %d; want %d", tt.at, got, tt.want)
		}
	}
	now := t0.Add(time.Hour)
	if got := len(c.AppendDueN(nil, now, 4)); got != 4 {
		t.Fatalf("AppendDueN(4) returned %d", got)
	}
	if got := c.DueCount(now); got != 6 {
		t.Errorf("DueCount after taking 4 = %d; want 6", got)
	}
	checkInvariants(t, c)
}
