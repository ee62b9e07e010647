package bus

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// maxTimeoutMS is the largest idle_timeout_ms whose time.Duration fits in an
// int64.
const maxTimeoutMS = int64(1<<63-1) / int64(time.Millisecond)

// errTimeoutOverflow marks an idle_timeout_ms too large for a time.Duration,
// so the worker can count it with the other too-large timeouts.
var errTimeoutOverflow = errors.New("exceeds the largest duration")

// Heartbeat is a decoded P.activity.K body.
type Heartbeat struct {
	// Timeout is the backend's own idle timeout, valid when HasTimeout.
	// Zero is allowed on the wire; the worker clamps it to 1 ms.
	Timeout    time.Duration
	HasTimeout bool
}

// ParseHeartbeat decodes a heartbeat body: empty (or only white space) for
// the worker's default timeout, or a JSON object whose optional
// "idle_timeout_ms" member is an integer >= 0. Other members are ignored.
// Errors wrap ErrBadPayload. It allocates nothing for valid bodies whose
// member names carry no escapes.
func ParseHeartbeat(body []byte) (Heartbeat, error) {
	b := trimSpace(body)
	if len(b) == 0 {
		return Heartbeat{}, nil
	}
	if b[0] != '{' {
		return Heartbeat{}, fmt.Errorf("%w: heartbeat body must be empty or a JSON object", ErrBadPayload)
	}
	if !json.Valid(b) {
		return Heartbeat{}, fmt.Errorf("%w: heartbeat body is not valid JSON", ErrBadPayload)
	}
	var hb Heartbeat
	// b is a valid JSON object, so the walk below needs no syntax checks.
	i := 1
	for {
		i = skipSpace(b, i)
		switch b[i] {
		case '}':
			return hb, nil
		case ',':
			i++
			continue
		}
		kEnd, escaped := stringEnd(b, i)
		name := b[i:kEnd]
		i = skipSpace(b, kEnd) + 1 // past ':'
		i = skipSpace(b, i)
		vEnd := valueEnd(b, i)
		if isTimeoutName(name, escaped) {
			ms, err := parseTimeoutMS(b[i:vEnd])
			if err != nil {
				return Heartbeat{}, err
			}
			hb = Heartbeat{Timeout: time.Duration(ms) * time.Millisecond, HasTimeout: true}
		}
		i = vEnd
	}
}

const timeoutName = `"idle_timeout_ms"`

func isTimeoutName(quoted []byte, escaped bool) bool {
	if !escaped {
		return string(quoted) == timeoutName
	}
	var s string
	return json.Unmarshal(quoted, &s) == nil && `"`+s+`"` == timeoutName
}

// parseTimeoutMS parses a JSON number token as a non-negative integer count of
// milliseconds.
func parseTimeoutMS(v []byte) (int64, error) {
	neg := len(v) > 0 && v[0] == '-'
	digits := v
	if neg {
		digits = v[1:]
	}
	if len(digits) == 0 || digits[0] < '0' || digits[0] > '9' {
		return 0, fmt.Errorf("%w: idle_timeout_ms must be an integer, got %.40s", ErrBadPayload, v)
	}
	var n int64
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w: idle_timeout_ms must be an integer, got %.40s", ErrBadPayload, v)
		}
		if n > (maxTimeoutMS-int64(c-'0'))/10 {
			if neg {
				return 0, fmt.Errorf("%w: idle_timeout_ms must be >= 0, got %.40s", ErrBadPayload, v)
			}
			return 0, fmt.Errorf("%w: idle_timeout_ms %.40s %w", ErrBadPayload, v, errTimeoutOverflow)
		}
		n = n*10 + int64(c-'0')
	}
	if neg && n != 0 {
		return 0, fmt.Errorf("%w: idle_timeout_ms must be >= 0, got %.40s", ErrBadPayload, v)
	}
	return n, nil
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func trimSpace(b []byte) []byte {
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// stringEnd returns the index just past the JSON string starting at b[i]
// (a '"'), and whether it contains escapes. b must be valid JSON.
func stringEnd(b []byte, i int) (int, bool) {
	escaped := false
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			escaped = true
			i++
		case '"':
			return i + 1, escaped
		}
	}
	return len(b), escaped
}

// valueEnd returns the index just past the JSON value starting at b[i].
// b must be valid JSON.
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		end, _ := stringEnd(b, i)
		return end
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i, _ = stringEnd(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return len(b)
	}
	for i < len(b) {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return i
		}
		i++
	}
	return i
}
