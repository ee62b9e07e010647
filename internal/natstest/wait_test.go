package natstest_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/idle-worker/idle-worker/internal/natstest"
)

// fakeTB records the failures of WaitFor instead of stopping the test.
type fakeTB struct {
	testing.TB
	failures []string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failures = append(f.failures, fmt.Sprintf(format, args...))
}

func TestWaitFor(t *testing.T) {
	tests := []struct {
		name      string
		timeout   time.Duration
		trueAfter int // calls of cond that return false first; -1: never true
		wantFail  string
		minCalls  int
	}{
		{name: "true at once", timeout: bound, trueAfter: 0, minCalls: 1},
		{name: "true after a few polls", timeout: bound, trueAfter: 3, minCalls: 4},
		{name: "true at once with no time left", timeout: 0, trueAfter: 0, minCalls: 1},
		{name: "never true", timeout: 50 * time.Millisecond, trueAfter: -1, wantFail: "waited 50ms for the thing", minCalls: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := &fakeTB{TB: t}
			calls := 0
			start := time.Now()
			natstest.WaitFor(tb, tt.timeout, "the thing", func() bool {
				calls++
				return tt.trueAfter >= 0 && calls > tt.trueAfter
			})
			elapsed := time.Since(start)
			if tt.wantFail == "" {
				if len(tb.failures) != 0 {
					t.Errorf("failures: got %q; want none", tb.failures)
				}
				if calls != tt.trueAfter+1 {
					t.Errorf("calls: got %d; want %d (stop at the first true)", calls, tt.trueAfter+1)
				}
				return
			}
			if len(tb.failures) != 1 || !strings.Contains(tb.failures[0], tt.wantFail) {
				t.Errorf("failures: got %q; want one containing %q", tb.failures, tt.wantFail)
			}
			if calls < tt.minCalls {
				t.Errorf("calls: got %d; want at least %d", calls, tt.minCalls)
			}
			if elapsed < tt.timeout {
				t.Errorf("gave up after %v; want at least the timeout %v", elapsed, tt.timeout)
			}
		})
	}
}
