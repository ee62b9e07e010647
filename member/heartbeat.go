package member

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/idle-worker/idle-worker/bus"
)

// MaxHeartbeatBytes bounds a heartbeat message; a larger one is ignored.
// The largest valid heartbeat (1024 partitions, names of 64 bytes) takes
// about 5 KiB.
const MaxHeartbeatBytes = 16 << 10

// Subject is the core NATS subject of the membership heartbeats of the
// prefix of s, P.store.members: under P.store., where only workers may
// publish or subscribe.
func Subject(s bus.Subjects) string { return s.Store("members") }

// heartbeat is the body of a membership message, JSON in snake_case:
//
//	{"name":"db-1-k3x9qa","instance":"4XH…","partitions":[3,17],"leaving":false,"age_ms":5250}
//
// age_ms is how long the sender's instance has been running, on its own
// monotonic clock: when two instances share a name, the younger one gives
// way. Fields a decoder does not know are ignored, so that a later version
// may add some.
type heartbeat struct {
	Name       string `json:"name"`
	Instance   string `json:"instance"`
	Partitions []int  `json:"partitions"`
	Leaving    bool   `json:"leaving,omitempty"`
	AgeMillis  int64  `json:"age_ms"`
}

// Reasons a heartbeat is rejected, as counted in Stats.Rejected.
const (
	rejectTooLarge     = "too_large"
	rejectBadPayload   = "bad_payload"
	rejectBadName      = "bad_name"
	rejectBadPartition = "bad_partition"
)

// rejection is a decoding error with its reason for the counters.
type rejection struct {
	reason string
	err    error
}

func (r *rejection) Error() string { return r.err.Error() }
func (r *rejection) Unwrap() error { return r.err }

func reject(reason, format string, args ...any) error {
	return &rejection{reason: reason, err: fmt.Errorf("%w: "+format, append([]any{ErrBadHeartbeat}, args...)...)}
}

// encodeHeartbeat returns h's JSON body. Partitions are written as given;
// nil becomes [].
func encodeHeartbeat(h heartbeat) []byte {
	if h.Partitions == nil {
		h.Partitions = []int{}
	}
	data, err := json.Marshal(h)
	if err != nil {
		panic("member: encoding a heartbeat: " + err.Error()) // ints, bools and strings always encode
	}
	return data
}

// decodeHeartbeat parses and checks a heartbeat body for a prefix of the
// given partition count: at most MaxHeartbeatBytes, a JSON object, a sane
// name and instance (CheckName), distinct partitions in [0, partitions)
// (returned sorted), a non-negative age. Errors wrap ErrBadHeartbeat.
func decodeHeartbeat(data []byte, partitions int) (heartbeat, error) {
	if len(data) > MaxHeartbeatBytes {
		return heartbeat{}, reject(rejectTooLarge, "%d bytes, at most %d", len(data), MaxHeartbeatBytes)
	}
	var h heartbeat
	if err := json.Unmarshal(data, &h); err != nil {
		return heartbeat{}, reject(rejectBadPayload, "%v", err)
	}
	if err := CheckName(h.Name); err != nil {
		return heartbeat{}, reject(rejectBadName, "name: %v", err)
	}
	if err := CheckName(h.Instance); err != nil {
		return heartbeat{}, reject(rejectBadName, "instance: %v", err)
	}
	if h.AgeMillis < 0 {
		return heartbeat{}, reject(rejectBadPayload, "age_ms %d is negative", h.AgeMillis)
	}
	if len(h.Partitions) > partitions {
		return heartbeat{}, reject(rejectBadPartition, "%d partitions of %d", len(h.Partitions), partitions)
	}
	slices.Sort(h.Partitions)
	for i, p := range h.Partitions {
		if p < 0 || p >= partitions {
			return heartbeat{}, reject(rejectBadPartition, "partition %d is not in [0, %d)", p, partitions)
		}
		if i > 0 && h.Partitions[i-1] == p {
			return heartbeat{}, reject(rejectBadPartition, "partition %d listed twice", p)
		}
	}
	if len(h.Partitions) == 0 {
		h.Partitions = nil
	}
	return h, nil
}

// rejectReason returns the counter reason of a decodeHeartbeat error.
func rejectReason(err error) string {
	if r := (*rejection)(nil); errors.As(err, &r) {
		return r.reason
	}
	return rejectBadPayload
}
