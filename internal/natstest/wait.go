package natstest

import (
	"testing"
	"time"
)

// pollInterval is how long WaitFor sleeps between two calls of its
// condition.
const pollInterval = 5 * time.Millisecond

// WaitFor calls cond until it returns true, sleeping a few milliseconds
// between calls, and fails tb when that takes longer than timeout; what
// names the awaited condition in the failure message. It returns as soon
// as cond holds, and after failing tb (which, for a *testing.T, stops the
// test). It must be called from the goroutine running the test.
func WaitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(pollInterval) {
		if time.Now().After(deadline) {
			tb.Fatalf("waited %v for %s", timeout, what)
			return
		}
	}
}
