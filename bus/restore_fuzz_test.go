package bus

import (
	"context"
	"encoding/binary"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/idle-worker/idle-worker/coordinator"
)

// storedState is a Registry whose Load returns a fixed state, for the
// restore fuzzer.
type storedState struct {
	countingStore
	st  storedRecords
	ids []string // ids stored by StoreID
}

func (r *storedState) Load(context.Context) (RegistryState, error) {
	return RegistryState{ID: r.st.ID, HighWater: r.st.HighWater}, nil
}
func (r *storedState) Claim(context.Context, []int) (Claimed, error) {
	return Claimed{Records: r.st.Records, HighWater: r.st.HighWater}, nil
}
func (r *storedState) Reserve(_ context.Context, floor, _ uint64) (uint64, error) {
	return max(floor, 1), nil
}
func (r *storedState) StoreID(_ context.Context, id string) error {
	r.ids = append(r.ids, id)
	return nil
}

// decodeState turns fuzz bytes into a registry state: an id, a high-water
// mark and records of up to 8 keys with any state, reason and generation.
// storedRecords is what storedState holds: an identity and records.
type storedRecords struct {
	ID        string
	HighWater uint64
	Records   []coordinator.Record
}

func decodeState(id string, hwm uint64, data []byte) storedRecords {
	st := storedRecords{ID: id, HighWater: hwm}
	for i := 0; len(data) >= 11 && i < 32; i++ {
		rec := coordinator.Record{
			Key:         "k." + strconv.Itoa(int(data[0]%8)),
			State:       coordinator.State(data[1] % 4),
			Reason:      coordinator.Reason(data[2] % 4),
			Generation:  binary.LittleEndian.Uint64(data[3:11]),
			IdleTimeout: time.Duration(data[1]) * time.Hour,
		}
		if rec.State == 0 {
			rec.State = coordinator.Running
		}
		st.Records = append(st.Records, rec)
		data = data[11:]
	}
	return st
}

// FuzzRestore: whatever the registry holds, restoring it never panics, and
// afterwards no two backends can be sent the same event id, none wraps, the
// id space is usable, and every timeout is within the maximum.
func FuzzRestore(f *testing.F) {
	f.Add("reg", uint64(100), []byte("\x00\x01\x00\x05\x00\x00\x00\x00\x00\x00\x00\x01\x01\x00\x05\x00\x00\x00\x00\x00\x00\x00"))
	f.Add("reg", uint64(0), []byte("\x00\x02\x01\xff\xff\xff\xff\xff\xff\xff\xff"))
	f.Add(`{"ok":true}`, uint64(1<<63), []byte("\x03\x02\x02\x07\x00\x00\x00\x00\x00\x00\x00"))
	f.Add("", uint64(5), []byte{})
	nc := newHandleWorker(f).nc
	f.Fuzz(func(t *testing.T, id string, hwm uint64, data []byte) {
		reg := &storedState{st: decodeState(id, hwm, data)}
		w, err := NewWorker(nc, WorkerConfig{Policy: coordinator.DefaultPolicy(), MaxTimeout: time.Hour, Store: reg})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.restore(context.Background()); err != nil {
			t.Fatalf("restore: %v", err)
		}
		if checkIDSpace(RegistryState{ID: w.incarn, HighWater: 1}) != "" || strings.Contains(w.incarn, "-") {
			t.Fatalf("incarnation %q is not a usable registry id", w.incarn)
		}
		if w.coord.Generation() > maxGeneration || w.hwm <= w.coord.Generation() {
			t.Fatalf("generation %d, high-water mark %d: want the mark above it and both far from wrapping", w.coord.Generation(), w.hwm)
		}
		// Every backend that is or will be drained carries a distinct
		// generation: drain them all and compare.
		now := time.Now()
		seen := map[uint64]string{}
		for i := range 8 {
			k := "k." + strconv.Itoa(i)
			w.coord.Force(k, now, coordinator.Maintenance)
			if b, ok := w.coord.Get(k, now); ok && b.IdleTimeout > time.Hour {
				t.Fatalf("%s restored with timeout %v above the maximum", k, b.IdleTimeout)
			}
		}
		for _, d := range w.coord.CollectDue(now.Add(2 * time.Hour)) {
			if d.Generation == 0 || d.Generation > maxGeneration {
				t.Fatalf("%s drained with generation %d", d.Key, d.Generation)
			}
			if other, dup := seen[d.Generation]; dup && other != d.Key {
				t.Fatalf("%s and %s share generation %d", d.Key, other, d.Generation)
			}
			seen[d.Generation] = d.Key
		}
	})
}
