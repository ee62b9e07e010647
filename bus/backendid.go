package bus

import (
	"fmt"
	"strings"
)

// BackendID is the recommended shape of a backend key:
// <instance>.<service>.<version>.<exe_hash>, each field percent-encoded so it
// is exactly one token: every byte outside [A-Za-z0-9_-] becomes %XX with
// upper-case hex. Version "1.2.3" thus becomes "1%2E2%2E3". The instance
// comes first so NATS permissions can confine a host to P.activity.<instance>.>.
type BackendID struct {
	Instance string // the host or broker instance that owns the process
	Service  string // what the process is, such as "gopls"
	Version  string // the service's version
	ExeHash  string // a hash of the executable, telling builds apart
}

// Key returns the percent-encoded key of id. Every field must be non-empty
// and the key must satisfy ValidateKey (in particular at most MaxKeyBytes
// after encoding). Errors wrap ErrBadKey.
func (id BackendID) Key() (string, error) {
	fields := [4]struct{ name, v string }{
		{"instance", id.Instance}, {"service", id.Service}, {"version", id.Version}, {"exe_hash", id.ExeHash},
	}
	var b strings.Builder
	for i, f := range fields {
		if f.v == "" {
			return "", fmt.Errorf("%w: backend id field %s is empty", ErrBadKey, f.name)
		}
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(EncodeKeyToken(f.v))
	}
	key := b.String()
	if err := ValidateKey(key); err != nil {
		return "", err
	}
	return key, nil
}

// ParseBackendID decodes a key of the recommended shape. It accepts only the
// canonical encoding that Key produces (four tokens, upper-case hex, no byte
// left unencoded that should be encoded), so a BackendID has exactly one key.
// Errors wrap ErrBadKey.
func ParseBackendID(key string) (BackendID, error) {
	if err := ValidateKey(key); err != nil {
		return BackendID{}, err
	}
	parts := strings.Split(key, ".")
	if len(parts) != 4 {
		return BackendID{}, fmt.Errorf("%w: backend id %q has %d tokens, want 4", ErrBadKey, key, len(parts))
	}
	var out [4]string
	for i, p := range parts {
		v, err := DecodeKeyToken(p)
		if err != nil {
			return BackendID{}, err
		}
		out[i] = v
	}
	return BackendID{Instance: out[0], Service: out[1], Version: out[2], ExeHash: out[3]}, nil
}

func plain(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

const upperHex = "0123456789ABCDEF"

// EncodeKeyToken percent-encodes s into one key token: bytes outside
// [A-Za-z0-9_-] become %XX, upper-case hex.
func EncodeKeyToken(s string) string {
	for i := 0; i < len(s); i++ {
		if !plain(s[i]) {
			return string(appendEscaped(make([]byte, 0, len(s)+8), s, '%', plain))
		}
	}
	return s
}

// appendEscaped appends s to b, writing every byte that keep refuses as esc
// followed by two upper-case hex digits. Key tokens (%XX) and registry KV
// keys (=XX) both use it.
func appendEscaped(b []byte, s string, esc byte, keep func(byte) bool) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if keep(c) {
			b = append(b, c)
			continue
		}
		b = append(b, esc, upperHex[c>>4], upperHex[c&15])
	}
	return b
}

// DecodeKeyToken reverses EncodeKeyToken. It rejects anything
// EncodeKeyToken would not produce. Errors wrap ErrBadKey.
func DecodeKeyToken(tok string) (string, error) {
	var b []byte
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if plain(c) {
			if b != nil {
				b = append(b, c)
			}
			continue
		}
		if c != '%' {
			return "", fmt.Errorf("%w: token %q: byte %q must be percent-encoded", ErrBadKey, tok, c)
		}
		if i+2 >= len(tok) {
			return "", fmt.Errorf("%w: token %q: truncated escape", ErrBadKey, tok)
		}
		hi, lo := unhex(tok[i+1]), unhex(tok[i+2])
		if hi < 0 || lo < 0 {
			return "", fmt.Errorf("%w: token %q: escape needs two upper-case hex digits", ErrBadKey, tok)
		}
		v := byte(hi<<4 | lo)
		if plain(v) {
			return "", fmt.Errorf("%w: token %q: %%%s encodes %q, which must stay plain", ErrBadKey, tok, tok[i+1:i+3], v)
		}
		if b == nil {
			b = append(make([]byte, 0, len(tok)), tok[:i]...)
		}
		b = append(b, v)
		i += 2
	}
	if b == nil {
		return tok, nil
	}
	return string(b), nil
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}
