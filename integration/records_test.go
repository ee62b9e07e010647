package integration

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/internal/natstest"
	"github.com/idle-worker/idle-worker/partition"
	"github.com/idle-worker/idle-worker/store"
)

// hostileLSN numbers the entries the tests write, far above the worker's
// own, so that they win over anything stored for the same key.
const hostileLSN = 1 << 40

// rec is a record of key for the tests' tables.
func rec(key string, timeout time.Duration, state coordinator.State, gen uint64, reason coordinator.Reason) coordinator.Record {
	return coordinator.Record{Key: key, IdleTimeout: timeout, State: state, Generation: gen, Reason: reason}
}

// recordHeader is an event's Idle-Record header holding raw.
func recordHeader(raw []byte) nats.Header {
	return nats.Header{storeRecordHeader: []string{base64.RawStdEncoding.EncodeToString(raw)}}
}

// forgedEvent stores an event of key through the stream's input, as the
// worker does, with header h: the stream keeps it as P.quiesce.<key>.
func forgedEvent(v *storeView, partitions int, key string, h nats.Header) {
	v.t.Helper()
	body, _ := json.Marshal(map[string]any{
		"id": "forged-1", "key": key, "reason": "idle_timeout", "idle_for_ms": 1, "configured_timeout_ms": 1,
		"at": time.Now().UTC().Format(time.RFC3339Nano), "attempt": 1,
	})
	if h == nil {
		h = nats.Header{}
	}
	h.Set("Nats-Msg-Id", "forged-"+key)
	v.put(storeEventIn(partition.Of(key, partitions), key), body, h)
}

