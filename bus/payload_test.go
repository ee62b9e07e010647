package bus_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
)

func TestParseStateReport(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    string
		wantErr bool
	}{
		{name: "draining", body: `{"state":"draining"}`, want: bus.StateDraining},
		{name: "quiesced", body: `{"state":"quiesced"}`, want: bus.StateQuiesced},
		{name: "removed", body: ` {"state" : "removed"} `, want: bus.StateRemoved},
		{name: "unknown members ignored", body: `{"x":[1,{}],"state":"draining","y":null}`, want: bus.StateDraining},
		{name: "escaped name and value", body: `{"st\u0061te":"quiesc\u0065d"}`, want: bus.StateQuiesced},
		{name: "duplicate, last wins", body: `{"state":"draining","state":"removed"}`, want: bus.StateRemoved},
		{name: "other-case member ignored", body: `{"STATE":"bogus","state":"draining"}`, want: bus.StateDraining},

		{name: "empty", body: "", wantErr: true},
		{name: "white space", body: "  ", wantErr: true},
		{name: "empty object", body: "{}", wantErr: true},
		{name: "only another-case member", body: `{"State":"draining"}`, wantErr: true},
		{name: "empty state", body: `{"state":""}`, wantErr: true},
		{name: "null state", body: `{"state":null}`, wantErr: true},
		{name: "unknown state", body: `{"state":"running"}`, wantErr: true},
		{name: "case differs", body: `{"state":"Draining"}`, wantErr: true},
		{name: "number state", body: `{"state":1}`, wantErr: true},
		{name: "array state", body: `{"state":["draining"]}`, wantErr: true},
		{name: "array body", body: `["draining"]`, wantErr: true},
		{name: "string body", body: `"draining"`, wantErr: true},
		{name: "null body", body: `null`, wantErr: true},
		{name: "trailing garbage", body: `{"state":"draining"}x`, wantErr: true},
		{name: "two objects", body: `{"state":"draining"}{}`, wantErr: true},
		{name: "invalid JSON", body: `{"state":draining}`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := bus.ParseStateReport([]byte(tt.body))
			if tt.wantErr {
				if !errors.Is(err, bus.ErrBadPayload) {
					t.Fatalf("ParseStateReport(%q) = %+v, %v; want an error wrapping ErrBadPayload", tt.body, got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseStateReport(%q): %v", tt.body, err)
			}
			if got.State != tt.want {
				t.Errorf("ParseStateReport(%q).State = %q; want %q", tt.body, got.State, tt.want)
			}
		})
	}
}

