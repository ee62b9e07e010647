package bus_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/idle-worker/idle-worker/bus"
)

func TestValidateKey(t *testing.T) {
	tests := []struct {
		name string
		key  string
		ok   bool
	}{
		{"one token", "a", true},
		{"recommended shape", "dev-7.gopls.0%2E16%2E1.9f2c", true},
		{"sixteen tokens", strings.Repeat("a.", 15) + "a", true},
		{"255 bytes", strings.Repeat("x", 255), true},
		{"255 bytes in many tokens", strings.Repeat("x", 100) + "." + strings.Repeat("y", 100) + "." + strings.Repeat("z", 53), true},
		{"lowest printable byte", "!", true},
		{"highest printable byte", "~", true},
		{"every printable byte", printableASCII(), true},
		{"star inside a token", "a*b", true},
		{"gt inside a token", "a>b.c", true},
		{"double star", "**", true},
		{"double gt", ">>", true},
		{"quotes and backslash", `a"b\c`, true},

		{"empty", "", false},
		{"seventeen tokens", strings.Repeat("a.", 16) + "a", false},
		{"256 bytes", strings.Repeat("x", 256), false},
		{"empty first token", ".a", false},
		{"empty last token", "a.", false},
		{"empty middle token", "a..b", false},
		{"only a dot", ".", false},
		{"star token", "a.*", false},
		{"star only", "*", false},
		{"star first", "*.a", false},
		{"gt token", "a.>", false},
		{"gt only", ">", false},
		{"gt in the middle", "a.>.b", false},
		{"space", "a b", false},
		{"byte 0x20", "a\x20", false},
		{"byte 0x7f", "a\x7f", false},
		{"NUL", "a\x00b", false},
		{"tab", "a\tb", false},
		{"newline", "a\n", false},
		{"carriage return", "a\r", false},
		{"non-ASCII", "é", false},
		{"high byte", "a\xff", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := bus.ValidateKey(tt.key)
			if tt.ok && err != nil {
				t.Errorf("ValidateKey(%q) = %v; want nil", tt.key, err)
			}
			if !tt.ok && !errors.Is(err, bus.ErrBadKey) {
				t.Errorf("ValidateKey(%q) = %v; want an error wrapping ErrBadKey", tt.key, err)
			}
		})
	}
}

func printableASCII() string {
	var b strings.Builder
	for c := byte(0x21); c <= 0x7e; c++ {
		if c != '.' {
			b.WriteByte(c)
		}
	}
	return b.String()
}

