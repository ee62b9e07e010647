package bus_test

import (
	"testing"

	"github.com/idle-worker/idle-worker/bus"
)

func TestParseForgetRequest(t *testing.T) {
	tests := []struct {
		body    string
		want    string
		literal bool
		wantErr bool
	}{
		{`{"match":"dev-7.gopls.1.aa"}`, "dev-7.gopls.1.aa", true, false},
		{`{"match":"dev-7.>"}`, "dev-7.>", false, false},
		{`{"match":"*.gopls.>","extra":1}`, "*.gopls.>", false, false},
		{`{"match":""}`, "", false, true},
		{`{}`, "", false, true},
		{``, "", false, true},
		{`{"MATCH":"a"}`, "", false, true},
		{`{"match":"a..b"}`, "", false, true},
		{`{"match":"a.>.b"}`, "", false, true},
		{`{"match":7}`, "", false, true},
		{`[]`, "", false, true},
	}
	for _, tt := range tests {
		p, err := bus.ParseForgetRequest([]byte(tt.body))
		if tt.wantErr {
			if err == nil || !isBadInput(err) {
				t.Errorf("ParseForgetRequest(%s): %v, %v; want an error wrapping ErrBadPayload or ErrBadKey", tt.body, p, err)
			}
			continue
		}
		if err != nil || p.String() != tt.want || p.Literal() != tt.literal {
			t.Errorf("ParseForgetRequest(%s) = %q (literal %v), %v; want %q (literal %v)", tt.body, p, p.Literal(), err, tt.want, tt.literal)
		}
	}
}

// FuzzParseForgetRequest: any body either decodes to the exact "match"
// member as a valid pattern, or is refused as bad input.
func FuzzParseForgetRequest(f *testing.F) {
	for _, s := range []string{`{"match":"dev-7.>"}`, `{"match":"a"}`, `{"match":""}`, `{}`, ``, `{"MATCH":"a"}`, `{"match":"a.>.b"}`, `{"match":"a"}]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := bus.ParseForgetRequest(body)
		if err != nil {
			if !isBadInput(err) {
				t.Fatalf("ParseForgetRequest(%q) = %v; want an error wrapping ErrBadPayload or ErrBadKey", body, err)
			}
			return
		}
		if want := exactString(t, body, "match"); p.String() != want {
			t.Fatalf("ParseForgetRequest(%q) pattern %q; encoding/json reads member \"match\" as %q", body, p, want)
		}
	})
}