func TestParseReason(t *testing.T) {
	tests := []struct {
		in      string
		want    coordinator.Reason
		wantErr bool
	}{
		{in: "idle_timeout", want: coordinator.IdleTimeout},
		{in: "maintenance", want: coordinator.Maintenance},
		{in: "broker_shutdown", want: coordinator.BrokerShutdown},
		{in: "", wantErr: true},
		{in: "unknown", wantErr: true},
		{in: "Maintenance", wantErr: true},
		{in: "idle_timeout ", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := bus.ParseReason(tt.in)
			if tt.wantErr {
				if !errors.Is(err, bus.ErrBadPayload) {
					t.Fatalf("ParseReason(%q) = %v, %v; want an error wrapping ErrBadPayload", tt.in, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseReason(%q) = %v, %v; want %v, nil", tt.in, got, err, tt.want)
			}
			if got.String() != tt.in {
				t.Errorf("ParseReason(%q).String() = %q; want %q", tt.in, got.String(), tt.in)
			}
		})
	}
}

// t0 is a fixed wall-clock time, not in UTC, for event tests.
var t0 = time.Date(2026, 11, 27, 3, 0, 0, 123456789, time.FixedZone("CET", 3600))

func TestQuiesceEventAppendJSON(t *testing.T) {
	tests := []struct {
		name string
		ev   bus.QuiesceEvent
		want string // exact encoding, when not empty
	}{
		{
			name: "contract example",
			ev: bus.QuiesceEvent{ID: "Xk3bq0mH7d2sL9vRt1cYpA-42", Key: "dev-7.gopls.0%2E16%2E1.9f2c", Reason: "idle_timeout",
				IdleForMS: 30001, ConfiguredTimeoutMS: 30000, At: t0, Attempt: 1},
			want: `{"id":"Xk3bq0mH7d2sL9vRt1cYpA-42","key":"dev-7.gopls.0%2E16%2E1.9f2c","reason":"idle_timeout","idle_for_ms":30001,"configured_timeout_ms":30000,"at":"2026-11-27T02:00:00.123456789Z","attempt":1}`,
		},
		{
			name: "whole second",
			ev:   bus.QuiesceEvent{ID: "i-1", Key: "k", Reason: "maintenance", At: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Attempt: 3},
			want: `{"id":"i-1","key":"k","reason":"maintenance","idle_for_ms":0,"configured_timeout_ms":0,"at":"2026-01-02T03:04:05Z","attempt":3}`,
		},
		{
			name: "quote and backslash in key",
			ev:   bus.QuiesceEvent{ID: "i-2", Key: `a"b\c.d\"`, Reason: "broker_shutdown", IdleForMS: 1, ConfiguredTimeoutMS: 1, At: t0},
		},
		{
			name: "control bytes and non-ASCII in id",
			ev:   bus.QuiesceEvent{ID: "\x00\x1f\t\n\"\\é\u2028", Key: "k", Reason: "idle_timeout", IdleForMS: 1 << 62, ConfiguredTimeoutMS: 86400000, At: t0},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.ev.AppendJSON([]byte("prefix:"))
			got, ok := strings.CutPrefix(string(b), "prefix:")
			if !ok {
				t.Fatalf("AppendJSON overwrote its buffer: %q", b)
			}
			if tt.want != "" && got != tt.want {
				t.Errorf("AppendJSON = %s; want %s", got, tt.want)
			}

			// encoding/json reads it back member by member.
			var m map[string]any
			if err := json.Unmarshal([]byte(got), &m); err != nil {
				t.Fatalf("encoding/json cannot read %s: %v", got, err)
			}
			wantMembers := map[string]any{
				"id": tt.ev.ID, "key": tt.ev.Key, "reason": tt.ev.Reason,
				"idle_for_ms": float64(tt.ev.IdleForMS), "configured_timeout_ms": float64(tt.ev.ConfiguredTimeoutMS),
				"at": tt.ev.At.UTC().Format(time.RFC3339Nano), "attempt": float64(tt.ev.Attempt),
			}
			if len(m) != len(wantMembers) {
				t.Errorf("AppendJSON = %s has %d members; want %d", got, len(m), len(wantMembers))
			}
			for name, want := range wantMembers {
				if m[name] != want {
					t.Errorf("member %q = %#v; want %#v", name, m[name], want)
				}
			}
			at, _ := m["at"].(string)
			if !strings.HasSuffix(at, "Z") {
				t.Errorf("at = %q; want RFC 3339 in UTC", at)
			}
			if _, err := time.Parse(time.RFC3339, at); err != nil {
				t.Errorf("at = %q is not RFC 3339: %v", at, err)
			}

			// encoding/json decodes it into the same event.
			var viaJSON bus.QuiesceEvent
			if err := json.Unmarshal([]byte(got), &viaJSON); err != nil {
				t.Fatal(err)
			}
			assertSameEvent(t, "encoding/json", viaJSON, tt.ev)

			// And so does ParseQuiesceEvent, when the key is valid.
			parsed, err := bus.ParseQuiesceEvent([]byte(got))
			if err != nil {
				t.Fatalf("ParseQuiesceEvent(%s): %v", got, err)
			}
			assertSameEvent(t, "ParseQuiesceEvent", parsed, tt.ev)
			if parsed.At.Location() != time.UTC {
				t.Errorf("ParseQuiesceEvent: At in %v; want UTC", parsed.At.Location())
			}
		})
	}
}

func assertSameEvent(t *testing.T, how string, got, want bus.QuiesceEvent) {
	t.Helper()
	if !got.At.Equal(want.At) {
		t.Errorf("%s: At = %v; want %v", how, got.At, want.At)
	}
	got.At, want.At = time.Time{}, time.Time{}
	if got != want {
		t.Errorf("%s: got %+v; want %+v", how, got, want)
	}
}

