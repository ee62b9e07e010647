package integration

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/internal/natstest"
)

// Registry records are stored data anyone with access to the bucket can
// write. A record whose generation could wrap, lies above the high-water
// mark or repeats another's would make the worker reuse an event id; a
// timeout above IDLE_MAX_TIMEOUT would be restored as is. Such records are
// skipped (or clamped) and counted; an unreadable id or high-water mark
// starts a new id space.
func TestHandWrittenRecords(t *testing.T) {
	tests := []struct {
		name        string
		entries     map[string]string // written into the bucket before the restart
		wantSkipped int64
		wantKeys    []string // restored, sorted
		newIDSpace  bool
	}{
		{
			name: "unsafe generations and a huge timeout",
			entries: map[string]string{
				"b.hw.max":     `{"timeout_ms":60000,"state":"running","generation":18446744073709551615}`,
				"b.hw.above":   `{"timeout_ms":60000,"state":"draining","generation":70000,"reason":"idle_timeout"}`,
				"b.hw.dup1":    `{"timeout_ms":60000,"state":"running","generation":7}`,
				"b.hw.dup2":    `{"timeout_ms":60000,"state":"running","generation":7}`,
				"b.hw.zero":    `{"timeout_ms":60000,"state":"running","generation":0}`,
				"b.hw.long":    `{"timeout_ms":864000000,"state":"running","generation":8}`,
				"b.hw.garbage": `{"timeout_ms":`,
			},
			wantSkipped: 5, // max, above, one dup, zero, garbage
			wantKeys:    []string{"hw.dup?", "hw.long"},
		},
		{
			name:        "id replaced by a reply",
			entries:     map[string]string{"m.id": `{"ok":true,"key":"x"}`, "b.hw.a": `{"timeout_ms":60000,"state":"running","generation":3}`},
			wantKeys:    []string{"hw.a"},
			newIDSpace:  true,
			wantSkipped: 0,
		},
		{
			name:        "high-water mark replaced by a reply",
			entries:     map[string]string{"m.hwm": `{"ok":true}`, "b.hw.a": `{"timeout_ms":60000,"state":"running","generation":3}`},
			wantKeys:    []string{"hw.a"},
			newIDSpace:  true,
			wantSkipped: 0,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := startServer(t, natstest.JetStream())
			opts := relOptions{policy: coordinator.Policy{DefaultIdleTimeout: longTimeout}, registry: true}
			first, _ := relStartWorker(t, s.ClientURL(), opts)
			if err := first.stop(bound); err != nil {
				t.Fatal(err)
			}
			nc := connect(t, s.ClientURL())
			kv := relKV(t, nc)
			oldID := relMeta(t, kv, "m.id")
			ctx, cancel := context.WithTimeout(context.Background(), bound)
			defer cancel()
			for k, v := range tt.entries {
				if _, err := kv.PutString(ctx, k, v); err != nil {
					t.Fatalf("put %s: %v", k, err)
				}
			}

			w, _ := relStartWorker(t, s.ClientURL(), opts)
			if got := w.Stats().RestoreSkipped; got != tt.wantSkipped {
				t.Errorf("RestoreSkipped = %d; want %d", got, tt.wantSkipped)
			}
			keys := listKeys(adminList(t, nc, `{"match":"hw.>"}`))
			if len(keys) != len(tt.wantKeys) {
				t.Fatalf("restored %v; want %v", keys, tt.wantKeys)
			}
			for i, k := range keys {
				if want := tt.wantKeys[i]; k != want && !(strings.HasSuffix(want, "?") && strings.HasPrefix(k, strings.TrimSuffix(want, "?"))) {
					t.Errorf("restored %v; want %v", keys, tt.wantKeys)
				}
			}
			if b, ok := adminGet(t, nc, "hw.long"); ok && b.IdleTimeoutMS != (24*time.Hour).Milliseconds() {
				t.Errorf("hw.long restored with timeout %d ms; want it clamped to 24h", b.IdleTimeoutMS)
			}

			// Drain everything restored, then one new backend: no id repeats,
			// none wraps, and all start with a well-formed registry id.
			events := subscribe(t, nc, prefix+".quiesce.>")
			heartbeat(t, nc, "hw.new", "")
			n := adminQuiesce(t, nc, `{"match":"hw.>"}`)
			ids := map[string]bool{}
			for range n {
				ev := nextEvent(t, events, bound)
				if ids[ev.ID] {
					t.Errorf("event id %s used twice", ev.ID)
				}
				ids[ev.ID] = true
				reg, gen, ok := strings.Cut(ev.ID, "-")
				g, err := strconv.ParseUint(gen, 10, 64)
				if !ok || err != nil || g == 0 || g > 1<<62 || reg == "" || strings.ContainsAny(reg, `{}":`) {
					t.Errorf("event id %q; want <registry id>-<generation in 1..2^62>", ev.ID)
				}
				if tt.newIDSpace == (reg == oldID) {
					t.Errorf("event id %q: registry id %q, old %q; want a new id space: %v", ev.ID, reg, oldID, tt.newIDSpace)
				}
			}
		})
	}
}
