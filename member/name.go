package member

import (
	"crypto/rand"
	"fmt"
	"os"
	"strings"
)

// MaxNameLen is the longest worker name (and instance id), in bytes.
const MaxNameLen = 64

// suffixLen is the length of DefaultName's random suffix.
const suffixLen = 6

// CheckName returns nil when name is a sane worker name: 1 to MaxNameLen
// bytes, each a letter, a digit, '.', '_' or '-'. Otherwise it returns an
// error wrapping ErrBadName. Heartbeats whose name or instance fail it are
// ignored.
func CheckName(name string) error {
	if len(name) == 0 || len(name) > MaxNameLen {
		return fmt.Errorf("%w: %d bytes, want 1..%d", ErrBadName, len(name), MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		if !nameByte(name[i]) {
			return fmt.Errorf("%w: byte %d (%q) is not one of [A-Za-z0-9._-]", ErrBadName, i, name[i])
		}
	}
	return nil
}

func nameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '.' || c == '_' || c == '-'
}

// DefaultName returns a worker name for a process that was given none: the
// host name, with every byte outside [A-Za-z0-9._-] replaced by '-' and cut
// so that the whole fits MaxNameLen, then '-' and six random lower-case
// letters and digits, so that two processes on one host get two names
// (host "db-1.example" gives something like "db-1.example-k3x9qa"). With no
// host name it uses "worker". The result always passes CheckName.
func DefaultName() string {
	host, err := os.Hostname()
	if err != nil {
		host = ""
	}
	return sanitizeHost(host) + "-" + randomSuffix()
}

// sanitizeHost maps host to the name charset and cuts it to leave room for
// the suffix; an empty result becomes "worker".
func sanitizeHost(host string) string {
	var b strings.Builder
	for i := 0; i < len(host) && b.Len() < MaxNameLen-1-suffixLen; i++ {
		if c := host[i]; nameByte(c) {
			b.WriteByte(c)
		} else {
			b.WriteByte('-')
		}
	}
	if b.Len() == 0 {
		return "worker"
	}
	return b.String()
}

// randomSuffix returns suffixLen random bytes of [a-z2-7].
func randomSuffix() string {
	return strings.ToLower(rand.Text()[:suffixLen])
}

// newInstance returns a random id for one process start: 26 bytes of
// [A-Z2-7] (130 random bits), a sane name.
func newInstance() string {
	return rand.Text()
}