func TestParseQuiesceEvent(t *testing.T) {
	valid := map[string]any{
		"id": "i-1", "key": "a.b", "reason": "idle_timeout", "idle_for_ms": 31000,
		"configured_timeout_ms": 30000, "at": "2026-11-27T02:00:00.5Z",
	}
	with := func(name string, v any) string {
		m := map[string]any{}
		for k, x := range valid {
			m[k] = x
		}
		if v == nil {
			delete(m, name)
		} else {
			m[name] = v
		}
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	tests := []struct {
		name    string
		body    string
		wantErr bool
	}{
		{name: "valid", body: with("id", "i-1")},
		{name: "maintenance", body: with("reason", "maintenance")},
		{name: "broker_shutdown", body: with("reason", "broker_shutdown")},
		{name: "other offset", body: with("at", "2026-11-27T03:00:00+01:00")},
		{name: "zero durations", body: with("idle_for_ms", 0)},
		{name: "unknown member", body: with("extra", []int{1})},

		{name: "no id", body: with("id", nil), wantErr: true},
		{name: "empty id", body: with("id", ""), wantErr: true},
		{name: "no key", body: with("key", nil), wantErr: true},
		{name: "bad key", body: with("key", "a.*"), wantErr: true},
		{name: "key with space", body: with("key", "a b"), wantErr: true},
		{name: "no reason", body: with("reason", nil), wantErr: true},
		{name: "unknown reason", body: with("reason", "bored"), wantErr: true},
		{name: "no at", body: with("at", nil), wantErr: true},
		{name: "zero at", body: with("at", "0001-01-01T00:00:00Z"), wantErr: true},
		{name: "at not RFC 3339", body: with("at", "yesterday"), wantErr: true},
		{name: "at as number", body: with("at", 1700000000), wantErr: true},
		{name: "negative idle_for_ms", body: with("idle_for_ms", -1), wantErr: true},
		{name: "negative configured_timeout_ms", body: with("configured_timeout_ms", -1), wantErr: true},
		{name: "fractional idle_for_ms", body: with("idle_for_ms", 1.5), wantErr: true},
		{name: "string idle_for_ms", body: with("idle_for_ms", "1"), wantErr: true},
		{name: "number id", body: with("id", 5), wantErr: true},
		{name: "empty", body: "", wantErr: true},
		{name: "array", body: "[]", wantErr: true},
		{name: "trailing garbage", body: with("id", "i-1") + "]", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := bus.ParseQuiesceEvent([]byte(tt.body))
			if tt.wantErr {
				if !errors.Is(err, bus.ErrBadPayload) {
					t.Fatalf("ParseQuiesceEvent(%s) = %+v, %v; want an error wrapping ErrBadPayload", tt.body, got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseQuiesceEvent(%s): %v", tt.body, err)
			}
		})
	}
}

func TestParseListRequest(t *testing.T) {
	tests := []struct {
		name      string
		body      string
		want      bus.ListRequest
		wantErr   error
		matches   string // a key the pattern must match
		unmatched string // a key it must not match
	}{
		{name: "empty body", body: "", want: bus.ListRequest{Match: ">", Limit: 1000}, matches: "a.b.c"},
		{name: "white space", body: " \n", want: bus.ListRequest{Match: ">", Limit: 1000}, matches: "a"},
		{name: "empty object", body: "{}", want: bus.ListRequest{Match: ">", Limit: 1000}, matches: "a"},
		{name: "match", body: `{"match":"dev-7.>"}`, want: bus.ListRequest{Match: "dev-7.>", Limit: 1000}, matches: "dev-7.x", unmatched: "dev-8.x"},
		{name: "literal match", body: `{"match":"a.b"}`, want: bus.ListRequest{Match: "a.b", Limit: 1000}, matches: "a.b", unmatched: "a.b.c"},
		{name: "limit", body: `{"limit":5}`, want: bus.ListRequest{Match: ">", Limit: 5}},
		{name: "limit zero means default", body: `{"limit":0}`, want: bus.ListRequest{Match: ">", Limit: 1000}},
		{name: "max limit", body: `{"limit":10000}`, want: bus.ListRequest{Match: ">", Limit: 10000}},
		{name: "limit one", body: `{"limit":1}`, want: bus.ListRequest{Match: ">", Limit: 1}},
		{name: "empty match means all", body: `{"match":""}`, want: bus.ListRequest{Match: ">", Limit: 1000}},
		{name: "both", body: `{"match":"*.gopls.*.*","limit":2,"other":true}`, want: bus.ListRequest{Match: "*.gopls.*.*", Limit: 2}},

		{name: "limit too large", body: `{"limit":10001}`, wantErr: bus.ErrBadPayload},
		{name: "negative limit", body: `{"limit":-1}`, wantErr: bus.ErrBadPayload},
		{name: "fractional limit", body: `{"limit":1.5}`, wantErr: bus.ErrBadPayload},
		{name: "string limit", body: `{"limit":"5"}`, wantErr: bus.ErrBadPayload},
		{name: "huge limit", body: `{"limit":1e100}`, wantErr: bus.ErrBadPayload},
		{name: "number match", body: `{"match":5}`, wantErr: bus.ErrBadPayload},
		{name: "array body", body: `[]`, wantErr: bus.ErrBadPayload},
		{name: "null body", body: `null`, wantErr: bus.ErrBadPayload},
		{name: "trailing garbage", body: `{}x`, wantErr: bus.ErrBadPayload},
		{name: "gt not last", body: `{"match":">.a"}`, wantErr: bus.ErrBadKey},
		{name: "empty token", body: `{"match":"a..b"}`, wantErr: bus.ErrBadKey},
		{name: "space in match", body: `{"match":"a b"}`, wantErr: bus.ErrBadKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, p, err := bus.ParseListRequest([]byte(tt.body))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("ParseListRequest(%q) = %+v, %v; want an error wrapping %v", tt.body, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseListRequest(%q): %v", tt.body, err)
			}
			if got != tt.want {
				t.Errorf("ParseListRequest(%q) = %+v; want %+v", tt.body, got, tt.want)
			}
			if p.String() != tt.want.Match {
				t.Errorf("pattern = %q; want %q", p.String(), tt.want.Match)
			}
			if tt.matches != "" && !p.Match(tt.matches) {
				t.Errorf("pattern %q does not match %q", p, tt.matches)
			}
			if tt.unmatched != "" && p.Match(tt.unmatched) {
				t.Errorf("pattern %q matches %q", p, tt.unmatched)
			}
		})
	}
}

func TestParseQuiesceRequest(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		wantMatch  string
		wantReason coordinator.Reason
		wantErr    error
	}{
		{name: "default reason", body: `{"match":"dev-7.>"}`, wantMatch: "dev-7.>", wantReason: coordinator.Maintenance},
		{name: "empty reason", body: `{"match":"a","reason":""}`, wantMatch: "a", wantReason: coordinator.Maintenance},
		{name: "maintenance", body: `{"match":"a","reason":"maintenance"}`, wantMatch: "a", wantReason: coordinator.Maintenance},
		{name: "broker_shutdown", body: `{"match":">","reason":"broker_shutdown"}`, wantMatch: ">", wantReason: coordinator.BrokerShutdown},
		{name: "unknown member", body: `{"match":"*.x","x":1}`, wantMatch: "*.x", wantReason: coordinator.Maintenance},

		{name: "idle_timeout not allowed", body: `{"match":"a","reason":"idle_timeout"}`, wantErr: bus.ErrBadPayload},
		{name: "unknown reason", body: `{"match":"a","reason":"bored"}`, wantErr: bus.ErrBadPayload},
		{name: "number reason", body: `{"match":"a","reason":1}`, wantErr: bus.ErrBadPayload},
		{name: "no match", body: `{"reason":"maintenance"}`, wantErr: bus.ErrBadPayload},
		{name: "empty match", body: `{"match":""}`, wantErr: bus.ErrBadPayload},
		{name: "empty body", body: ``, wantErr: bus.ErrBadPayload},
		{name: "empty object", body: `{}`, wantErr: bus.ErrBadPayload},
		{name: "array body", body: `["a"]`, wantErr: bus.ErrBadPayload},
		{name: "trailing garbage", body: `{"match":"a"} {}`, wantErr: bus.ErrBadPayload},
		{name: "bad pattern", body: `{"match":"a.>.b"}`, wantErr: bus.ErrBadKey},
		{name: "non-ASCII pattern", body: `{"match":"é"}`, wantErr: bus.ErrBadKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, reason, err := bus.ParseQuiesceRequest([]byte(tt.body))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("ParseQuiesceRequest(%q) = %q, %v, %v; want an error wrapping %v", tt.body, p, reason, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseQuiesceRequest(%q): %v", tt.body, err)
			}
			if p.String() != tt.wantMatch || reason != tt.wantReason {
				t.Errorf("ParseQuiesceRequest(%q) = %q, %v; want %q, %v", tt.body, p, reason, tt.wantMatch, tt.wantReason)
			}
		})
	}
}

