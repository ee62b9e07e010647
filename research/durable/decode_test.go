//go:build durableresearch

package durable

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
)

// TestDecodeCost times bus.ParseRecord over N records (default 1M), the
// decode a restart pays whatever the layout, on one core.
func TestDecodeCost(t *testing.T) {
	n := envInt("N", 1000000)
	keys := make([]string, n)
	vals := make([][]byte, n)
	for i := range n {
		keys[i] = keyOf(i)
		vals[i] = bus.EncodeRecord(coordinator.Record{Key: keys[i], IdleTimeout: 30 * time.Second, State: coordinator.Running, Generation: uint64(i)})
	}
	t0 := time.Now()
	for i := range n {
		if _, err := bus.ParseRecord(keys[i], vals[i]); err != nil {
			t.Fatal(err)
		}
	}
	el := time.Since(t0)
	t.Logf("bus.ParseRecord: %d records in %v (%.0f ns/record; a %d-byte record: %s); load %s", n, el.Round(time.Millisecond), float64(el.Nanoseconds())/float64(n), len(vals[0]), vals[0], load())
}

// TestDecodeBinary times decoding the same records from a compact binary
// form (<u8 key len><key><uvarint timeout_ms><u8 state><uvarint
// generation><u8 reason>), as a snapshot chunk could hold them.
func TestDecodeBinary(t *testing.T) {
	n := envInt("N", 1000000)
	var buf []byte
	for i := range n {
		k := keyOf(i)
		buf = append(buf, byte(len(k)))
		buf = append(buf, k...)
		buf = binary.AppendUvarint(buf, 30000)
		buf = append(buf, 1)
		buf = binary.AppendUvarint(buf, uint64(i))
		buf = append(buf, 0)
	}
	recs := make([]coordinator.Record, 0, n)
	t0 := time.Now()
	for b := buf; len(b) > 0; {
		kl := int(b[0])
		key := string(b[1 : 1+kl])
		b = b[1+kl:]
		to, m := binary.Uvarint(b)
		b = b[m:]
		st := coordinator.State(b[0])
		b = b[1:]
		gen, m := binary.Uvarint(b)
		b = b[m+1:]
		recs = append(recs, coordinator.Record{Key: key, IdleTimeout: time.Duration(to) * time.Millisecond, State: st, Generation: gen})
	}
	el := time.Since(t0)
	t.Logf("binary decode: %d records (%.1f MB) in %v (%.0f ns/record, key string allocated); load %s", len(recs), float64(len(buf))/(1<<20), el.Round(time.Millisecond), float64(el.Nanoseconds())/float64(n), load())
}
