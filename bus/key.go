package bus

import (
	"fmt"
	"strings"
)

// Limits of a backend key.
const (
	// MaxKeyBytes is the longest key, in bytes.
	MaxKeyBytes = 255
	// MaxKeyTokens is the most dot-separated tokens a key may have.
	MaxKeyTokens = 16
)

// ValidateKey checks a backend key K, the tail of P.activity.K: 1 to
// MaxKeyTokens dot-separated tokens, at most MaxKeyBytes bytes of printable
// ASCII (0x21 to 0x7e), no empty token, and no token that is exactly "*" or
// ">". Errors wrap ErrBadKey. It does not allocate when the key is valid.
func ValidateKey(key string) error {
	return validateTokens(key, MaxKeyTokens, false)
}

// validateTokens checks s as dot-separated tokens; wildcards allows "*"
// tokens and a final ">" token (patterns).
func validateTokens(s string, maxTokens int, wildcards bool) error {
	if s == "" {
		return fmt.Errorf("%w: empty", ErrBadKey)
	}
	if len(s) > MaxKeyBytes {
		return fmt.Errorf("%w: %d bytes, more than %d", ErrBadKey, len(s), MaxKeyBytes)
	}
	tokens, start := 0, 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] != '.' {
			if c := s[i]; c < 0x21 || c > 0x7e {
				return fmt.Errorf("%w: byte 0x%02x at %d is not printable ASCII", ErrBadKey, c, i)
			}
			continue
		}
		tok := s[start:i]
		tokens++
		switch {
		case tok == "":
			return fmt.Errorf("%w: %q has an empty token", ErrBadKey, s)
		case tok == ">" && !(wildcards && i == len(s)):
			if wildcards {
				return fmt.Errorf("%w: %q: \">\" must be the last token", ErrBadKey, s)
			}
			return fmt.Errorf("%w: %q has a wildcard token", ErrBadKey, s)
		case tok == "*" && !wildcards:
			return fmt.Errorf("%w: %q has a wildcard token", ErrBadKey, s)
		}
		if tokens > maxTokens {
			return fmt.Errorf("%w: more than %d tokens", ErrBadKey, maxTokens)
		}
		start = i + 1
	}
	return nil
}

// Pattern matches backend keys the way NATS matches subjects: "*" matches
// exactly one token and a final ">" matches one or more tokens.
type Pattern struct {
	raw     string
	literal bool
}

// ParsePattern parses a key or a NATS-style key pattern. Errors wrap
// ErrBadKey.
func ParsePattern(s string) (Pattern, error) {
	if err := validateTokens(s, MaxKeyTokens, true); err != nil {
		return Pattern{}, err
	}
	lit := ValidateKey(s) == nil
	return Pattern{raw: s, literal: lit}, nil
}

// String returns the pattern as written.
func (p Pattern) String() string { return p.raw }

// Literal reports whether the pattern has no wildcard, so it matches exactly
// one key: String().
func (p Pattern) Literal() bool { return p.literal }

// Match reports whether key matches the pattern.
func (p Pattern) Match(key string) bool {
	if p.literal {
		return key == p.raw
	}
	pat := p.raw
	for {
		pt, prest, pmore := strings.Cut(pat, ".")
		if pt == ">" {
			return key != ""
		}
		if key == "" {
			return false
		}
		kt, krest, kmore := strings.Cut(key, ".")
		if pt != "*" && pt != kt {
			return false
		}
		if !pmore || !kmore {
			return pmore == kmore
		}
		pat, key = prest, krest
	}
}

// LiteralPrefix returns the longest prefix, in whole tokens, that every key
// matching the pattern has: the tokens before the first wildcard, each with
// its dot ("dev-7.gopls." for "dev-7.gopls.>" and for "dev-7.gopls.*.x";
// "" for "*.gopls.>" and ">"); for a literal pattern, the pattern itself.
// Keys with a common prefix are contiguous in key order, so a scan of an
// ordered index can start there and stop at its end (see
// coordinator.Coordinator.Scan). The trailing dot keeps token boundaries:
// "dev-7." does not select "dev-70.x".
func (p Pattern) LiteralPrefix() string {
	if p.literal {
		return p.raw
	}
	for start := 0; start < len(p.raw); {
		tok, _, _ := strings.Cut(p.raw[start:], ".")
		if tok == "*" || tok == ">" {
			return p.raw[:start]
		}
		start += len(tok) + 1
	}
	return p.raw // the zero Pattern
}

// prefixOnly reports whether every key with the pattern's literal prefix
// matches it: the pattern is that prefix followed by ">" (">" itself
// included), so a scan of the prefix need not call Match.
func (p Pattern) prefixOnly() bool {
	return !p.literal && len(p.raw) == len(p.LiteralPrefix())+1 && p.raw[len(p.raw)-1] == '>'
}
