package store

import (
	"encoding/base64"
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
)

// TestEntryRoundTrip: every record shape decodes to itself.
func TestEntryRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		rec  coordinator.Record
		lsn  uint64
		del  bool
	}{
		{"running", coordinator.Record{Key: "a.b", IdleTimeout: 30 * time.Second, State: coordinator.Running, Generation: 1}, 1, false},
		{"draining with reason", coordinator.Record{Key: "dev-7.gopls.0%2E16.h", IdleTimeout: time.Millisecond, State: coordinator.Draining, Generation: 1 << 40, Reason: coordinator.BrokerShutdown}, 1 << 50, false},
		{"quiesced", coordinator.Record{Key: "q", IdleTimeout: 24 * time.Hour, State: coordinator.Quiesced, Generation: 0, Reason: coordinator.Maintenance}, maxLSN, false},
		{"delete", coordinator.Record{Key: "gone.key"}, 9, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b []byte
			if tt.del {
				b = appendDelete(nil, tt.lsn, tt.rec.Key)
			} else {
				b = appendUpsert(nil, tt.lsn, &tt.rec)
			}
			e, rest, err := decodeEntry(b)
			if err != nil || len(rest) != 0 {
				t.Fatalf("decode: %v, %d bytes left", err, len(rest))
			}
			if e.lsn != tt.lsn || e.delete != tt.del || (tt.del && e.rec.Key != tt.rec.Key) || (!tt.del && e.rec != tt.rec) {
				t.Errorf("got %+v; want lsn %d delete %v %+v", e, tt.lsn, tt.del, tt.rec)
			}
		})
	}
}

// TestEntryRefusesCorrupt: each kind of damage is refused with ErrCorrupt.
func TestEntryRefusesCorrupt(t *testing.T) {
	good := appendUpsert(nil, 3, &coordinator.Record{Key: "a.b", IdleTimeout: time.Second, State: coordinator.Running, Generation: 2})
	bad := func(f func([]byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"unknown kind", bad(func(b []byte) []byte { b[0] = 9; return b })},
		{"truncated", good[:len(good)-1]},
		{"key longer than the entry", bad(func(b []byte) []byte { b[2] = 200; return b })},
		{"bad key", appendDelete(nil, 1, "a..b")},
		{"key too long", appendDelete(nil, 1, string(make([]byte, bus.MaxKeyBytes+1)))},
		{"state 0", bad(func(b []byte) []byte { b[len(b)-3] = 0; return b })},
		{"state 4", bad(func(b []byte) []byte { b[len(b)-3] = 4; return b })},
		{"reason out of range", bad(func(b []byte) []byte { b[len(b)-1] = 200; return b })},
		{"lsn 0", appendDelete(nil, 0, "k")},
		{"lsn near wrapping", appendDelete(nil, maxLSN+1, "k")},
		{"timeout beyond a century", appendUpsert(nil, 1, &coordinator.Record{Key: "k", IdleTimeout: time.Duration(maxTimeoutNS + 1), State: coordinator.Running})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := decodeEntry(tt.b); !errors.Is(err, ErrCorrupt) {
				t.Errorf("decode %x: %v; want ErrCorrupt", tt.b, err)
			}
		})
	}
}

// TestApplyKeepsHighestLSN: whatever order entries arrive in, the one with
// the highest lsn wins, deletes included.
func TestApplyKeepsHighestLSN(t *testing.T) {
	rec := func(gen uint64) *coordinator.Record {
		return &coordinator.Record{Key: "k", IdleTimeout: time.Second, State: coordinator.Running, Generation: gen}
	}
	s := testStore(1)
	p := s.parts[0]
	var b []byte
	b = appendUpsert(b, 5, rec(5))
	b = appendDelete(b, 7, "k")
	b = appendUpsert(b, 6, rec(6))
	if _, err := s.applyEntries(s.parts, 0, b, false); err != nil {
		t.Fatal(err)
	}
	if v := p.recs["k"]; !v.tombstone() || v.lsn() != 7 || p.lsn != 7 {
		t.Fatalf("after upsert 5, delete 7, upsert 6: %+v (lsn %d); want the tombstone of 7", v, p.lsn)
	}
	if _, err := s.applyEntries(s.parts, 0, appendUpsert(nil, 8, rec(8)), false); err != nil {
		t.Fatal(err)
	}
	if v := p.recs["k"]; v.gen != 8 {
		t.Fatalf("after upsert 8: %+v; want generation 8", v)
	}
}

// FuzzDecodeEntries: whatever a log message or snapshot chunk holds,
// applying it never panics, never keeps an invalid record, and what it
// applied re-encodes to entries that decode the same.
func FuzzDecodeEntries(f *testing.F) {
	f.Add(appendUpsert(appendDelete(nil, 2, "x.y"), 3, &coordinator.Record{Key: "a.b", IdleTimeout: time.Second, State: coordinator.Draining, Generation: 9, Reason: coordinator.IdleTimeout}))
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add([]byte{2, 1, 3, 'a', '.', 'b'})
	f.Fuzz(func(t *testing.T, data []byte) {
		s := testStore(4)
		p := s.parts[1]
		_, _ = s.applyEntries(s.parts, 1, data, false)
		for key, v := range p.recs {
			if bus.ValidateKey(key) != nil || s.partOf(key) != 1 {
				t.Fatalf("kept invalid key %q (partition %d of 4, applied to 1)", key, s.partOf(key))
			}
			if v.tombstone() {
				continue
			}
			if v.state() > coordinator.Quiesced || int(v.reason()) >= coordinator.NumReasons || uint64(v.timeout) > maxTimeoutNS || v.lsn() > p.lsn {
				t.Fatalf("kept invalid record %q %+v (partition lsn %d)", key, v, p.lsn)
			}
			rec := v.record(key)
			e, rest, err := decodeEntry(appendUpsert(nil, v.lsn(), &rec))
			if err != nil || len(rest) != 0 || e.rec != rec {
				t.Fatalf("%+v does not round-trip: %+v %v", rec, e, err)
			}
		}
	})
}

