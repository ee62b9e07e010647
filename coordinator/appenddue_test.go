package coordinator_test

import (
	"slices"
	"testing"
	"time"

	"github.com/idle-worker/idle-worker/coordinator"
)

// TestAppendDue checks that AppendDue returns what CollectDue returns, after
// what dst already held, and that a reused slice allocates nothing.
func TestAppendDue(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	build := func() *coordinator.Coordinator {
		c := coordinator.New(coordinator.Policy{DefaultIdleTimeout: time.Second})
		for _, k := range []string{"b", "a", "c"} {
			if _, err := c.MarkActivity(k, t0); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := c.MarkActivityWithTimeout("d", t0, time.Hour); err != nil {
			t.Fatal(err)
		}
		return c
	}
	want := build().CollectDue(t0.Add(time.Second))
	prefix := coordinator.Due{Key: "already there"}
	got := build().AppendDue([]coordinator.Due{prefix}, t0.Add(time.Second))
	equal := func(a, b coordinator.Due) bool {
		return a.Key == b.Key && a.IdleFor == b.IdleFor && a.ConfiguredTimeout == b.ConfiguredTimeout &&
			a.Reason == b.Reason && a.Deadline.Equal(b.Deadline) && a.Generation == b.Generation && a.Attempt == b.Attempt &&
			a.Forgotten == b.Forgotten
	}
	if len(got) != len(want)+1 || got[0].Key != prefix.Key || !slices.EqualFunc(got[1:], want, equal) {
		t.Errorf("got %v; want %v after %v", got, want, prefix)
	}

	c := build()
	buf := make([]coordinator.Due, 0, 8)
	now := t0
	if n := testing.AllocsPerRun(100, func() {
		now = now.Add(time.Second)
		for _, k := range []string{"a", "b", "c"} {
			if _, err := c.MarkActivity(k, now); err != nil {
				t.Fatal(err)
			}
		}
		if buf = c.AppendDue(buf[:0], now.Add(time.Second)); len(buf) != 3 {
			t.Fatalf("got %d due; want 3", len(buf))
		}
	}); n != 0 {
		t.Errorf("AppendDue into a reused slice allocates %v times per call; want 0", n)
	}
}
