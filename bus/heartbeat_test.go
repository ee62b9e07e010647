package bus_test

import (
	"encoding/json"
	"errors"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/idle-worker/idle-worker/bus"
)

// maxTimeoutMS is the largest idle_timeout_ms whose nanoseconds fit in an
// int64 (a time.Duration).
const maxTimeoutMS = math.MaxInt64 / int64(time.Millisecond)

func TestParseHeartbeat(t *testing.T) {
	ms := func(n int64) bus.Heartbeat {
		return bus.Heartbeat{Timeout: time.Duration(n) * time.Millisecond, HasTimeout: true}
	}
	tests := []struct {
		name    string
		body    string
		want    bus.Heartbeat
		wantErr bool
	}{
		{name: "empty", body: ""},
		{name: "white space", body: " \t\r\n "},
		{name: "empty object", body: "{}"},
		{name: "empty object with white space", body: " { \n } \t"},
		{name: "timeout", body: `{"idle_timeout_ms":5000}`, want: ms(5000)},
		{name: "timeout with white space", body: "\n{ \"idle_timeout_ms\" :\t1234 }\r\n", want: ms(1234)},
		{name: "zero", body: `{"idle_timeout_ms":0}`, want: ms(0)},
		{name: "negative zero", body: `{"idle_timeout_ms":-0}`, want: ms(0)},
		{name: "big valid", body: `{"idle_timeout_ms":` + strconv.FormatInt(maxTimeoutMS, 10) + `}`, want: ms(maxTimeoutMS)},
		{name: "24 hours", body: `{"idle_timeout_ms":86400000}`, want: ms(86400000)},
		{name: "unknown members ignored", body: `{"a":1,"idle_timeout_ms":7,"b":"x"}`, want: ms(7)},
		{name: "only unknown members", body: `{"a":1,"b":[1,2],"c":{"d":null}}`},
		{name: "unknown nested object", body: `{"x":{"idle_timeout_ms":1,"y":{"z":[{}]}},"idle_timeout_ms":8}`, want: ms(8)},
		{name: "nested name is not the member", body: `{"x":{"idle_timeout_ms":1}}`},
		{name: "unknown array with braces", body: `{"x":[1,{"a":"}"},"]",[[]]],"idle_timeout_ms":9}`, want: ms(9)},
		{name: "string with braces", body: `{"x":"{}}{{]","idle_timeout_ms":10}`, want: ms(10)},
		{name: "string with escaped quote", body: `{"x":"a\"b\\","idle_timeout_ms":11}`, want: ms(11)},
		{name: "string value looking like the member", body: `{"x":"\"idle_timeout_ms\":1","idle_timeout_ms":12}`, want: ms(12)},
		{name: "name with escaped quote", body: `{"a\"b":1,"idle_timeout_ms":13}`, want: ms(13)},
		{name: "escaped member name", body: `{"idle\u005ftimeout_ms":14}`, want: ms(14)},
		{name: "fully escaped member name", body: `{"\u0069\u0064\u006c\u0065\u005f\u0074\u0069\u006d\u0065\u006f\u0075\u0074\u005f\u006d\u0073":15}`, want: ms(15)},
		{name: "escaped other name", body: `{"idle\u005ftimeout_mx":16}`},
		{name: "duplicate member, last wins", body: `{"idle_timeout_ms":1,"idle_timeout_ms":2}`, want: ms(2)},
		{name: "duplicate with escaped name, last wins", body: `{"idle_timeout_ms":1,"idle\u005ftimeout_ms":3}`, want: ms(3)},
		{name: "case differs: ignored", body: `{"IDLE_TIMEOUT_MS":1}`},
		{name: "prefix of the name: ignored", body: `{"idle_timeout":1}`},
		{name: "literals of unknown members", body: `{"a":true,"b":false,"c":null,"d":-1.5e3,"idle_timeout_ms":17}`, want: ms(17)},

		{name: "negative", body: `{"idle_timeout_ms":-1}`, wantErr: true},
		{name: "fraction", body: `{"idle_timeout_ms":1.5}`, wantErr: true},
		{name: "integral fraction", body: `{"idle_timeout_ms":1.0}`, wantErr: true},
		{name: "exponent", body: `{"idle_timeout_ms":1e3}`, wantErr: true},
		{name: "upper-case exponent", body: `{"idle_timeout_ms":1E3}`, wantErr: true},
		{name: "string", body: `{"idle_timeout_ms":"5"}`, wantErr: true},
		{name: "null", body: `{"idle_timeout_ms":null}`, wantErr: true},
		{name: "true", body: `{"idle_timeout_ms":true}`, wantErr: true},
		{name: "false", body: `{"idle_timeout_ms":false}`, wantErr: true},
		{name: "object value", body: `{"idle_timeout_ms":{}}`, wantErr: true},
		{name: "array value", body: `{"idle_timeout_ms":[5]}`, wantErr: true},
		{name: "bad duplicate after a good one", body: `{"idle_timeout_ms":5,"idle_timeout_ms":"5"}`, wantErr: true},
		{name: "overflow by one", body: `{"idle_timeout_ms":` + strconv.FormatInt(maxTimeoutMS+1, 10) + `}`, wantErr: true},
		{name: "overflow int64", body: `{"idle_timeout_ms":9223372036854775808}`, wantErr: true},
		{name: "huge", body: `{"idle_timeout_ms":` + strings.Repeat("9", 400) + `}`, wantErr: true},
		{name: "array", body: `[]`, wantErr: true},
		{name: "number", body: `5`, wantErr: true},
		{name: "string body", body: `"x"`, wantErr: true},
		{name: "null body", body: `null`, wantErr: true},
		{name: "true body", body: `true`, wantErr: true},
		{name: "invalid JSON", body: `{"idle_timeout_ms":}`, wantErr: true},
		{name: "unterminated", body: `{"idle_timeout_ms":5`, wantErr: true},
		{name: "unquoted name", body: `{idle_timeout_ms:5}`, wantErr: true},
		{name: "trailing comma", body: `{"idle_timeout_ms":5,}`, wantErr: true},
		{name: "leading zero", body: `{"idle_timeout_ms":05}`, wantErr: true},
		{name: "plus sign", body: `{"idle_timeout_ms":+5}`, wantErr: true},
		{name: "trailing garbage", body: `{"idle_timeout_ms":5}x`, wantErr: true},
		{name: "two objects", body: `{}{}`, wantErr: true},
		{name: "vertical tab is not white space", body: "\v{}", wantErr: true},
		{name: "NUL", body: "\x00", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := bus.ParseHeartbeat([]byte(tt.body))
			if tt.wantErr {
				if !errors.Is(err, bus.ErrBadPayload) {
					t.Fatalf("ParseHeartbeat(%q) = %+v, %v; want an error wrapping ErrBadPayload", tt.body, got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseHeartbeat(%q): %v", tt.body, err)
			}
			if got != tt.want {
				t.Errorf("ParseHeartbeat(%q) = %+v; want %+v", tt.body, got, tt.want)
			}
		})
	}
}

func TestParseHeartbeatAllocs(t *testing.T) {
	for _, tt := range []struct {
		body   string
		pooled bool // uses encoding/json's pooled scanner
	}{
		{body: ""},
		{body: " \n"},
		{body: `{"idle_timeout_ms":1234}`, pooled: true},
		{body: `{"x":[1,"}"],"idle_timeout_ms":0}`, pooled: true},
	} {
		if tt.pooled && raceEnabled {
			t.Logf("skipping %q: the race detector makes sync.Pool drop items", tt.body)
			continue
		}
		body := tt.body
		b := []byte(body)
		if n := testing.AllocsPerRun(100, func() {
			if _, err := bus.ParseHeartbeat(b); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("ParseHeartbeat(%q) allocates %v times per call; want 0", body, n)
		}
	}
}

// integerRE is a JSON number without fraction or exponent.
var integerRE = regexp.MustCompile(`^-?(0|[1-9][0-9]*)$`)

func FuzzParseHeartbeat(f *testing.F) {
	for _, s := range []string{
		"", " ", "{}", `{"idle_timeout_ms":0}`, `{"idle_timeout_ms":5000}`,
		`{"idle_timeout_ms":9223372036854}`, `{"idle_timeout_ms":9223372036855}`,
		`{"idle\u005ftimeout_ms":1}`, `{"idle_timeout_ms":1,"idle_timeout_ms":2}`,
		`{"x":{"y":["}",{"z":"\""}]},"idle_timeout_ms":3}`, `{"a\"b":1}`,
		`{"idle_timeout_ms":-1}`, `{"idle_timeout_ms":1.5}`, `{"idle_timeout_ms":1e3}`,
		`{"idle_timeout_ms":"5"}`, `{"idle_timeout_ms":null}`, `{"idle_timeout_ms":true}`,
		`[]`, `5`, `{`, `{"idle_timeout_ms":5}x`, `{"IDLE_TIMEOUT_MS":5}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		hb, err := bus.ParseHeartbeat(body)

		// What encoding/json makes of the body: members are matched by
		// exact name, the last duplicate wins.
		blank := strings.Trim(string(body), " \t\r\n") == ""
		var members map[string]json.RawMessage
		isObject := json.Unmarshal(body, &members) == nil && members != nil
		raw, named := members["idle_timeout_ms"]
		var wantMS int64
		goodTimeout := false
		if named && integerRE.Match(raw) {
			n, perr := strconv.ParseInt(string(raw), 10, 64)
			if perr == nil && n >= 0 && n <= maxTimeoutMS {
				var viaJSON int64
				if json.Unmarshal(raw, &viaJSON) != nil || viaJSON != n {
					t.Fatalf("encoding/json decodes %s as %d", raw, viaJSON)
				}
				wantMS, goodTimeout = n, true
			}
		}
		wantOK := blank || isObject && (!named || goodTimeout)

		if err != nil {
			if !errors.Is(err, bus.ErrBadPayload) {
				t.Fatalf("ParseHeartbeat(%q) = %v; want an error wrapping ErrBadPayload", body, err)
			}
			if wantOK {
				t.Fatalf("ParseHeartbeat(%q) = %v; want success (blank %v, object %v, member %s)", body, err, blank, isObject, raw)
			}
			return
		}
		if !wantOK {
			t.Fatalf("ParseHeartbeat(%q) = %+v; want an error (blank %v, object %v, member %s)", body, hb, blank, isObject, raw)
		}
		if hb.HasTimeout != named {
			t.Fatalf("ParseHeartbeat(%q).HasTimeout = %v; want %v", body, hb.HasTimeout, named)
		}
		if want := time.Duration(wantMS) * time.Millisecond; hb.Timeout != want {
			t.Fatalf("ParseHeartbeat(%q).Timeout = %v; want %v", body, hb.Timeout, want)
		}
	})
}