func TestParseGetRequest(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    string
		wantErr error
	}{
		{name: "key", body: `{"key":"dev-7.gopls.0%2E16%2E1.9f2c"}`, want: "dev-7.gopls.0%2E16%2E1.9f2c"},
		{name: "unknown member", body: `{"x":{},"key":"a"}`, want: "a"},
		{name: "escaped key", body: `{"key":"a\"b"}`, want: `a"b`},

		{name: "no key", body: `{}`, wantErr: bus.ErrBadKey},
		{name: "empty key", body: `{"key":""}`, wantErr: bus.ErrBadKey},
		{name: "pattern is not a key", body: `{"key":"a.>"}`, wantErr: bus.ErrBadKey},
		{name: "star token", body: `{"key":"*"}`, wantErr: bus.ErrBadKey},
		{name: "control byte", body: `{"key":"a\u0000"}`, wantErr: bus.ErrBadKey},
		{name: "empty body", body: ``, wantErr: bus.ErrBadPayload},
		{name: "string body", body: `"a"`, wantErr: bus.ErrBadPayload},
		{name: "number key", body: `{"key":1}`, wantErr: bus.ErrBadPayload},
		{name: "trailing garbage", body: `{"key":"a"}}`, wantErr: bus.ErrBadPayload},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := bus.ParseGetRequest([]byte(tt.body))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("ParseGetRequest(%q) = %q, %v; want an error wrapping %v", tt.body, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseGetRequest(%q) = %q, %v; want %q, nil", tt.body, got, err, tt.want)
			}
		})
	}
}

