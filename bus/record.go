package bus

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/idle-worker/idle-worker/coordinator"
)

// The stored form of a backend's record. bus owns it, as it owns every byte
// format; package store decides where records live.

// record is the stored form of a coordinator.Record.
type record struct {
	TimeoutMS  int64  `json:"timeout_ms"`
	State      string `json:"state"`
	Generation uint64 `json:"generation"`
	Reason     string `json:"reason,omitempty"`
}

// EncodeRecord returns the stored JSON form of rec (without its key, which
// names the KV entry).
func EncodeRecord(rec coordinator.Record) []byte {
	r := record{TimeoutMS: rec.IdleTimeout.Milliseconds(), State: rec.State.String(), Generation: rec.Generation}
	if rec.Reason != 0 {
		r.Reason = rec.Reason.String()
	}
	b, _ := json.Marshal(r)
	return b
}

// ParseRecord decodes a stored record of key. Errors wrap ErrBadPayload.
func ParseRecord(key string, data []byte) (coordinator.Record, error) {
	var r record
	err := decodeObject(data, "registry record",
		member{"timeout_ms", &r.TimeoutMS}, member{"state", &r.State},
		member{"generation", &r.Generation}, member{"reason", &r.Reason})
	if err != nil {
		return coordinator.Record{}, err
	}
	if err := ValidateKey(key); err != nil {
		return coordinator.Record{}, fmt.Errorf("%w: registry record key: %w", ErrBadPayload, err)
	}
	if r.TimeoutMS < 0 || r.TimeoutMS > maxTimeoutMS {
		return coordinator.Record{}, fmt.Errorf("%w: registry record timeout_ms %d out of range", ErrBadPayload, r.TimeoutMS)
	}
	rec := coordinator.Record{Key: key, IdleTimeout: time.Duration(r.TimeoutMS) * time.Millisecond, Generation: r.Generation}
	for _, s := range []coordinator.State{coordinator.Running, coordinator.Draining, coordinator.Quiesced} {
		if s.String() == r.State {
			rec.State = s
		}
	}
	if rec.State == 0 {
		return coordinator.Record{}, fmt.Errorf("%w: registry record state %q unknown", ErrBadPayload, r.State)
	}
	if r.Reason != "" {
		reason, err := ParseReason(r.Reason)
		if err != nil {
			return coordinator.Record{}, err
		}
		rec.Reason = reason
	}
	return rec, nil
}

// StoreKey returns key in a form that a JetStream KV key (and so a subject)
// may hold: every byte outside [A-Za-z0-9_./-] becomes =XX, upper-case hex.
// ParseStoreKey reverses it.
func StoreKey(key string) string {
	return string(appendEscaped(make([]byte, 0, len(key)+8), key, '=', storePlain))
}

// storePlain reports whether c may stand unescaped in a store key.
func storePlain(c byte) bool { return plain(c) || c == '.' || c == '/' }

// ParseStoreKey reverses StoreKey. It reports false for a malformed escape.
func ParseStoreKey(rest string) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		if c != '=' {
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(rest) {
			return "", false
		}
		hi, lo := unhex(rest[i+1]), unhex(rest[i+2])
		if hi < 0 || lo < 0 {
			return "", false
		}
		b.WriteByte(byte(hi<<4 | lo))
		i += 2
	}
	return b.String(), true
}
