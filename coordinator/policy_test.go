package coordinator

import (
	"math"
	"testing"
	"time"
)

func TestDefaultPolicy(t *testing.T) {
	p := DefaultPolicy()
	if p.DefaultIdleTimeout != 30*time.Second {
		t.Errorf("DefaultPolicy().DefaultIdleTimeout: got %v; want 30s", p.DefaultIdleTimeout)
	}
	if p.MaxBackends != 0 {
		t.Errorf("DefaultPolicy().MaxBackends: got %d; want 0 (unbounded)", p.MaxBackends)
	}
	c := New(p)
	if got := c.Policy(); got != p {
		t.Errorf("Policy(): got %+v; want %+v", got, p)
	}
	if _, err := c.MarkActivity("a", t0); err != nil {
		t.Fatalf("MarkActivity: got %v; want nil", err)
	}
	b, _ := c.Get("a", t0)
	if b.IdleTimeout != 30*time.Second {
		t.Errorf("IdleTimeout under DefaultPolicy: got %v; want 30s", b.IdleTimeout)
	}
	if got := c.CollectDue(t0.Add(30*time.Second - 1)); len(got) != 0 {
		t.Errorf("CollectDue 1ns before 30s: got %v; want none", dueKeys(got))
	}
	if got := c.CollectDue(t0.Add(30 * time.Second)); len(got) != 1 {
		t.Errorf("CollectDue at 30s: got %v; want [a]", dueKeys(got))
	}
}

func TestClampTimeout(t *testing.T) {
	tests := []struct {
		name string
		in   time.Duration
		want time.Duration
	}{
		{name: "min int64", in: math.MinInt64, want: time.Millisecond},
		{name: "negative", in: -time.Second, want: time.Millisecond},
		{name: "zero", in: 0, want: time.Millisecond},
		{name: "1ns", in: 1, want: time.Millisecond},
		{name: "just below 1ms", in: time.Millisecond - 1, want: time.Millisecond},
		{name: "1ms", in: time.Millisecond, want: time.Millisecond},
		{name: "above 1ms", in: time.Millisecond + 1, want: time.Millisecond + 1},
		{name: "max int64", in: math.MaxInt64, want: math.MaxInt64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ClampTimeout(tt.in); got != tt.want {
				t.Errorf("ClampTimeout(%v): got %v; want %v", tt.in, got, tt.want)
			}
		})
	}
}

// TestTimeoutClamp checks that zero and negative timeouts clamp to 1 ms both
// as the policy default and per backend, in what Get reports and in when the
// backend becomes due.
func TestTimeoutClamp(t *testing.T) {
	tests := []struct {
		name       string
		policy     time.Duration
		perBackend *time.Duration // nil: MarkActivity with the policy default
		want       time.Duration
	}{
		{name: "policy zero", policy: 0, want: time.Millisecond},
		{name: "policy negative", policy: -5 * time.Second, want: time.Millisecond},
		{name: "policy 1ns", policy: 1, want: time.Millisecond},
		{name: "policy 10s", policy: 10 * time.Second, want: 10 * time.Second},
		{name: "backend zero", policy: time.Hour, perBackend: ptr(time.Duration(0)), want: time.Millisecond},
		{name: "backend negative", policy: time.Hour, perBackend: ptr(-time.Hour), want: time.Millisecond},
		{name: "backend 2ms", policy: time.Hour, perBackend: ptr(2 * time.Millisecond), want: 2 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(Policy{DefaultIdleTimeout: tt.policy})
			var err error
			if tt.perBackend == nil {
				_, err = c.MarkActivity("a", t0)
			} else {
				_, err = c.MarkActivityWithTimeout("a", t0, *tt.perBackend)
			}
			if err != nil {
				t.Fatalf("mark: got %v; want nil", err)
			}
			b, ok := c.Get("a", t0)
			if !ok || b.IdleTimeout != tt.want {
				t.Fatalf("Get: got IdleTimeout %v (tracked %v); want %v", b.IdleTimeout, ok, tt.want)
			}
			if got := c.CollectDue(t0.Add(tt.want - 1)); len(got) != 0 {
				t.Errorf("CollectDue 1ns before %v: got %v; want none", tt.want, dueKeys(got))
			}
			got := c.CollectDue(t0.Add(tt.want))
			if len(got) != 1 || got[0].ConfiguredTimeout != tt.want {
				t.Errorf("CollectDue at %v: got %+v; want one Due with ConfiguredTimeout %v", tt.want, got, tt.want)
			}
		})
	}
}