// isBadInput reports whether err wraps one of the parsers' sentinels.
func isBadInput(err error) bool {
	return errors.Is(err, bus.ErrBadPayload) || errors.Is(err, bus.ErrBadKey)
}

// exactMembers decodes body as encoding/json sees a JSON object, with member
// names compared exactly; ok is false when body is not an object.
func exactMembers(body []byte) (map[string]json.RawMessage, bool) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil || m == nil {
		return nil, false
	}
	return m, true
}

// exactString returns the string member name of an object body.
func exactString(t *testing.T, body []byte, name string) string {
	t.Helper()
	m, ok := exactMembers(body)
	if !ok {
		t.Fatalf("parser accepted %q, which encoding/json does not read as an object", body)
	}
	var s string
	if raw, ok := m[name]; ok {
		if err := json.Unmarshal(raw, &s); err != nil {
			t.Fatalf("parser accepted %q, whose %q is not a string: %v", body, name, err)
		}
	}
	return s
}

func FuzzParseStateReport(f *testing.F) {
	for _, s := range []string{
		`{"state":"draining"}`, `{"state":"quiesced"}`, `{"state":"removed"}`, `{"state":"running"}`,
		`{"state":""}`, `{}`, ``, `{"State":"draining"}`, `{"state":"draining","state":"x"}`,
		`{"st\u0061te":"removed"}`, `{"state":1}`, `[]`, `{"state":"draining"}x`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := bus.ParseStateReport(body)
		if err != nil {
			if !errors.Is(err, bus.ErrBadPayload) {
				t.Fatalf("ParseStateReport(%q) = %v; want an error wrapping ErrBadPayload", body, err)
			}
			return
		}
		switch r.State {
		case bus.StateDraining, bus.StateQuiesced, bus.StateRemoved:
		default:
			t.Fatalf("ParseStateReport(%q) = %+v; want a known state", body, r)
		}
		if want := exactString(t, body, "state"); r.State != want {
			t.Fatalf("ParseStateReport(%q).State = %q; encoding/json reads member \"state\" as %q", body, r.State, want)
		}
	})
}