// FuzzEventRecord: whatever an event's Idle-Record header holds, the tail
// reader applies it only when it is one draining record of the event's
// own key.
func FuzzEventRecord(f *testing.F) {
	good := appendUpsert(nil, 4, &coordinator.Record{Key: "svc.a", IdleTimeout: time.Second, State: coordinator.Draining, Generation: 3, Reason: coordinator.IdleTimeout})
	f.Add("svc.a", base64.RawStdEncoding.EncodeToString(good))
	f.Add("svc.b", base64.RawStdEncoding.EncodeToString(good))
	f.Add("svc.a", "!!")
	f.Add("svc.a", base64.RawStdEncoding.EncodeToString(append(good, good...)))
	f.Fuzz(func(t *testing.T, key, header string) {
		if bus.ValidateKey(key) != nil {
			return
		}
		s := testStore(4)
		err := s.applyTail(s.parts, s.l.subj.Quiesce(key), header, []byte("{}"), 10, make([]uint64, 4))
		n := 0
		for _, p := range s.parts {
			for k, v := range p.recs {
				n++
				if k != key || v.state() != coordinator.Draining {
					t.Fatalf("event of %q applied %q %+v", key, k, v)
				}
			}
		}
		if err != nil && n > 0 {
			t.Fatalf("refused (%v) yet applied", err)
		}
	})
}

// TestValuePacking: a record packed with its lsn comes back whole, for every
// state and reason and the largest lsn.
func TestValuePacking(t *testing.T) {
	for _, st := range []coordinator.State{coordinator.Running, coordinator.Draining, coordinator.Quiesced} {
		for r := range coordinator.Reason(coordinator.NumReasons) {
			for _, lsn := range []uint64{1, maxLSN} {
				rec := coordinator.Record{Key: "k", IdleTimeout: 36 * time.Hour, State: st, Generation: 1<<62 + 5, Reason: r}
				v := valueOf(&rec, lsn)
				if got := v.record("k"); got != rec || v.lsn() != lsn || v.tombstone() {
					t.Errorf("valueOf(%+v, %d): back %+v lsn %d", rec, lsn, got, v.lsn())
				}
			}
		}
	}
	if v := tombstone(maxLSN); !v.tombstone() || v.lsn() != maxLSN {
		t.Errorf("tombstone: %+v", v)
	}
}

// TestMergeSorted: sorted runs, empty ones among them, merge into one sorted
// slice holding every record once.
func TestMergeSorted(t *testing.T) {
	for _, runs := range [][][]string{
		nil,
		{{"a", "c"}},
		{{"b", "d", "f"}, {}, {"a", "c", "e", "g"}, {"h"}},
		{{"a"}, {"b"}, {"c"}, {"d"}, {"e"}},
	} {
		var in [][]coordinator.Record
		want := 0
		for _, r := range runs {
			var recs []coordinator.Record
			for _, k := range r {
				recs = append(recs, coordinator.Record{Key: k})
			}
			in = append(in, recs)
			want += len(r)
		}
		out := mergeSorted(in, want)
		if len(out) != want || !slices.IsSortedFunc(out, byKey) {
			t.Errorf("mergeSorted(%v) = %v", runs, out)
		}
	}
}

// testStore is a Store with n empty partitions and no connection, for the
// decoding paths.
func testStore(n int) *Store {
	s := &Store{cfg: Config{Partitions: n}, l: newLayout(bus.MustSubjects("idle"))}
	for range n {
		s.parts = append(s.parts, &part{recs: map[string]value{}})
	}
	return s
}

// TestApplyRefusesMisplacedKeys: an entry of a key of another partition is
// refused, not applied.
func TestApplyRefusesMisplacedKeys(t *testing.T) {
	s := testStore(4)
	key := "misplaced.key"
	other := (s.partOf(key) + 1) % 4
	_, err := s.applyEntries(s.parts, other, appendUpsert(nil, 1, &coordinator.Record{Key: key, IdleTimeout: time.Second, State: coordinator.Running, Generation: 1}), false)
	if !errors.Is(err, ErrCorrupt) || len(s.parts[other].recs) != 0 {
		t.Fatalf("applying %q to partition %d: %v, %d records; want ErrCorrupt and none", key, other, err, len(s.parts[other].recs))
	}
}

// TestLoseIgnoresEarlierClaims: a refusal of a write fenced on an earlier
// claim of this store leaves the current claim standing; one fenced on the
// current claim loses the partition.
func TestLoseIgnoresEarlierClaims(t *testing.T) {
	for _, tt := range []struct {
		token    string
		wantLost bool
	}{{"3", false}, {"5", true}} {
		s := testStore(1)
		s.lost = make(chan int, 1)
		s.log = slog.New(slog.DiscardHandler)
		s.setToken(0, 5)
		h := nats.Header{}
		h.Set(hdrExpectSeq, tt.token)
		s.lose(&write{msg: &nats.Msg{Header: h}, part: 0, fence: 0, kind: kindLog}, errors.New("wrong last sequence: 7"))
		if got := s.parts[0].lost; got != tt.wantLost {
			t.Errorf("refusal of a write fenced on %s with claim 5: lost %v; want %v", tt.token, got, tt.wantLost)
		}
	}
}
