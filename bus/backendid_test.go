package bus_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/idle-worker/idle-worker/bus"
)

func TestBackendIDKey(t *testing.T) {
	tests := []struct {
		name    string
		id      bus.BackendID
		want    string
		wantErr bool
	}{
		{name: "gopls", id: bus.BackendID{Instance: "dev-7", Service: "gopls", Version: "0.16.1", ExeHash: "9f2c"}, want: "dev-7.gopls.0%2E16%2E1.9f2c"},
		{name: "version 1.2.3", id: bus.BackendID{Instance: "h", Service: "s", Version: "1.2.3", ExeHash: "x"}, want: "h.s.1%2E2%2E3.x"},
		{name: "dotted instance", id: bus.BackendID{Instance: "web-1.eu", Service: "s", Version: "v", ExeHash: "x"}, want: "web-1%2Eeu.s.v.x"},
		{name: "plain bytes stay plain", id: bus.BackendID{Instance: "AZaz09_-", Service: "s", Version: "v", ExeHash: "x"}, want: "AZaz09_-.s.v.x"},
		{name: "percent is escaped", id: bus.BackendID{Instance: "100%", Service: "s", Version: "v", ExeHash: "x"}, want: "100%25.s.v.x"},
		{name: "wildcards are escaped", id: bus.BackendID{Instance: "*", Service: ">", Version: "v", ExeHash: "x"}, want: "%2A.%3E.v.x"},
		{name: "space and controls", id: bus.BackendID{Instance: "a b", Service: "\t", Version: "\x00", ExeHash: "\x7f"}, want: "a%20b.%09.%00.%7F"},
		{name: "non-ASCII with upper-case hex", id: bus.BackendID{Instance: "é", Service: "s", Version: "v", ExeHash: "\xff"}, want: "%C3%A9.s.v.%FF"},
		{name: "exactly 255 bytes", id: bus.BackendID{Instance: strings.Repeat("i", 249), Service: "s", Version: "v", ExeHash: "x"}, want: strings.Repeat("i", 249) + ".s.v.x"},

		{name: "empty instance", id: bus.BackendID{Service: "s", Version: "v", ExeHash: "x"}, wantErr: true},
		{name: "empty service", id: bus.BackendID{Instance: "i", Version: "v", ExeHash: "x"}, wantErr: true},
		{name: "empty version", id: bus.BackendID{Instance: "i", Service: "s", ExeHash: "x"}, wantErr: true},
		{name: "empty exe hash", id: bus.BackendID{Instance: "i", Service: "s", Version: "v"}, wantErr: true},
		{name: "zero value", wantErr: true},
		{name: "256 bytes", id: bus.BackendID{Instance: strings.Repeat("i", 250), Service: "s", Version: "v", ExeHash: "x"}, wantErr: true},
		{name: "too long after encoding", id: bus.BackendID{Instance: strings.Repeat(".", 84), Service: "s", Version: "v", ExeHash: "x"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.id.Key()
			if tt.wantErr {
				if !errors.Is(err, bus.ErrBadKey) {
					t.Fatalf("%+v.Key() = %q, %v; want an error wrapping ErrBadKey", tt.id, got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("%+v.Key(): %v", tt.id, err)
			}
			if got != tt.want {
				t.Errorf("%+v.Key() = %q; want %q", tt.id, got, tt.want)
			}
			back, err := bus.ParseBackendID(got)
			if err != nil || back != tt.id {
				t.Errorf("ParseBackendID(%q) = %+v, %v; want %+v, nil", got, back, err, tt.id)
			}
		})
	}
}

func TestParseBackendID(t *testing.T) {
	tests := []struct {
		name    string
		key     string
		want    bus.BackendID
		wantErr bool
	}{
		{name: "gopls", key: "dev-7.gopls.0%2E16%2E1.9f2c", want: bus.BackendID{Instance: "dev-7", Service: "gopls", Version: "0.16.1", ExeHash: "9f2c"}},
		{name: "escapes everywhere", key: "%2A.%3E.%25.%C3%A9", want: bus.BackendID{Instance: "*", Service: ">", Version: "%", ExeHash: "é"}},
		{name: "escape at token end", key: "a%2E.b.c.d", want: bus.BackendID{Instance: "a.", Service: "b", Version: "c", ExeHash: "d"}},

		{name: "three tokens", key: "a.b.c", wantErr: true},
		{name: "five tokens", key: "a.b.c.d.e", wantErr: true},
		{name: "one token", key: "a", wantErr: true},
		{name: "empty", key: "", wantErr: true},
		{name: "empty field", key: "a..c.d", wantErr: true},
		{name: "empty last field", key: "a.b.c.", wantErr: true},
		{name: "lower-case hex", key: "0%2e16.b.c.d", wantErr: true},
		{name: "mixed-case hex", key: "%c3%A9.b.c.d", wantErr: true},
		{name: "escaped plain letter", key: "%41.b.c.d", wantErr: true},
		{name: "escaped plain digit", key: "%30.b.c.d", wantErr: true},
		{name: "escaped underscore", key: "%5F.b.c.d", wantErr: true},
		{name: "escaped hyphen", key: "%2D.b.c.d", wantErr: true},
		{name: "unescaped star byte", key: "a*b.b.c.d", wantErr: true},
		{name: "unescaped tilde", key: "a~.b.c.d", wantErr: true},
		{name: "unescaped quote", key: `a".b.c.d`, wantErr: true},
		{name: "star token", key: "*.b.c.d", wantErr: true},
		{name: "gt token", key: "a.b.c.>", wantErr: true},
		{name: "truncated escape", key: "a%2.b.c.d", wantErr: true},
		{name: "lone percent", key: "a%.b.c.d", wantErr: true},
		{name: "bad hex digit", key: "a%G0.b.c.d", wantErr: true},
		{name: "space", key: "a b.b.c.d", wantErr: true},
		{name: "too long", key: strings.Repeat("i", 250) + ".s.v.x", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := bus.ParseBackendID(tt.key)
			if tt.wantErr {
				if !errors.Is(err, bus.ErrBadKey) {
					t.Fatalf("ParseBackendID(%q) = %+v, %v; want an error wrapping ErrBadKey", tt.key, got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseBackendID(%q): %v", tt.key, err)
			}
			if got != tt.want {
				t.Errorf("ParseBackendID(%q) = %+v; want %+v", tt.key, got, tt.want)
			}
			if key, err := got.Key(); err != nil || key != tt.key {
				t.Errorf("Key() = %q, %v; want %q, nil", key, err, tt.key)
			}
		})
	}
}

func TestEncodeKeyToken(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"abcXYZ019_-", "abcXYZ019_-"},
		{"1.2.3", "1%2E2%2E3"},
		{"web-1.eu", "web-1%2Eeu"},
		{"%", "%25"},
		{" ", "%20"},
		{"\x00\x1f\x7f\x80\xff", "%00%1F%7F%80%FF"},
		{"é", "%C3%A9"},
		{"a/b:c", "a%2Fb%3Ac"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := bus.EncodeKeyToken(tt.in); got != tt.want {
				t.Errorf("EncodeKeyToken(%q) = %q; want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestDecodeKeyToken(t *testing.T) {
	tests := []struct {
		name    string
		tok     string
		want    string
		wantErr bool
	}{
		{name: "empty", tok: "", want: ""},
		{name: "plain", tok: "abcXYZ019_-", want: "abcXYZ019_-"},
		{name: "version", tok: "1%2E2%2E3", want: "1.2.3"},
		{name: "escape first", tok: "%2Ea", want: ".a"},
		{name: "escape last", tok: "a%2E", want: "a."},
		{name: "only escapes", tok: "%00%FF", want: "\x00\xff"},
		{name: "percent", tok: "%25", want: "%"},

		{name: "lower-case hex", tok: "1%2e2", wantErr: true},
		{name: "lower-case second digit", tok: "%c3", wantErr: true},
		{name: "escaped letter", tok: "%61", wantErr: true},
		{name: "escaped upper letter", tok: "%5A", wantErr: true},
		{name: "escaped digit", tok: "%39", wantErr: true},
		{name: "escaped underscore", tok: "%5F", wantErr: true},
		{name: "escaped hyphen", tok: "%2D", wantErr: true},
		{name: "unescaped dot", tok: "a.b", wantErr: true},
		{name: "unescaped star", tok: "*", wantErr: true},
		{name: "unescaped gt", tok: ">", wantErr: true},
		{name: "unescaped space", tok: "a b", wantErr: true},
		{name: "unescaped high byte", tok: "\xff", wantErr: true},
		{name: "unescaped plus", tok: "a+b", wantErr: true},
		{name: "lone percent", tok: "%", wantErr: true},
		{name: "one hex digit", tok: "%2", wantErr: true},
		{name: "one hex digit mid-token", tok: "a%2", wantErr: true},
		{name: "non-hex", tok: "%ZZ", wantErr: true},
		{name: "sign is not hex", tok: "%+1", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := bus.DecodeKeyToken(tt.tok)
			if tt.wantErr {
				if !errors.Is(err, bus.ErrBadKey) {
					t.Fatalf("DecodeKeyToken(%q) = %q, %v; want an error wrapping ErrBadKey", tt.tok, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("DecodeKeyToken(%q) = %q, %v; want %q, nil", tt.tok, got, err, tt.want)
			}
		})
	}
}

func FuzzParseBackendID(f *testing.F) {
	f.Add("dev-7.gopls.0%2E16%2E1.9f2c", "dev-7", "gopls", "0.16.1", "9f2c")
	f.Add("a.b.c", "web-1.eu", "s", "1.2.3", "x")
	f.Add("0%2e16.b.c.d", "*", ">", "%", "é")
	f.Add("%41.b.c.d", "a b", "\x00", "\xff", "-")
	f.Add("a..c.d", strings.Repeat(".", 60), "s", "v", "x")
	f.Fuzz(func(t *testing.T, key, instance, service, version, exeHash string) {
		// Whatever ParseBackendID accepts is canonical: Key gives it back.
		id, err := bus.ParseBackendID(key)
		if err != nil {
			if !errors.Is(err, bus.ErrBadKey) {
				t.Fatalf("ParseBackendID(%q) = %v; want an error wrapping ErrBadKey", key, err)
			}
		} else if back, err := id.Key(); err != nil || back != key {
			t.Fatalf("ParseBackendID(%q) = %+v, whose Key() = %q, %v; want %q, nil", key, id, back, err, key)
		}

		// Every BackendID with non-empty fields whose key fits survives
		// Key then ParseBackendID.
		in := bus.BackendID{Instance: instance, Service: service, Version: version, ExeHash: exeHash}
		k, err := in.Key()
		encoded := len(bus.EncodeKeyToken(instance)) + len(bus.EncodeKeyToken(service)) +
			len(bus.EncodeKeyToken(version)) + len(bus.EncodeKeyToken(exeHash)) + 3
		fits := instance != "" && service != "" && version != "" && exeHash != "" && encoded <= bus.MaxKeyBytes
		if !fits {
			if !errors.Is(err, bus.ErrBadKey) {
				t.Fatalf("%+v.Key() = %q, %v; want an error wrapping ErrBadKey", in, k, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("%+v.Key(): %v", in, err)
		}
		if err := bus.ValidateKey(k); err != nil {
			t.Fatalf("%+v.Key() = %q, which ValidateKey rejects: %v", in, k, err)
		}
		out, err := bus.ParseBackendID(k)
		if err != nil || out != in {
			t.Fatalf("ParseBackendID(%q) = %+v, %v; want %+v, nil", k, out, err, in)
		}
	})
}

func FuzzDecodeKeyToken(f *testing.F) {
	for _, s := range []string{"", "abc", "1%2E2%2E3", "%2e", "%41", "%", "%2", "a.b", "%C3%A9", "\xff", "%%25"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		// Decoding accepts exactly what encoding produces.
		dec, err := bus.DecodeKeyToken(s)
		if err != nil {
			if !errors.Is(err, bus.ErrBadKey) {
				t.Fatalf("DecodeKeyToken(%q) = %v; want an error wrapping ErrBadKey", s, err)
			}
		} else if enc := bus.EncodeKeyToken(dec); enc != s {
			t.Fatalf("DecodeKeyToken(%q) = %q, which encodes as %q", s, dec, enc)
		}

		// Encoding is decodable, gives one token of plain bytes and escapes.
		enc := bus.EncodeKeyToken(s)
		for i := 0; i < len(enc); i++ {
			c := enc[i]
			if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '%') {
				t.Fatalf("EncodeKeyToken(%q) = %q, with byte %q", s, enc, c)
			}
		}
		back, err := bus.DecodeKeyToken(enc)
		if err != nil || back != s {
			t.Fatalf("DecodeKeyToken(EncodeKeyToken(%q)) = %q, %v; want %q, nil", s, back, err, s)
		}
	})
}
