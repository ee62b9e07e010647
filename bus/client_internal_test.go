package bus

import (
	"testing"
	"time"
)

// TestHeartbeatOptions: the interval and body a Heartbeater ends up with for
// each combination of options, in either order, and the refusals.
func TestHeartbeatOptions(t *testing.T) {
	tests := []struct {
		name         string
		opts         []HeartbeatOption
		wantInterval time.Duration
		wantBody     string
		wantErr      bool
	}{
		{"defaults", nil, DefaultHeartbeatInterval, "", false},
		{"interval", []HeartbeatOption{WithInterval(2 * time.Second)}, 2 * time.Second, "", false},
		{"timeout sets a third", []HeartbeatOption{WithIdleTimeout(9 * time.Second)}, 3 * time.Second, `{"idle_timeout_ms":9000}`, false},
		{"interval then timeout", []HeartbeatOption{WithInterval(time.Second), WithIdleTimeout(9 * time.Second)}, time.Second, `{"idle_timeout_ms":9000}`, false},
		{"zero timeout", []HeartbeatOption{WithIdleTimeout(0)}, time.Millisecond, `{"idle_timeout_ms":0}`, false},
		{"zero interval", []HeartbeatOption{WithInterval(0)}, 0, "", true},
		{"negative interval", []HeartbeatOption{WithInterval(-time.Second)}, 0, "", true},
		{"negative timeout", []HeartbeatOption{WithIdleTimeout(-time.Second)}, 0, "", true},
	}
	nc := newHandleWorker(t).nc
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := NewHeartbeater(nc, Subjects{}, "dev-7.svc", tt.opts...)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("NewHeartbeater: got interval %v; want an error", h.interval)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewHeartbeater: %v", err)
			}
			if h.interval != tt.wantInterval || string(h.body) != tt.wantBody {
				t.Errorf("got interval %v, body %q; want %v, %q", h.interval, h.body, tt.wantInterval, tt.wantBody)
			}
		})
	}
}