func TestParsePattern(t *testing.T) {
	tests := []struct {
		name    string
		pattern string
		literal bool
		wantErr bool
	}{
		{name: "literal key", pattern: "dev-7.gopls.0%2E16%2E1.9f2c", literal: true},
		{name: "one literal token", pattern: "a", literal: true},
		{name: "star inside a token is literal", pattern: "a*b", literal: true},
		{name: "gt only", pattern: ">"},
		{name: "star only", pattern: "*"},
		{name: "final gt", pattern: "dev-7.>"},
		{name: "star in the middle", pattern: "dev-7.*.x"},
		{name: "stars everywhere", pattern: "*.*.*.*"},
		{name: "star then gt", pattern: "*.>"},
		{name: "sixteen tokens", pattern: strings.Repeat("*.", 15) + ">"},

		{name: "empty", pattern: "", wantErr: true},
		{name: "gt not last", pattern: ">.a", wantErr: true},
		{name: "gt in the middle", pattern: "a.>.b", wantErr: true},
		{name: "two gts", pattern: ">.>", wantErr: true},
		{name: "empty token", pattern: "a..>", wantErr: true},
		{name: "trailing dot", pattern: "a.*.", wantErr: true},
		{name: "space", pattern: "a *", wantErr: true},
		{name: "seventeen tokens", pattern: strings.Repeat("*.", 16) + ">", wantErr: true},
		{name: "too long", pattern: strings.Repeat("x", 254) + ".>", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := bus.ParsePattern(tt.pattern)
			if tt.wantErr {
				if !errors.Is(err, bus.ErrBadKey) {
					t.Fatalf("ParsePattern(%q) = %v, %v; want an error wrapping ErrBadKey", tt.pattern, p, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePattern(%q): %v", tt.pattern, err)
			}
			if got := p.String(); got != tt.pattern {
				t.Errorf("String() = %q; want %q", got, tt.pattern)
			}
			if got := p.Literal(); got != tt.literal {
				t.Errorf("Literal() = %v; want %v", got, tt.literal)
			}
		})
	}
}

func TestPatternMatch(t *testing.T) {
	tests := []struct {
		pattern string
		key     string
		want    bool
	}{
		{"a.b", "a.b", true},
		{"a.b", "a.b.c", false},
		{"a.b", "a", false},
		{"a.b", "a.c", false},
		{"a*b", "a*b", true},
		{"a*b", "axb", false},
		{"*", "a", true},
		{"*", "a.b", false},
		{"a.*", "a.b", true},
		{"a.*", "a", false},
		{"a.*", "a.b.c", false},
		{"a.*", "b.c", false},
		{"*.b", "a.b", true},
		{"*.b", "a.c", false},
		{"a.*.c", "a.b.c", true},
		{"a.*.c", "a.b.d", false},
		{"a.*.c", "a.c", false},
		{"*.*", "a.b", true},
		{"*.*", "a.b.c", false},
		{">", "a", true},
		{">", "a.b.c", true},
		{"a.>", "a.b", true},
		{"a.>", "a.b.c.d", true},
		{"a.>", "a", false},
		{"a.>", "b.c", false},
		{"a.>", "ab.c", false},
		{"*.>", "a", false},
		{"*.>", "a.b", true},
		{"dev-7.>", "dev-7.gopls.0%2E16%2E1.9f2c", true},
		{"dev-7.>", "dev-8.gopls.0%2E16%2E1.9f2c", false},
		{"*.gopls.*.*", "dev-7.gopls.0%2E16%2E1.9f2c", true},
		{"*.gopls.*.*", "dev-7.vim.0%2E16%2E1.9f2c", false},
		{"a.b.>", "a.b", false},
		{"a", "ab", false},
		{"ab", "a", false},
	}
	for _, tt := range tests {
		t.Run(tt.pattern+" "+tt.key, func(t *testing.T) {
			p, err := bus.ParsePattern(tt.pattern)
			if err != nil {
				t.Fatal(err)
			}
			if got := p.Match(tt.key); got != tt.want {
				t.Errorf("ParsePattern(%q).Match(%q) = %v; want %v", tt.pattern, tt.key, got, tt.want)
			}
			if ref := naiveMatch(tt.pattern, tt.key); ref != tt.want {
				t.Errorf("naiveMatch(%q, %q) = %v; want %v (the reference is wrong)", tt.pattern, tt.key, ref, tt.want)
			}
		})
	}
}

func TestPatternLiteralPrefix(t *testing.T) {
	for _, tt := range []struct {
		pattern, want string
	}{
		{">", ""},
		{"*", ""},
		{"*.gopls.>", ""},
		{"*.a.b", ""},
		{"dev-7.>", "dev-7."},
		{"dev-7.gopls.>", "dev-7.gopls."},
		{"dev-7.*", "dev-7."},
		{"dev-7.*.x.>", "dev-7."},
		{"dev-7.gopls.*.9f2c", "dev-7.gopls."},
		{"a*b.>", "a*b."},   // "a*b" is a plain token, not a wildcard
		{"a.>b.*", "a.>b."}, // so is ">b"
		{"dev-7", "dev-7"},  // literal: the pattern itself
		{"dev-7.gopls.1", "dev-7.gopls.1"},
	} {
		t.Run(tt.pattern, func(t *testing.T) {
			p, err := bus.ParsePattern(tt.pattern)
			if err != nil {
				t.Fatal(err)
			}
			if got := p.LiteralPrefix(); got != tt.want {
				t.Errorf("ParsePattern(%q).LiteralPrefix() = %q; want %q", tt.pattern, got, tt.want)
			}
		})
	}
}

// TestPatternMatchModel compares Match with naiveMatch over every pattern and
// key built from a small alphabet of tokens.
func TestPatternMatchModel(t *testing.T) {
	keyTokens := []string{"a", "b"}
	patTokens := []string{"a", "b", "*", ">"}
	var keys, patterns []string
	var grow func(prefix []string, alphabet []string, n int, out *[]string)
	grow = func(prefix []string, alphabet []string, n int, out *[]string) {
		if len(prefix) > 0 {
			*out = append(*out, strings.Join(prefix, "."))
		}
		if len(prefix) == n {
			return
		}
		for _, tok := range alphabet {
			grow(append(prefix[:len(prefix):len(prefix)], tok), alphabet, n, out)
		}
	}
	grow(nil, keyTokens, 4, &keys)
	grow(nil, patTokens, 4, &patterns)
	checked := 0
	for _, pat := range patterns {
		p, err := bus.ParsePattern(pat)
		if err == nil && !naiveValidateKey(pat, true) {
			t.Errorf("ParsePattern(%q) succeeded; want an error", pat)
		}
		if err != nil {
			if naiveValidateKey(pat, true) {
				t.Errorf("ParsePattern(%q): %v; want a valid pattern", pat, err)
			}
			continue
		}
		for _, key := range keys {
			checked++
			got, want := p.Match(key), naiveMatch(pat, key)
			if got != want {
				t.Errorf("ParsePattern(%q).Match(%q) = %v; want %v", pat, key, got, want)
			}
			if want && !strings.HasPrefix(key, p.LiteralPrefix()) {
				t.Errorf("ParsePattern(%q) matches %q, which lacks its LiteralPrefix %q", pat, key, p.LiteralPrefix())
			}
		}
	}
	if checked < 1000 {
		t.Errorf("checked only %d pattern/key pairs", checked)
	}
}

// naiveMatch is the reference for Pattern.Match: split both on dots and
// compare token by token.
func naiveMatch(pattern, key string) bool {
	pt := strings.Split(pattern, ".")
	kt := strings.Split(key, ".")
	for i, p := range pt {
		if p == ">" && i == len(pt)-1 {
			return len(kt) > i
		}
		if i >= len(kt) || (p != "*" && p != kt[i]) {
			return false
		}
	}
	return len(kt) == len(pt)
}

// naiveValidateKey is the reference for ValidateKey (and, with wildcards,
// ParsePattern).
func naiveValidateKey(key string, wildcards bool) bool {
	if len(key) == 0 || len(key) > bus.MaxKeyBytes {
		return false
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x21 || key[i] > 0x7e {
			return false
		}
	}
	toks := strings.Split(key, ".")
	if len(toks) > bus.MaxKeyTokens {
		return false
	}
	for i, tok := range toks {
		switch {
		case tok == "":
			return false
		case tok == "*" && !wildcards:
			return false
		case tok == ">" && (!wildcards || i != len(toks)-1):
			return false
		}
	}
	return true
}

func FuzzValidateKey(f *testing.F) {
	for _, s := range []string{
		"a", "dev-7.gopls.0%2E16%2E1.9f2c", "a*b", "a.*", "a.>", ">", "*", "", ".", "a..b", "a.",
		"a b", "a\x7f", "é", strings.Repeat("a.", 16) + "a", strings.Repeat("x", 256),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		err := bus.ValidateKey(key)
		if err != nil && !errors.Is(err, bus.ErrBadKey) {
			t.Fatalf("ValidateKey(%q) = %v; want nil or an error wrapping ErrBadKey", key, err)
		}
		if want := naiveValidateKey(key, false); (err == nil) != want {
			t.Fatalf("ValidateKey(%q) = %v; the reference says valid=%v", key, err, want)
		}
		if err == nil {
			// A valid key is a literal pattern matching exactly itself.
			p, perr := bus.ParsePattern(key)
			if perr != nil || !p.Literal() || !p.Match(key) {
				t.Fatalf("ParsePattern(%q) = %v (literal %v), %v; want a literal pattern that matches the key", key, p, p.Literal(), perr)
			}
		}
	})
}

