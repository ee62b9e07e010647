package member

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/idle-worker/idle-worker/bus"
)

func TestSubject(t *testing.T) {
	if got, want := Subject(bus.MustSubjects("idle")), "idle.store.members"; got != want {
		t.Errorf("Subject = %q; want %q", got, want)
	}
}

func TestDecodeHeartbeat(t *testing.T) {
	const n = 8
	tests := []struct {
		name   string
		data   string
		want   heartbeat
		reason string // "" for accepted
	}{
		{name: "full", data: `{"name":"w1","instance":"I1","partitions":[3,1],"leaving":false,"age_ms":5}`,
			want: heartbeat{Name: "w1", Instance: "I1", Partitions: []int{1, 3}, AgeMillis: 5}},
		{name: "leaving, no partitions", data: `{"name":"w1","instance":"I1","partitions":[],"leaving":true}`,
			want: heartbeat{Name: "w1", Instance: "I1", Leaving: true}},
		{name: "partitions absent", data: `{"name":"w1","instance":"I1"}`,
			want: heartbeat{Name: "w1", Instance: "I1"}},
		{name: "partitions null", data: `{"name":"w1","instance":"I1","partitions":null}`,
			want: heartbeat{Name: "w1", Instance: "I1"}},
		{name: "unknown fields ignored", data: `{"name":"w1","instance":"I1","zone":"eu","partitions":[7]}`,
			want: heartbeat{Name: "w1", Instance: "I1", Partitions: []int{7}}},
		{name: "every partition", data: `{"name":"w1","instance":"I1","partitions":[0,1,2,3,4,5,6,7]}`,
			want: heartbeat{Name: "w1", Instance: "I1", Partitions: []int{0, 1, 2, 3, 4, 5, 6, 7}}},
		{name: "too large", data: `{"name":"w1","instance":"I1","pad":"` + strings.Repeat("x", MaxHeartbeatBytes) + `"}`, reason: rejectTooLarge},
		{name: "empty", data: ``, reason: rejectBadPayload},
		{name: "not json", data: `hello`, reason: rejectBadPayload},
		{name: "array", data: `[1,2]`, reason: rejectBadPayload},
		{name: "null", data: `null`, reason: rejectBadName},
		{name: "truncated", data: `{"name":"w1","instance":"I1","partitions":[1,`, reason: rejectBadPayload},
		{name: "name not a string", data: `{"name":5,"instance":"I1"}`, reason: rejectBadPayload},
		{name: "partition not an int", data: `{"name":"w1","instance":"I1","partitions":[1.5]}`, reason: rejectBadPayload},
		{name: "partition huge", data: `{"name":"w1","instance":"I1","partitions":[1e300]}`, reason: rejectBadPayload},
		{name: "leaving not a bool", data: `{"name":"w1","instance":"I1","leaving":"yes"}`, reason: rejectBadPayload},
		{name: "negative age", data: `{"name":"w1","instance":"I1","age_ms":-1}`, reason: rejectBadPayload},
		{name: "no name", data: `{"instance":"I1"}`, reason: rejectBadName},
		{name: "bad name", data: `{"name":"w 1","instance":"I1"}`, reason: rejectBadName},
		{name: "long name", data: `{"name":"` + strings.Repeat("w", 65) + `","instance":"I1"}`, reason: rejectBadName},
		{name: "no instance", data: `{"name":"w1"}`, reason: rejectBadName},
		{name: "bad instance", data: `{"name":"w1","instance":"a>b"}`, reason: rejectBadName},
		{name: "partition too big", data: `{"name":"w1","instance":"I1","partitions":[8]}`, reason: rejectBadPartition},
		{name: "partition negative", data: `{"name":"w1","instance":"I1","partitions":[-1]}`, reason: rejectBadPartition},
		{name: "partition absurd", data: `{"name":"w1","instance":"I1","partitions":[9223372036854775807]}`, reason: rejectBadPartition},
		{name: "partition twice", data: `{"name":"w1","instance":"I1","partitions":[2,2]}`, reason: rejectBadPartition},
		{name: "more partitions than exist", data: `{"name":"w1","instance":"I1","partitions":[0,1,2,3,4,5,6,7,0]}`, reason: rejectBadPartition},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeHeartbeat([]byte(tt.data), n)
			if tt.reason != "" {
				if err == nil {
					t.Fatalf("decodeHeartbeat = %+v, nil; want a %s error", got, tt.reason)
				}
				if !errors.Is(err, ErrBadHeartbeat) || rejectReason(err) != tt.reason {
					t.Fatalf("decodeHeartbeat error %v (reason %s); want ErrBadHeartbeat, reason %s", err, rejectReason(err), tt.reason)
				}
				return
			}
			if err != nil {
				t.Fatalf("decodeHeartbeat: %v", err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("decodeHeartbeat = %+v; want %+v", got, tt.want)
			}
		})
	}
}

