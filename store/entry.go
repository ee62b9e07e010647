package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
)

// An entry is one change of one backend's record, in the binary form that
// log messages, snapshot chunks and the Idle-Record header of events hold:
//
//	upsert: 0x01 <uvarint lsn> <uvarint len(key)> <key> <uvarint timeout_ns> <u8 state> <uvarint generation> <u8 reason>
//	delete: 0x02 <uvarint lsn> <uvarint len(key)> <key>
//
// lsn orders the changes of one partition: the store numbers them as it
// takes them, so a reader keeps, per key, the entry with the highest lsn,
// whatever order messages were stored in (a retried write may land after a
// later one).
const (
	entryUpsert byte = 1
	entryDelete byte = 2
)

// ErrCorrupt is wrapped by every error about stored bytes that do not decode:
// a reader counts and skips such entries, never trusts them.
var ErrCorrupt = errors.New("store: corrupt stored data")

// entry is one decoded change.
type entry struct {
	lsn    uint64
	delete bool
	rec    coordinator.Record
}

// maxLSN bounds a stored lsn, far from wrapping: a partition hands out a
// few million a day.
const maxLSN = 1<<60 - 1

// maxTimeoutNS bounds a stored timeout: the worker clamps anything above its
// own maximum anyway, this only keeps the duration from overflowing.
const maxTimeoutNS = uint64(100 * 365 * 24 * time.Hour)

// appendUpsert appends rec as an upsert entry numbered lsn.
func appendUpsert(b []byte, lsn uint64, rec *coordinator.Record) []byte {
	b = append(b, entryUpsert)
	b = binary.AppendUvarint(b, lsn)
	b = binary.AppendUvarint(b, uint64(len(rec.Key)))
	b = append(b, rec.Key...)
	b = binary.AppendUvarint(b, uint64(max(rec.IdleTimeout, 0)))
	b = append(b, byte(rec.State))
	b = binary.AppendUvarint(b, rec.Generation)
	return append(b, byte(rec.Reason))
}

// appendDelete appends the deletion of key numbered lsn.
func appendDelete(b []byte, lsn uint64, key string) []byte {
	b = append(b, entryDelete)
	b = binary.AppendUvarint(b, lsn)
	b = binary.AppendUvarint(b, uint64(len(key)))
	return append(b, key...)
}

// decodeEntry decodes the entry at the start of b and returns the rest. An
// error wraps ErrCorrupt; the rest is then unusable (entries have no
// framing to resynchronise on).
func decodeEntry(b []byte) (entry, []byte, error) {
	var e entry
	if len(b) == 0 {
		return e, nil, fmt.Errorf("%w: empty entry", ErrCorrupt)
	}
	kind := b[0]
	if kind != entryUpsert && kind != entryDelete {
		return e, nil, fmt.Errorf("%w: entry kind %d", ErrCorrupt, kind)
	}
	b = b[1:]
	var ok bool
	if e.lsn, b, ok = uvarint(b); !ok || e.lsn == 0 || e.lsn > maxLSN {
		return e, nil, fmt.Errorf("%w: entry lsn", ErrCorrupt)
	}
	n, b, ok := uvarint(b)
	if !ok || n > uint64(len(b)) {
		return e, nil, fmt.Errorf("%w: entry key length", ErrCorrupt)
	}
	e.rec.Key, b = string(b[:n]), b[n:]
	if err := bus.ValidateKey(e.rec.Key); err != nil {
		return e, nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if kind == entryDelete {
		e.delete = true
		return e, b, nil
	}
	var to uint64
	if to, b, ok = uvarint(b); !ok || to > maxTimeoutNS {
		return e, nil, fmt.Errorf("%w: timeout of %q", ErrCorrupt, e.rec.Key)
	}
	if len(b) < 1 {
		return e, nil, fmt.Errorf("%w: state of %q", ErrCorrupt, e.rec.Key)
	}
	st := coordinator.State(b[0])
	if st != coordinator.Running && st != coordinator.Draining && st != coordinator.Quiesced {
		return e, nil, fmt.Errorf("%w: state %d of %q", ErrCorrupt, b[0], e.rec.Key)
	}
	if e.rec.Generation, b, ok = uvarint(b[1:]); !ok {
		return e, nil, fmt.Errorf("%w: generation of %q", ErrCorrupt, e.rec.Key)
	}
	if len(b) < 1 || int(b[0]) >= coordinator.NumReasons {
		return e, nil, fmt.Errorf("%w: reason of %q", ErrCorrupt, e.rec.Key)
	}
	e.rec.IdleTimeout, e.rec.State, e.rec.Reason = time.Duration(to), st, coordinator.Reason(b[0])
	return e, b[1:], nil
}

// uvarint decodes a uvarint at the start of b.
func uvarint(b []byte) (uint64, []byte, bool) {
	v, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, nil, false
	}
	return v, b[n:], true
}