func FuzzParseQuiesceEvent(f *testing.F) {
	ev := bus.QuiesceEvent{ID: "Xk3bq0mH7d2sL9vRt1cYpA-42", Key: "dev-7.gopls.0%2E16%2E1.9f2c", Reason: "idle_timeout",
		IdleForMS: 30001, ConfiguredTimeoutMS: 30000, At: t0}
	f.Add(ev.AppendJSON(nil))
	for _, s := range []string{
		`{"id":"i","key":"a","reason":"maintenance","idle_for_ms":0,"configured_timeout_ms":0,"at":"2026-01-01T00:00:00Z"}`,
		`{"id":"i","key":"a\"b","reason":"broker_shutdown","at":"2026-01-01T01:00:00+01:00"}`,
		`{"id":"i","key":"a","reason":"idle_timeout","at":"0000-01-01T00:30:00+01:00"}`,
		`{"id":"i","key":"a","reason":"idle_timeout","at":"9999-12-31T23:30:00-01:00"}`,
		`{"id":"","key":"a","reason":"maintenance","at":"2026-01-01T00:00:00Z"}`,
		`{"ID":"i","KEY":"a","Reason":"maintenance","AT":"2026-01-01T00:00:00Z"}`,
		`{"id":"i","key":"a.>","reason":"maintenance","at":"2026-01-01T00:00:00Z"}`,
		`{"id":"i","key":"a","reason":"maintenance","idle_for_ms":-1,"at":"2026-01-01T00:00:00Z"}`,
		`{}`, ``, `[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		e, err := bus.ParseQuiesceEvent(body)
		if err != nil {
			if !errors.Is(err, bus.ErrBadPayload) {
				t.Fatalf("ParseQuiesceEvent(%q) = %v; want an error wrapping ErrBadPayload", body, err)
			}
			return
		}
		if e.ID == "" || bus.ValidateKey(e.Key) != nil || e.At.IsZero() || e.IdleForMS < 0 || e.ConfiguredTimeoutMS < 0 {
			t.Fatalf("ParseQuiesceEvent(%q) = %+v; want an event with id, valid key, at and durations >= 0", body, e)
		}
		if _, err := bus.ParseReason(e.Reason); err != nil {
			t.Fatalf("ParseQuiesceEvent(%q) = %+v with reason %v", body, e, err)
		}
		if got, want := e.Key, exactString(t, body, "key"); got != want {
			t.Fatalf("ParseQuiesceEvent(%q).Key = %q; encoding/json reads member \"key\" as %q", body, got, want)
		}
		if got, want := e.ID, exactString(t, body, "id"); got != want {
			t.Fatalf("ParseQuiesceEvent(%q).ID = %q; encoding/json reads member \"id\" as %q", body, got, want)
		}
		// What the parser accepts, AppendJSON writes back in the canonical
		// form (at in UTC), and that parses to the same event.
		out := e.AppendJSON(nil)
		back, err := bus.ParseQuiesceEvent(out)
		if err != nil {
			t.Fatalf("ParseQuiesceEvent(%q) = %+v, but its AppendJSON %s does not parse: %v", body, e, out, err)
		}
		assertSameEvent(t, "round trip", back, e)
		var m map[string]any
		if err := json.Unmarshal(out, &m); err != nil {
			t.Fatalf("AppendJSON = %s is not JSON: %v", out, err)
		}
		if at, _ := m["at"].(string); !strings.HasSuffix(at, "Z") {
			t.Fatalf("AppendJSON = %s; want at in UTC", out)
		}
	})
}

func FuzzParseListRequest(f *testing.F) {
	for _, s := range []string{
		``, ` `, `{}`, `{"match":"dev-7.>","limit":5}`, `{"limit":0}`, `{"limit":10000}`, `{"limit":10001}`,
		`{"limit":-1}`, `{"match":">.a"}`, `{"match":""}`, `{"Match":"a","LIMIT":1}`, `null`, `{}x`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, p, err := bus.ParseListRequest(body)
		if err != nil {
			if !isBadInput(err) {
				t.Fatalf("ParseListRequest(%q) = %v; want an error wrapping ErrBadPayload or ErrBadKey", body, err)
			}
			return
		}
		if r.Limit < 1 || r.Limit > bus.MaxListLimit {
			t.Fatalf("ParseListRequest(%q).Limit = %d; want 1..%d", body, r.Limit, bus.MaxListLimit)
		}
		if p.String() != r.Match {
			t.Fatalf("ParseListRequest(%q) pattern %q; want %q", body, p, r.Match)
		}
		if _, err := bus.ParsePattern(r.Match); err != nil {
			t.Fatalf("ParseListRequest(%q).Match = %q: %v", body, r.Match, err)
		}
		if strings.Trim(string(body), " \t\r\n") == "" {
			if r != (bus.ListRequest{Match: ">", Limit: bus.DefaultListLimit}) {
				t.Fatalf("ParseListRequest(%q) = %+v; want the defaults", body, r)
			}
			return
		}
		want := exactString(t, body, "match")
		if want == "" {
			want = ">"
		}
		if r.Match != want {
			t.Fatalf("ParseListRequest(%q).Match = %q; want %q", body, r.Match, want)
		}
	})
}

func FuzzParseQuiesceRequest(f *testing.F) {
	for _, s := range []string{
		`{"match":"dev-7.>"}`, `{"match":"a","reason":"broker_shutdown"}`, `{"match":"a","reason":"idle_timeout"}`,
		`{"match":"a","reason":"maintenance"}`, `{"match":""}`, `{}`, ``, `{"MATCH":"a","Reason":"broker_shutdown"}`,
		`{"match":"a.>.b"}`, `{"match":"a"}]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, reason, err := bus.ParseQuiesceRequest(body)
		if err != nil {
			if !isBadInput(err) {
				t.Fatalf("ParseQuiesceRequest(%q) = %v; want an error wrapping ErrBadPayload or ErrBadKey", body, err)
			}
			return
		}
		if reason != coordinator.Maintenance && reason != coordinator.BrokerShutdown {
			t.Fatalf("ParseQuiesceRequest(%q) reason %v; want maintenance or broker_shutdown", body, reason)
		}
		if want := exactString(t, body, "match"); p.String() != want {
			t.Fatalf("ParseQuiesceRequest(%q) pattern %q; encoding/json reads member \"match\" as %q", body, p, want)
		}
		wantReason := coordinator.Maintenance
		if exactString(t, body, "reason") == "broker_shutdown" {
			wantReason = coordinator.BrokerShutdown
		}
		if reason != wantReason {
			t.Fatalf("ParseQuiesceRequest(%q) reason %v; want %v", body, reason, wantReason)
		}
	})
}

func FuzzParseGetRequest(f *testing.F) {
	for _, s := range []string{
		`{"key":"dev-7.gopls.0%2E16%2E1.9f2c"}`, `{"key":""}`, `{"key":"a.>"}`, `{}`, ``, `{"KEY":"a"}`,
		`{"key":"a","key":"b"}`, `{"key":1}`, `{"key":"a"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		key, err := bus.ParseGetRequest(body)
		if err != nil {
			if !isBadInput(err) {
				t.Fatalf("ParseGetRequest(%q) = %v; want an error wrapping ErrBadPayload or ErrBadKey", body, err)
			}
			return
		}
		if err := bus.ValidateKey(key); err != nil {
			t.Fatalf("ParseGetRequest(%q) = %q, an invalid key: %v", body, key, err)
		}
		if want := exactString(t, body, "key"); key != want {
			t.Fatalf("ParseGetRequest(%q) = %q; encoding/json reads member \"key\" as %q", body, key, want)
		}
	})
}