func TestEncodeHeartbeat(t *testing.T) {
	h := heartbeat{Name: "w1", Instance: "I1", Partitions: []int{0, 5}, AgeMillis: 250}
	if got, want := string(encodeHeartbeat(h)), `{"name":"w1","instance":"I1","partitions":[0,5],"age_ms":250}`; got != want {
		t.Errorf("encode = %s; want %s", got, want)
	}
	left := heartbeat{Name: "w1", Instance: "I1", Leaving: true}
	if got, want := string(encodeHeartbeat(left)), `{"name":"w1","instance":"I1","partitions":[],"leaving":true,"age_ms":0}`; got != want {
		t.Errorf("encode = %s; want %s", got, want)
	}
}

// TestLargestHeartbeatFits: a heartbeat listing every partition of the
// largest count, with the longest names, is accepted.
func TestLargestHeartbeatFits(t *testing.T) {
	const n = 1024
	h := heartbeat{Name: strings.Repeat("n", MaxNameLen), Instance: strings.Repeat("i", MaxNameLen), AgeMillis: 1 << 62}
	for p := range n {
		h.Partitions = append(h.Partitions, p)
	}
	data := encodeHeartbeat(h)
	got, err := decodeHeartbeat(data, n)
	if err != nil {
		t.Fatalf("%d bytes: %v", len(data), err)
	}
	if !slices.Equal(got.Partitions, h.Partitions) {
		t.Errorf("partitions differ after a round trip")
	}
}

// FuzzDecodeHeartbeat: no input crashes the decoder; an accepted heartbeat
// is sane and survives encoding; a refused one says why.
func FuzzDecodeHeartbeat(f *testing.F) {
	for _, s := range []string{
		`{"name":"w1","instance":"I1","partitions":[3,1],"leaving":false,"age_ms":5}`,
		`{"name":"w1","instance":"I1","partitions":[],"leaving":true}`,
		`{"name":"w1","instance":"I1","partitions":[2,2]}`,
		`{"name":"w 1","instance":"I1"}`,
		`{"name":"w1","instance":"I1","partitions":[1e300]}`,
		`{"name":"w1","instance":"I1","partitions":[-1,64]}`,
		`null`, `[]`, `{}`, `{"name":"\u0000"}`, ``,
	} {
		f.Add([]byte(s), 64)
	}
	known := []string{rejectTooLarge, rejectBadPayload, rejectBadName, rejectBadPartition}
	f.Fuzz(func(t *testing.T, data []byte, n int) {
		if n < 1 || n > 1024 {
			n = 64
		}
		h, err := decodeHeartbeat(data, n)
		if err != nil {
			if !errors.Is(err, ErrBadHeartbeat) || !slices.Contains(known, rejectReason(err)) {
				t.Fatalf("error %v (reason %q); want ErrBadHeartbeat with a known reason", err, rejectReason(err))
			}
			return
		}
		if CheckName(h.Name) != nil || CheckName(h.Instance) != nil || h.AgeMillis < 0 {
			t.Fatalf("accepted %+v", h)
		}
		for i, p := range h.Partitions {
			if p < 0 || p >= n || i > 0 && h.Partitions[i-1] >= p {
				t.Fatalf("accepted partitions %v of %d", h.Partitions, n)
			}
		}
		again, err := decodeHeartbeat(encodeHeartbeat(h), n)
		if err != nil || fmt.Sprint(again) != fmt.Sprint(h) {
			t.Fatalf("round trip of %+v: %+v, %v", h, again, err)
		}
	})
}
