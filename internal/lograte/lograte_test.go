package lograte

import (
	"strconv"
	"testing"
	"time"
)

func TestAllow(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := t0
	l := New(time.Second, func() time.Time { return now })
	steps := []struct {
		at             time.Duration
		kind           string
		wantOK         bool
		wantSuppressed uint64
	}{
		{0, "a", true, 0},
		{10 * time.Millisecond, "a", false, 0},
		{20 * time.Millisecond, "a", false, 0},
		{30 * time.Millisecond, "b", true, 0}, // kinds are independent
		{999 * time.Millisecond, "a", false, 0},
		{time.Second, "a", true, 3},
		{time.Second, "b", false, 0}, // 970 ms after its last line
		{1500 * time.Millisecond, "b", true, 1},
		{2 * time.Second, "b", false, 0},
		{3 * time.Second, "b", true, 1},
		{3 * time.Second, "a", true, 0},
	}
	for i, s := range steps {
		now = t0.Add(s.at)
		ok, n := l.Allow(s.kind)
		if ok != s.wantOK || n != s.wantSuppressed {
			t.Errorf("step %d: Allow(%q) at t0+%v = %v, %d; want %v, %d", i, s.kind, s.at, ok, n, s.wantOK, s.wantSuppressed)
		}
	}
}

// TestAllowBounded: a stream of distinct kinds does not grow the Limiter
// without bound.
func TestAllowBounded(t *testing.T) {
	l := New(time.Hour, nil)
	for i := range 10 * maxKinds {
		if ok, _ := l.Allow("k" + strconv.Itoa(i)); !ok {
			t.Fatalf("first line of kind %d held back", i)
		}
	}
	if n := len(l.kinds); n > maxKinds {
		t.Errorf("Limiter remembers %d kinds; want at most %d", n, maxKinds)
	}
}

func TestClip(t *testing.T) {
	tests := []struct {
		s    string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly", 7, "exactly"},
		{"a longer subject", 8, "a longer…"},
		{"", 3, ""},
	}
	for _, tt := range tests {
		if got := Clip(tt.s, tt.n); got != tt.want {
			t.Errorf("Clip(%q, %d) = %q; want %q", tt.s, tt.n, got, tt.want)
		}
	}
}
