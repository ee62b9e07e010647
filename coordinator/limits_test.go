package coordinator

import (
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestMaxBackends(t *testing.T) {
	c := New(Policy{DefaultIdleTimeout: time.Second, MaxBackends: 2})
	for _, k := range []string{"a", "b"} {
		if _, err := c.MarkActivity(k, t0); err != nil {
			t.Fatalf("MarkActivity(%q): got %v; want nil", k, err)
		}
	}
	tests := []struct {
		name    string
		before  func()
		key     string
		wantErr error
		wantCh  Change
		wantLen int
	}{
		{name: "new key beyond the limit", key: "c", wantErr: ErrFull, wantLen: 2},
		{name: "tracked key refreshes", key: "a", wantCh: 0, wantLen: 2},
		{name: "draining key rearms", before: func() { c.MarkDraining("b", t0) }, key: "b", wantCh: Rearmed, wantLen: 2},
		{name: "quiesced still counts toward the limit", before: func() { c.MarkQuiesced("b", t0) }, key: "c", wantErr: ErrFull, wantLen: 2},
		{name: "room after remove", before: func() { c.Remove("b") }, key: "c", wantCh: Added, wantLen: 2},
		{name: "full again", key: "d", wantErr: ErrFull, wantLen: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.before != nil {
				tt.before()
			}
			ch, err := c.MarkActivity(tt.key, t0.Add(time.Millisecond))
			if !errors.Is(err, tt.wantErr) || ch != tt.wantCh {
				t.Fatalf("MarkActivity(%q): got %03b, %v; want %03b, %v", tt.key, ch, err, tt.wantCh, tt.wantErr)
			}
			if got := c.Len(); got != tt.wantLen {
				t.Errorf("Len: got %d; want %d", got, tt.wantLen)
			}
			if _, ok := c.Get(tt.key, t0); ok != (tt.wantErr == nil) {
				t.Errorf("Get(%q): got tracked %v; want %v", tt.key, ok, tt.wantErr == nil)
			}
			checkInvariants(t, c)
		})
	}
	if got := ErrFull.Error(); !strings.HasPrefix(got, "coordinator: ") {
		t.Errorf("ErrFull: got %q; want the package prefix", got)
	}

	unbounded := New(Policy{})
	for i := range 1000 {
		if _, err := unbounded.MarkActivity(strconv.Itoa(i), t0); err != nil {
			t.Fatalf("MaxBackends 0, key %d: got %v; want nil", i, err)
		}
	}
	if got := unbounded.Len(); got != 1000 {
		t.Errorf("MaxBackends 0: got Len %d; want 1000", got)
	}
}

func TestHugeTimeout(t *testing.T) {
	const huge = time.Duration(math.MaxInt64)
	// Times are kept as int64 nanoseconds from the first time the
	// Coordinator sees (here t0), so deadlines past t0.Add(huge) read as
	// t0.Add(huge): late, never wrapped to the past.
	edge := t0.Add(huge)
	tests := []struct {
		name  string
		first time.Duration // offset of the first call the Coordinator sees
		at    time.Duration // offset of the huge-timeout activity
		// wantDeadline is NextDeadline for the huge backend alone.
		wantDeadline time.Time
		exact        bool // wantDeadline is last+timeout, so it is due there
	}{
		{name: "activity at the epoch", first: 0, at: 0, wantDeadline: edge, exact: true},
		{name: "activity before the epoch", first: time.Hour, at: 0, wantDeadline: edge, exact: true},
		{name: "activity after the epoch", first: 0, at: time.Hour, wantDeadline: edge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(DefaultPolicy())
			mustMark(t, c, "first", t0.Add(tt.first), time.Second)
			mustMark(t, c, "huge", t0.Add(tt.at), huge)
			if got := c.CollectDue(t0.Add(time.Hour + time.Second)); !slices.Equal(dueKeys(got), []string{"first"}) {
				t.Fatalf("CollectDue: got %v; want [first]", dueKeys(got))
			}
			dl, ok := c.NextDeadline()
			if !ok || !dl.Equal(tt.wantDeadline) || !dl.After(t0.Add(200*year)) {
				t.Fatalf("NextDeadline: got %v, %v; want %v, true (no wrap)", dl, ok, tt.wantDeadline)
			}
			for _, now := range []time.Time{t0.Add(time.Hour), t0.Add(100 * year), t0.Add(250 * year), tt.wantDeadline.Add(-1)} {
				if got := c.CollectDue(now); len(got) != 0 {
					t.Fatalf("CollectDue(%v): got %+v; want none", now, got)
				}
				if b, _ := c.Get("huge", now); b.State != Running || b.IdleTimeout != huge || b.IdleFor != max(now.Sub(t0.Add(tt.at)), 0) {
					t.Fatalf("Get at %v: got %+v; want running, timeout %v, idle %v", now, b, huge, now.Sub(t0.Add(tt.at)))
				}
			}
			// A short-timeout backend still comes first and is collected.
			mustMark(t, c, "short", t0.Add(time.Hour), time.Second)
			if dl, _ := c.NextDeadline(); !dl.Equal(t0.Add(time.Hour + time.Second)) {
				t.Errorf("NextDeadline with a short backend: got %v; want %v", dl, t0.Add(time.Hour+time.Second))
			}
			if got := c.CollectDue(t0.Add(2 * time.Hour)); !slices.Equal(dueKeys(got), []string{"short"}) {
				t.Errorf("CollectDue: got %v; want [short]", dueKeys(got))
			}
			if dl, ok := c.NextDeadline(); !ok || !dl.Equal(tt.wantDeadline) {
				t.Errorf("NextDeadline after short drained: got %v, %v; want %v, true", dl, ok, tt.wantDeadline)
			}
			if tt.exact {
				got := c.CollectDue(tt.wantDeadline)
				if len(got) != 1 || got[0].Key != "huge" || got[0].IdleFor != tt.wantDeadline.Sub(t0.Add(tt.at)) ||
					!got[0].Deadline.Equal(tt.wantDeadline) {
					t.Errorf("CollectDue at the huge deadline: got %+v; want huge, idle %v", got, huge)
				}
			}
			checkInvariants(t, c)
		})
	}
}

// TestIdleSaturates checks idle times that do not fit in a Duration (times
// more than 292 years apart) saturate instead of wrapping.
func TestIdleSaturates(t *testing.T) {
	c := New(Policy{DefaultIdleTimeout: time.Hour})
	c.MarkActivity("epoch", t0)
	c.MarkActivity("old", t0.Add(-200*year))
	now := t0.Add(200 * year)
	const maxDur = time.Duration(math.MaxInt64)
	if b, _ := c.Get("old", now); b.IdleFor != maxDur {
		t.Errorf("Get IdleFor: got %v; want %v", b.IdleFor, maxDur)
	}
	due := c.CollectDue(now)
	if len(due) != 2 {
		t.Fatalf("CollectDue: got %v; want [old epoch]", dueKeys(due))
	}
	for _, d := range due {
		want := now.Sub(t0.Add(-200 * year)) // time.Time.Sub saturates too
		if d.Key == "epoch" {
			want = 200 * year
		}
		if d.IdleFor != want {
			t.Errorf("%s: got IdleFor %v; want %v", d.Key, d.IdleFor, want)
		}
	}
}
