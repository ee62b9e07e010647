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
	// A restart decodes every record: read EncodeRecord's own form
	// directly (about ten times faster than encoding/json), and anything
	// else, which only a hand or another program writes, the general way.
	r, ok := parseCanonicalRecord(data)
	if !ok {
		err := decodeObject(data, "registry record",
			member{"timeout_ms", &r.TimeoutMS}, member{"state", &r.State},
			member{"generation", &r.Generation}, member{"reason", &r.Reason})
		if err != nil {
			return coordinator.Record{}, err
		}
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

// parseCanonicalRecord reads data if it is exactly what EncodeRecord writes:
// {"timeout_ms":N,"state":"S","generation":G} with an optional
// ,"reason":"R" before the brace, N and G plain decimal numbers and S and R
// plain lower-case words. It reports false for anything else, which the
// caller decodes in full, so both paths agree on every input.
func parseCanonicalRecord(data []byte) (record, bool) {
	var r record
	rest, ok := cutBytes(data, `{"timeout_ms":`)
	if !ok {
		return r, false
	}
	var n uint64
	if n, rest, ok = cutUint(rest); !ok || n > uint64(maxTimeoutMS) {
		return r, false
	}
	r.TimeoutMS = int64(n)
	if rest, ok = cutBytes(rest, `,"state":"`); !ok {
		return r, false
	}
	if r.State, rest, ok = cutWord(rest); !ok {
		return r, false
	}
	if rest, ok = cutBytes(rest, `,"generation":`); !ok {
		return r, false
	}
	if r.Generation, rest, ok = cutUint(rest); !ok {
		return r, false
	}
	if reason, ok := cutBytes(rest, `,"reason":"`); ok {
		if r.Reason, rest, ok = cutWord(reason); !ok || r.Reason == "" {
			return r, false
		}
	}
	return r, string(rest) == "}"
}

func cutBytes(b []byte, prefix string) ([]byte, bool) {
	if len(b) < len(prefix) || string(b[:len(prefix)]) != prefix {
		return b, false
	}
	return b[len(prefix):], true
}

// cutUint reads a decimal number without sign, leading zero or overflow.
func cutUint(b []byte) (uint64, []byte, bool) {
	i := 0
	var n uint64
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		d := uint64(b[i] - '0')
		if n > (1<<64-1-d)/10 {
			return 0, b, false
		}
		n = n*10 + d
	}
	if i == 0 || (i > 1 && b[0] == '0') {
		return 0, b, false
	}
	return n, b[i:], true
}

// cutWord reads [a-z_]* up to a closing quote.
func cutWord(b []byte) (string, []byte, bool) {
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return string(b[:i]), b[i+1:], true
		case c != '_' && (c < 'a' || c > 'z'):
			return "", b, false
		}
	}
	return "", b, false
}
