package bus

import (
	"errors"
	"testing"
	"time"

	"github.com/idle-worker/idle-worker/coordinator"
)

func TestRecordRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		rec  coordinator.Record
	}{
		{"running", coordinator.Record{Key: "a.b", IdleTimeout: 30 * time.Second, State: coordinator.Running, Generation: 1}},
		{"draining by emission", coordinator.Record{Key: "dev-7.gopls.0%2E16%2E1.9f2c", IdleTimeout: time.Millisecond, State: coordinator.Draining, Generation: 1 << 40, Reason: coordinator.IdleTimeout}},
		{"draining by report", coordinator.Record{Key: "k", IdleTimeout: time.Hour, State: coordinator.Draining, Generation: 7}},
		{"quiesced after maintenance", coordinator.Record{Key: `q"\x`, IdleTimeout: 24 * time.Hour, State: coordinator.Quiesced, Generation: 9, Reason: coordinator.Maintenance}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRecord(tt.rec.Key, EncodeRecord(tt.rec))
			if err != nil {
				t.Fatalf("ParseRecord(EncodeRecord(%+v)): %v", tt.rec, err)
			}
			if got != tt.rec {
				t.Errorf("round trip: got %+v; want %+v", got, tt.rec)
			}
			k, ok := ParseStoreKey(StoreKey(tt.rec.Key))
			if !ok || k != tt.rec.Key {
				t.Errorf("store key round trip of %q: got %q, %v; want the key back", tt.rec.Key, k, ok)
			}
		})
	}
}

func TestParseRecordRejects(t *testing.T) {
	tests := []struct{ name, key, body string }{
		{"not an object", "k", `[]`},
		{"bad key", "a..b", `{"timeout_ms":1,"state":"running","generation":1}`},
		{"negative timeout", "k", `{"timeout_ms":-1,"state":"running","generation":1}`},
		{"unknown state", "k", `{"timeout_ms":1,"state":"sleeping","generation":1}`},
		{"no state", "k", `{"timeout_ms":1,"generation":1}`},
		{"unknown reason", "k", `{"timeout_ms":1,"state":"draining","generation":1,"reason":"boredom"}`},
		{"string generation", "k", `{"timeout_ms":1,"state":"running","generation":"1"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if rec, err := ParseRecord(tt.key, []byte(tt.body)); !errors.Is(err, ErrBadPayload) && !errors.Is(err, ErrBadKey) {
				t.Errorf("ParseRecord(%q, %s): got %+v, %v; want an error wrapping ErrBadPayload", tt.key, tt.body, rec, err)
			}
		})
	}
}

// FuzzParseRecord: a stored record never crashes the loader, and whatever it
// accepts encodes back to a record that parses to the same value.
func FuzzParseRecord(f *testing.F) {
	f.Add("k", []byte(`{"timeout_ms":30000,"state":"running","generation":1}`))
	f.Add("a.b", []byte(`{"timeout_ms":0,"state":"draining","generation":18446744073709551615,"reason":"idle_timeout"}`))
	f.Add("q", []byte(`{"timeout_ms":1,"state":"quiesced","generation":2,"reason":"maintenance","extra":[1,{"x":"}"}]}`))
	f.Add("k", []byte(`{"timeout_ms":9223372036855,"state":"running","generation":1}`))
	f.Add("k", []byte(`{"STATE":"running"}`))
	f.Fuzz(func(t *testing.T, key string, body []byte) {
		rec, err := ParseRecord(key, body)
		if err != nil {
			if !errors.Is(err, ErrBadPayload) && !errors.Is(err, ErrBadKey) {
				t.Fatalf("ParseRecord(%q, %q) = %v; want an error wrapping ErrBadPayload", key, body, err)
			}
			return
		}
		again, err := ParseRecord(key, EncodeRecord(rec))
		if err != nil || again != rec {
			t.Fatalf("re-encoded %+v parses to %+v, %v; want the same record", rec, again, err)
		}
	})
}

// FuzzStoreKey: every valid backend key maps to a store key and back.
func FuzzStoreKey(f *testing.F) {
	for _, k := range []string{"a", "a.b.c", "dev-7.gopls.0%2E16%2E1.9f2c", `x=y."q"`, "a/b"} {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, key string) {
		if ValidateKey(key) != nil {
			return
		}
		kv := StoreKey(key)
		for i := 0; i < len(kv); i++ {
			c := kv[i]
			if !(plain(c) || c == '.' || c == '/' || c == '=') {
				t.Fatalf("StoreKey(%q) = %q holds byte %q, not allowed in a KV key", key, kv, c)
			}
		}
		if back, ok := ParseStoreKey(kv); !ok || back != key {
			t.Fatalf("ParseStoreKey(StoreKey(%q)) = %q, %v; want the key back", key, back, ok)
		}
	})
}

// FuzzCanonicalRecord: whatever the fast path accepts, the general decoder
// reads the same way, so the two paths of ParseRecord never disagree.
func FuzzCanonicalRecord(f *testing.F) {
	for _, s := range []string{
		`{"timeout_ms":30000,"state":"running","generation":1}`,
		`{"timeout_ms":0,"state":"draining","generation":18446744073709551615,"reason":"idle_timeout"}`,
		`{"timeout_ms":01,"state":"running","generation":1}`,
		`{"timeout_ms":1,"state":"running","generation":18446744073709551616}`,
		`{"timeout_ms":1,"state":"r\u0075nning","generation":1}`,
		`{"timeout_ms":1,"state":"running","generation":1,"reason":""}`,
		`{"timeout_ms":1,"state":"running","generation":1} `,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fast, ok := parseCanonicalRecord(data)
		if !ok {
			return
		}
		var slow record
		err := decodeObject(data, "registry record",
			member{"timeout_ms", &slow.TimeoutMS}, member{"state", &slow.State},
			member{"generation", &slow.Generation}, member{"reason", &slow.Reason})
		if err != nil || slow != fast {
			t.Fatalf("%s: fast path read %+v, the decoder %+v (%v)", data, fast, slow, err)
		}
	})
}

func BenchmarkParseRecord(b *testing.B) {
	data := EncodeRecord(coordinator.Record{Key: "k", IdleTimeout: 30 * time.Second, State: coordinator.Draining, Generation: 123456, Reason: coordinator.IdleTimeout})
	for b.Loop() {
		if _, err := ParseRecord("dev-7.gopls.1.aa", data); err != nil {
			b.Fatal(err)
		}
	}
}
