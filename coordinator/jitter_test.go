package coordinator

import (
	"math"
	"strconv"
	"testing"
	"time"
)

// TestJitter checks jitter: within [0, span), zero without a span, a pure
// function of key and attempt equal to the FNV-1a formula written with the
// standard library (refJitter), and spread over keys and attempts.
func TestJitter(t *testing.T) {
	spans := []int64{1, 2, 3, 7, 1000, int64(250 * time.Millisecond), 1 << 62, math.MaxInt64}
	keys := []string{"", "k", "svc.api.1", "svc.api.2", "a.very.long.key.with.many.tokens.0123456789"}
	attempts := []uint16{0, 1, 2, 255, 256, 257, math.MaxUint16 - 1, math.MaxUint16}
	t.Run("bounds and formula", func(t *testing.T) {
		for _, span := range spans {
			for _, k := range keys {
				for _, a := range attempts {
					j := jitter(span, k, a)
					if j < 0 || j >= span {
						t.Fatalf("jitter(%d, %q, %d): got %d; want in [0, %d)", span, k, a, j, span)
					}
					if again := jitter(span, k, a); again != j {
						t.Fatalf("jitter(%d, %q, %d): got %d, then %d; want the same", span, k, a, j, again)
					}
					if want := refJitter(time.Duration(span), k, int(a)); time.Duration(j) != want {
						t.Fatalf("jitter(%d, %q, %d): got %d; want %d (FNV-1a of key and attempt, modulo span)", span, k, a, j, want)
					}
				}
			}
		}
	})
	t.Run("no span", func(t *testing.T) {
		for _, span := range []int64{0, -1, math.MinInt64} {
			if j := jitter(span, "k", 1); j != 0 {
				t.Errorf("jitter(%d, k, 1): got %d; want 0", span, j)
			}
		}
	})
	t.Run("spread over keys", func(t *testing.T) {
		const n, span = 400, int64(250 * time.Millisecond)
		seen := map[int64]bool{}
		var quarters [4]int
		for i := range n {
			j := jitter(span, "svc.backend."+strconv.Itoa(i), 1)
			seen[j] = true
			quarters[j*4/span]++
		}
		if len(seen) < n-2 {
			t.Errorf("jitter of %d keys: got %d distinct waits; want nearly all distinct", n, len(seen))
		}
		for q, c := range quarters {
			if c < n/8 {
				t.Errorf("jitter of %d keys: got %d in quarter %d of the span (all: %v); want at least %d in each", n, c, q, quarters, n/8)
			}
		}
	})
	t.Run("spread over attempts", func(t *testing.T) {
		seen := map[int64]bool{}
		for a := uint16(1); a <= 20; a++ {
			seen[jitter(int64(time.Second), "k", a)] = true
		}
		if len(seen) < 19 {
			t.Errorf("jitter of k over 20 attempts: got %d distinct waits; want nearly all distinct", len(seen))
		}
		if jitter(1<<40, "k", 1) == jitter(1<<40, "k", 257) {
			t.Errorf("jitter of attempts 1 and 257: got equal; want the high byte of the attempt to count")
		}
	})
}

// TestRetryDelayJitter checks that every redelivery wait is the capped
// exponential backoff plus up to a quarter more: never earlier than the
// un-jittered schedule, at most 25% later.
func TestRetryDelayJitter(t *testing.T) {
	tests := []struct {
		name string
		p    Policy
	}{
		{name: "1s capped at 4s", p: Policy{RetryInterval: time.Second, RetryMaxInterval: 4 * time.Second}},
		{name: "default cap", p: Policy{RetryInterval: 3 * time.Millisecond}},
		{name: "cap below the interval", p: Policy{RetryInterval: time.Second, RetryMaxInterval: time.Millisecond}},
		{name: "no room for jitter", p: Policy{RetryInterval: 3, RetryMaxInterval: 3}},
		{name: "huge cap", p: Policy{RetryInterval: time.Second, RetryMaxInterval: math.MaxInt64}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(tt.p)
			ref := newRefModel(tt.p)
			for _, k := range []string{"a", "svc.api.1"} {
				for n := 1; n <= 80; n++ {
					base := ref.base(n)
					got := time.Duration(c.retryDelay(uint16(n), k))
					// Below 4 ns there is no quarter to add.
					if jit := got - base; got < base || jit != 0 && jit >= base/4 {
						t.Fatalf("retryDelay(%d, %q): got %v; want in [%v, %v + a quarter)", n, k, got, base, base)
					}
					if base <= math.MaxInt64-base/4 && got != base+refJitter(base/4, k, n) {
						t.Fatalf("retryDelay(%d, %q): got %v; want %v + its jitter %v", n, k, got, base, refJitter(base/4, k, n))
					}
				}
			}
		})
	}
}

// TestMassDrainSpread drains 100 backends at the same moment and checks
// their re-sends do not come in one burst: none before the interval, all
// by a quarter after it, and only some by an eighth after it.
func TestMassDrainSpread(t *testing.T) {
	const n = 100
	c := New(Policy{DefaultIdleTimeout: time.Second, RetryInterval: 8 * time.Second})
	for i := range n {
		markDefault(t, c, "svc.backend."+strconv.Itoa(i), t0)
	}
	if got := c.CollectDue(t0.Add(time.Second)); len(got) != n {
		t.Fatalf("drain: got %d; want %d", len(got), n)
	}
	drained := t0.Add(time.Second)
	if got := c.CollectDue(drained.Add(8*time.Second - 1)); len(got) != 0 {
		t.Fatalf("before the interval: got %d re-sends; want none", len(got))
	}
	early := len(c.CollectDue(drained.Add(9 * time.Second)))
	if early == 0 || early == n {
		t.Errorf("by an eighth after the interval: got %d of %d re-sends; want some, not all", early, n)
	}
	if late := len(c.CollectDue(drained.Add(10 * time.Second))); early+late != n {
		t.Errorf("by a quarter after the interval: got %d of %d re-sends; want all", early+late, n)
	}
	checkInvariants(t, c)
}
