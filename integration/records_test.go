package integration

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/internal/natstest"
)

// Registry records are stored data anyone with access to the bucket can
// write. A record keeps its generation, so a drain sent before a crash is
// re-sent with its id; one whose generation could wrap, lies above the
// high-water mark or repeats another's would reuse an event id, and gets a
// fresh generation instead. A timeout above IDLE_MAX_TIMEOUT is clamped.
// An unreadable, missing or absurd id or high-water mark starts a new id
// space. Whatever the records say, no event id repeats.
func TestHandWrittenRecords(t *testing.T) {
	tests := []struct {
		name        string
		entries     map[string]string // written into the bucket before the restart
		deleteHWM   bool              // and m.hwm purged
		wantSkipped int64
		wantKeys    []string // restored, sorted
		newIDSpace  bool
	}{
		{
			name: "unsafe generations and a huge timeout",
			entries: map[string]string{
				// Running: kept generations, fresh ones where unsafe.
				"b.hw.max":  `{"timeout_ms":60000,"state":"running","generation":18446744073709551615}`,
				"b.hw.dup1": `{"timeout_ms":60000,"state":"running","generation":1}`,
				"b.hw.dup2": `{"timeout_ms":60000,"state":"running","generation":1}`,
				"b.hw.zero": `{"timeout_ms":60000,"state":"running","generation":0}`,
				"b.hw.long": `{"timeout_ms":864000000,"state":"running","generation":8}`,
				// Sent drains keep their generation too, unless unsafe.
				"b.hw.above": `{"timeout_ms":60000,"state":"draining","generation":70000,"reason":"idle_timeout"}`,
				"b.hw.wrap":  `{"timeout_ms":60000,"state":"draining","generation":18446744073709551615,"reason":"idle_timeout"}`,
				"b.hw.d1":    `{"timeout_ms":60000,"state":"draining","generation":9,"reason":"maintenance"}`,
				"b.hw.d2":    `{"timeout_ms":60000,"state":"draining","generation":9,"reason":"maintenance"}`,
				// Undecodable, and a second spelling of a key.
				"b.hw.garbage": `{"timeout_ms":`,
				"b.hw=2Ealias": `{"timeout_ms":60000,"state":"running","generation":3}`,
			},
			wantSkipped: 9, // renewed: max, one dup, zero, above, wrap, one d; clamped: long; skipped: garbage, alias
			wantKeys:    []string{"hw.above", "hw.d1", "hw.d2", "hw.dup1", "hw.dup2", "hw.long", "hw.max", "hw.wrap", "hw.zero"},
		},
		{
			name:        "high-water mark deleted",
			entries:     map[string]string{"b.hw.a": `{"timeout_ms":60000,"state":"running","generation":3}`},
			deleteHWM:   true,
			wantKeys:    []string{"hw.a"},
			newIDSpace:  true,
			wantSkipped: 0,
		},
		{
			name:        "high-water mark at the top of the range",
			entries:     map[string]string{"m.hwm": "18446744073709551615", "b.hw.a": `{"timeout_ms":60000,"state":"running","generation":3}`},
			wantKeys:    []string{"hw.a"},
			newIDSpace:  true,
			wantSkipped: 0,
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
			s, opts, nc, kv := storedRegistry(t)
			oldID := relMeta(t, kv, "m.id")
			ctx, cancel := context.WithTimeout(context.Background(), bound)
			defer cancel()
			for k, v := range tt.entries {
				if _, err := kv.PutString(ctx, k, v); err != nil {
					t.Fatalf("put %s: %v", k, err)
				}
			}
			if tt.deleteHWM {
				if err := kv.Purge(ctx, "m.hwm"); err != nil {
					t.Fatal(err)
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

// storedRegistry starts a JetStream server and runs a worker with a registry
// on it once, so the bucket exists with its id and high-water mark, as a
// worker leaves it. It returns the server, the options of that worker, a
// client connection and the bucket, for a test to write records into before
// the next worker starts.
func storedRegistry(t *testing.T) (*server.Server, relOptions, *nats.Conn, jetstream.KeyValue) {
	t.Helper()
	s := startServer(t, natstest.JetStream())
	opts := relOptions{policy: coordinator.Policy{DefaultIdleTimeout: longTimeout}, registry: true}
	first, _ := relStartWorker(t, s.ClientURL(), opts)
	if err := first.stop(bound); err != nil {
		t.Fatal(err)
	}
	nc := connect(t, s.ClientURL())
	return s, opts, nc, relKV(t, nc)
}