func FuzzParsePattern(f *testing.F) {
	for _, s := range [][2]string{
		{">", "a.b"}, {"*", "a"}, {"a.*", "a.b"}, {"a.>", "a"}, {"*.>", "a.b.c"}, {"a*b", "a*b"},
		{">.a", "b.a"}, {"a.>.b", "a.x.b"}, {"", "a"}, {"a..b", "a..b"}, {"a.*.c", "a.b"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, key string) {
		p, err := bus.ParsePattern(pattern)
		if want := naiveValidateKey(pattern, true); (err == nil) != want {
			t.Fatalf("ParsePattern(%q) = %v; the reference says valid=%v", pattern, err, want)
		}
		if err != nil {
			if !errors.Is(err, bus.ErrBadKey) {
				t.Fatalf("ParsePattern(%q) = %v; want an error wrapping ErrBadKey", pattern, err)
			}
			return
		}
		if p.String() != pattern {
			t.Fatalf("String() = %q; want %q", p.String(), pattern)
		}
		if want := bus.ValidateKey(pattern) == nil; p.Literal() != want {
			t.Fatalf("ParsePattern(%q).Literal() = %v; want %v", pattern, p.Literal(), want)
		}
		if bus.ValidateKey(key) != nil {
			return // the worker only matches valid keys
		}
		got, want := p.Match(key), naiveMatch(pattern, key)
		if got != want {
			t.Fatalf("ParsePattern(%q).Match(%q) = %v; want %v", pattern, key, got, want)
		}
		if want && !strings.HasPrefix(key, p.LiteralPrefix()) {
			t.Fatalf("ParsePattern(%q) matches %q, which lacks its LiteralPrefix %q", pattern, key, p.LiteralPrefix())
		}
	})
}

func TestValidateKeyAllocs(t *testing.T) {
	const key = "dev-7.gopls.0%2E16%2E1.9f2c"
	if n := testing.AllocsPerRun(100, func() {
		if err := bus.ValidateKey(key); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("ValidateKey(%q) allocates %v times per call; want 0", key, n)
	}
}