// Stored records are data anyone allowed to publish under P.store. can
// write. A record keeps its generation, so a drain sent before a crash is
// re-sent with its id; one whose generation could wrap, lies above the
// high-water mark or repeats another's would reuse an event id, and gets a
// fresh generation instead. A timeout above IDLE_MAX_TIMEOUT is clamped.
// What does not decode (a log message, an event's record, a snapshot
// manifest or chunk) is skipped and counted. An unreadable, missing or
// absurd id or high-water mark starts a new id space. Whatever the store
// says, the worker serves and no event id repeats.
func TestHandWrittenRecords(t *testing.T) {
	const parts = store.DefaultPartitions
	running, draining := coordinator.Running, coordinator.Draining
	hwA := rec("hw.a", time.Minute, running, 3, 0)
	tests := []struct {
		name        string
		write       func(t *testing.T, v *storeView, hwm uint64)
		wantSkipped int64
		wantKeys    []string // restored, sorted
		newIDSpace  bool
	}{
		{
			name: "unsafe generations and a huge timeout",
			write: func(t *testing.T, v *storeView, hwm uint64) {
				v.putRecords(parts, hostileLSN,
					// Running: kept generations, fresh ones where unsafe.
					rec("hw.max", time.Minute, running, math.MaxUint64, 0),
					rec("hw.dup1", time.Minute, running, 1, 0),
					rec("hw.dup2", time.Minute, running, 1, 0),
					rec("hw.zero", time.Minute, running, 0, 0),
					rec("hw.long", 240*time.Hour, running, 8, 0),
					// Sent drains keep their generation too, unless unsafe.
					rec("hw.above", time.Minute, draining, hwm+1000, coordinator.IdleTimeout),
					rec("hw.wrap", time.Minute, draining, math.MaxUint64, coordinator.IdleTimeout),
					rec("hw.d1", time.Minute, draining, 9, coordinator.Maintenance),
					rec("hw.d2", time.Minute, draining, 9, coordinator.Maintenance),
				)
				// Undecodable: a truncated entry, and a key that is not one.
				v.put(storeLog(0), []byte{1, 0x80}, nil)
				v.put(storeLog(1), appendUpsert(nil, hostileLSN, rec("hw..bad", time.Minute, running, 4, 0)), nil)
			},
			wantSkipped: 9, // renewed: max, one dup, zero, above, wrap, one d; clamped: long; skipped: truncated, bad key
			wantKeys:    []string{"hw.above", "hw.d1", "hw.d2", "hw.dup1", "hw.dup2", "hw.long", "hw.max", "hw.wrap", "hw.zero"},
		},
		{
			name: "forged events",
			write: func(t *testing.T, v *storeView, hwm uint64) {
				forgedEvent(v, parts, "hw.ev.ok", recordHeader(appendUpsert(nil, hostileLSN, rec("hw.ev.ok", time.Minute, draining, 5, coordinator.IdleTimeout))))
				forgedEvent(v, parts, "hw.ev.b64", nats.Header{storeRecordHeader: []string{"not base64!"}})
				forgedEvent(v, parts, "hw.ev.other", recordHeader(appendUpsert(nil, hostileLSN, rec("hw.ev.ok2", time.Minute, draining, 6, coordinator.IdleTimeout))))
				forgedEvent(v, parts, "hw.ev.run", recordHeader(appendUpsert(nil, hostileLSN, rec("hw.ev.run", time.Minute, running, 7, 0))))
				forgedEvent(v, parts, "hw.ev.del", recordHeader(appendDelete(nil, hostileLSN, "hw.ev.del")))
				forgedEvent(v, parts, "hw.ev.v1", nil) // no record: a v1 event, not read
			},
			wantSkipped: 4, // bad base64, another key's record, a running record, a delete
			wantKeys:    []string{"hw.ev.ok"},
		},
		{
			name: "snapshot manifest unreadable",
			write: func(t *testing.T, v *storeView, hwm uint64) {
				v.putRecords(parts, hostileLSN, hwA)
				v.put(storeSnap(partition.Of(hwA.Key, parts)), []byte(`{"ok":true}`), nil)
			},
			wantSkipped: 1, // the manifest; the partition restarts from its log
			wantKeys:    []string{"hw.a"},
		},
		{
			name: "snapshot chunks missing",
			write: func(t *testing.T, v *storeView, hwm uint64) {
				// hw.a is in the log the manifest claims to cover, so lost
				// with the chunks; hw.b, stored after it, is kept.
				b := rec(relSamePartition(t, hwA.Key, "hw.b"), time.Minute, running, 4, 0)
				v.putRecords(parts, hostileLSN, hwA)
				info, err := v.stream.Info(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				m, _ := json.Marshal(storeManifest{ID: "gone", Chunks: 2, Records: 9, Covers: info.State.LastSeq, LSN: hostileLSN})
				v.put(storeSnap(partition.Of(hwA.Key, parts)), m, nil)
				v.putRecords(parts, hostileLSN+1, b)
			},
			wantSkipped: 2, // one per missing chunk
			wantKeys:    []string{"hw.b.?"},
		},
		{
			name: "high-water mark deleted",
			write: func(t *testing.T, v *storeView, hwm uint64) {
				v.putRecords(parts, hostileLSN, hwA)
				v.purge(storeHWMSubject)
			},
			wantKeys:    []string{"hw.a"},
			wantSkipped: 1, // hw.a's generation renewed: the new id space's block starts at 1
			newIDSpace:  true,
		},
		{
			name: "high-water mark at the top of the range",
			write: func(t *testing.T, v *storeView, hwm uint64) {
				v.putRecords(parts, hostileLSN, hwA)
				v.put(storeHWMSubject, []byte("18446744073709551615"), nil)
			},
			wantKeys:    []string{"hw.a"},
			wantSkipped: 1, // hw.a's generation renewed: the new id space's block starts at 1
			newIDSpace:  true,
		},
		{
			name: "high-water mark replaced by a reply",
			write: func(t *testing.T, v *storeView, hwm uint64) {
				v.putRecords(parts, hostileLSN, hwA)
				v.put(storeHWMSubject, []byte(`{"ok":true}`), nil)
			},
			wantKeys:    []string{"hw.a"},
			wantSkipped: 1, // hw.a's generation renewed: the new id space's block starts at 1
			newIDSpace:  true,
		},
		{
			name: "id replaced by a reply",
			write: func(t *testing.T, v *storeView, hwm uint64) {
				v.putRecords(parts, hostileLSN, hwA)
				m, _ := json.Marshal(storeMeta{Format: 2, ID: `{"ok":true,"key":"x"}`, Partitions: parts})
				v.put(storeMetaSubject, m, nil)
			},
			wantKeys:    []string{"hw.a"},
			wantSkipped: 0, // the high-water mark still holds: hw.a keeps its generation
			newIDSpace:  true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, opts, nc, v := storedStore(t)
			oldID := v.waitMeta().ID
			hwm, err := strconv.ParseUint(v.highWater(), 10, 64)
			if err != nil {
				t.Fatalf("high-water mark: %v", err)
			}
			tt.write(t, v, hwm)

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
			// none wraps, and all start with a well-formed store id.
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
					t.Errorf("event id %q; want <store id>-<generation in 1..2^62>", ev.ID)
				}
				if tt.newIDSpace == (reg == oldID) {
					t.Errorf("event id %q: store id %q, old %q; want a new id space: %v", ev.ID, reg, oldID, tt.newIDSpace)
				}
			}
			if n == 0 {
				t.Errorf("admin quiesce hw.>: drained none; want at least hw.new")
			}
		})
	}
}

// storedStore starts a JetStream server and runs a worker with a store
// on it once, so the stream exists with its id and high-water mark, as a
// worker leaves it. It returns the server, the options of that worker, a
// client connection and a view of the stream, for a test to write records
// into before the next worker starts.
func storedStore(t *testing.T) (*server.Server, relOptions, *nats.Conn, *storeView) {
	t.Helper()
	s := startServer(t, natstest.JetStream())
	opts := relOptions{policy: coordinator.Policy{DefaultIdleTimeout: longTimeout}, store: true}
	first, _ := relStartWorker(t, s.ClientURL(), opts)
	if err := first.stop(bound); err != nil {
		t.Fatal(err)
	}
	nc := connect(t, s.ClientURL())
	return s, opts, nc, openStoreView(t, nc)
}
