package bus

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/idle-worker/idle-worker/coordinator"
)

// Broker-reported states, the values of StateReport.State.
const (
	StateDraining = "draining"
	StateQuiesced = "quiesced"
	StateRemoved  = "removed"
)

// StateReport is a decoded P.state.K body.
type StateReport struct {
	State string `json:"state"`
}

// ParseStateReport decodes {"state": "draining"|"quiesced"|"removed"}.
// Unknown members are ignored. Errors wrap ErrBadPayload.
func ParseStateReport(body []byte) (StateReport, error) {
	var r StateReport
	if err := decodeObject(body, "state report", member{"state", &r.State}); err != nil {
		return StateReport{}, err
	}
	switch r.State {
	case StateDraining, StateQuiesced, StateRemoved:
		return r, nil
	case "":
		return StateReport{}, fmt.Errorf("%w: state report needs \"state\"", ErrBadPayload)
	}
	return StateReport{}, fmt.Errorf("%w: unknown state %q (want draining, quiesced or removed)", ErrBadPayload, r.State)
}

// QuiesceEvent is the body of P.quiesce.K: the worker's request that the
// broker drain backend Key.
type QuiesceEvent struct {
	// ID is unique per emission and repeated in the Nats-Msg-Id header.
	ID  string `json:"id"`
	Key string `json:"key"`
	// Reason is "idle_timeout", "maintenance" or "broker_shutdown".
	Reason string `json:"reason"`
	// IdleForMS is how long the backend had been idle, in milliseconds.
	IdleForMS int64 `json:"idle_for_ms"`
	// ConfiguredTimeoutMS is the backend's idle timeout in milliseconds.
	ConfiguredTimeoutMS int64 `json:"configured_timeout_ms"`
	// At is the worker's wall-clock time of emission, RFC 3339 in UTC.
	At time.Time `json:"at"`
	// Attempt is 1 for the first emission of an id and counts re-sends of
	// the same id after it (redelivery, or a restart).
	Attempt int `json:"attempt"`
}

// AppendJSON appends e as JSON to b, without reflection.
func (e QuiesceEvent) AppendJSON(b []byte) []byte {
	b = append(b, `{"id":`...)
	b = appendString(b, e.ID)
	b = append(b, `,"key":`...)
	b = appendString(b, e.Key)
	b = append(b, `,"reason":`...)
	b = appendString(b, e.Reason)
	b = append(b, `,"idle_for_ms":`...)
	b = strconv.AppendInt(b, e.IdleForMS, 10)
	b = append(b, `,"configured_timeout_ms":`...)
	b = strconv.AppendInt(b, e.ConfiguredTimeoutMS, 10)
	b = append(b, `,"at":"`...)
	b = e.At.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","attempt":`...)
	b = strconv.AppendInt(b, int64(e.Attempt), 10)
	return append(b, '}')
}

// ParseQuiesceEvent decodes a P.quiesce.K body and checks that its required
// members are present and its reason is known. Errors wrap ErrBadPayload.
func ParseQuiesceEvent(body []byte) (QuiesceEvent, error) {
	var e QuiesceEvent
	err := decodeObject(body, "quiesce event",
		member{"id", &e.ID}, member{"key", &e.Key}, member{"reason", &e.Reason},
		member{"idle_for_ms", &e.IdleForMS}, member{"configured_timeout_ms", &e.ConfiguredTimeoutMS},
		member{"at", &e.At}, member{"attempt", &e.Attempt})
	if err != nil {
		return QuiesceEvent{}, err
	}
	switch {
	case e.ID == "":
		return QuiesceEvent{}, fmt.Errorf("%w: quiesce event needs \"id\"", ErrBadPayload)
	case ValidateKey(e.Key) != nil:
		return QuiesceEvent{}, fmt.Errorf("%w: quiesce event key: %w", ErrBadPayload, ValidateKey(e.Key))
	case e.At.IsZero():
		return QuiesceEvent{}, fmt.Errorf("%w: quiesce event needs \"at\"", ErrBadPayload)
	case e.At.UTC().Year() < 0 || e.At.UTC().Year() > 9999:
		// RFC 3339 has four-digit years; AppendJSON could not write it back.
		return QuiesceEvent{}, fmt.Errorf("%w: quiesce event \"at\" is out of range in UTC", ErrBadPayload)
	case e.IdleForMS < 0 || e.ConfiguredTimeoutMS < 0 || e.Attempt < 0:
		return QuiesceEvent{}, fmt.Errorf("%w: quiesce event has negative numbers", ErrBadPayload)
	}
	if _, err := ParseReason(e.Reason); err != nil {
		return QuiesceEvent{}, err
	}
	return e, nil
}

// ParseReason maps a reason's wire name to coordinator.Reason. Errors wrap
// ErrBadPayload.
func ParseReason(s string) (coordinator.Reason, error) {
	for _, r := range coordinator.Reasons() {
		if r.String() == s {
			return r, nil
		}
	}
	return 0, fmt.Errorf("%w: unknown reason %q", ErrBadPayload, s)
}

// ListRequest is the optional body of a P.admin.list request.
type ListRequest struct {
	// Match restricts the list to keys matching this key or pattern.
	Match string `json:"match,omitempty"`
	// Limit caps the number of backends returned (default 1000, at most
	// 10000); the reply says when the list was truncated.
	Limit int `json:"limit,omitempty"`
}

// Limits of a list reply.
const (
	DefaultListLimit = 1000
	MaxListLimit     = 10000
)

// BackendInfo describes one backend in admin replies.
type BackendInfo struct {
	Key           string `json:"key"`
	State         string `json:"state"`
	IdleForMS     int64  `json:"idle_for_ms"`
	IdleTimeoutMS int64  `json:"idle_timeout_ms"`
	// Attempts counts the quiesce events sent for a draining backend's
	// current id (0 when none was sent): above 1, it was redelivered.
	Attempts int `json:"attempts"`
}

// ListReply answers P.admin.list. Backends are sorted by key.
type ListReply struct {
	OK       bool          `json:"ok"`
	Backends []BackendInfo `json:"backends"`
	// Total is the number of matching backends, Truncated whether Backends
	// holds fewer than Total.
	Total     int  `json:"total"`
	Truncated bool `json:"truncated"`
	// Unacknowledged counts all draining backends (matching or not) that
	// were sent a quiesce and have had no quiesced, removed or activity
	// since.
	Unacknowledged int `json:"unacknowledged"`
	// Partial is true when the answer may lack backends: a member of the
	// prefix did not answer in time (Missing names them), or no answer
	// covered some partitions (MissingPartitions; during a hand-over).
	Partial           bool     `json:"partial,omitempty"`
	Missing           []string `json:"missing,omitempty"`
	MissingPartitions []int    `json:"missing_partitions,omitempty"`
}

// QuiesceRequest is the body of a P.admin.quiesce request.
type QuiesceRequest struct {
	// Match is a key or a pattern ("*" one token, ">" the rest).
	Match string `json:"match"`
	// Reason is "maintenance" (the default) or "broker_shutdown".
	Reason string `json:"reason,omitempty"`
}

// QuiesceReply answers P.admin.quiesce.
type QuiesceReply struct {
	OK bool `json:"ok"`
	// Quiesced counts the running backends the request drains: each is sent
	// a quiesce, in order, as fast as the worker's event budget allows
	// (IDLE_QUIESCE_RATE; at once without one), unless it was already due.
	Quiesced int `json:"quiesced"`
	// Partial is true when the answer may not cover every backend: a member of the
	// prefix did not answer in time (Missing names them), or no answer
	// covered some partitions (MissingPartitions; during a hand-over).
	Partial           bool     `json:"partial,omitempty"`
	Missing           []string `json:"missing,omitempty"`
	MissingPartitions []int    `json:"missing_partitions,omitempty"`
}

// ForgetRequest is the body of a P.admin.forget request.
type ForgetRequest struct {
	// Match is a key or a pattern ("*" one token, ">" the rest).
	Match string `json:"match"`
}

// ForgetReply answers P.admin.forget.
type ForgetReply struct {
	OK bool `json:"ok"`
	// Forgotten counts the backends, in any state, no longer tracked.
	Forgotten int `json:"forgotten"`
	// Partial is true when the answer may not cover every backend: a member of the
	// prefix did not answer in time (Missing names them), or no answer
	// covered some partitions (MissingPartitions; during a hand-over).
	Partial           bool     `json:"partial,omitempty"`
	Missing           []string `json:"missing,omitempty"`
	MissingPartitions []int    `json:"missing_partitions,omitempty"`
}

// GetRequest is the body of a P.admin.get request.
type GetRequest struct {
	Key string `json:"key"`
}

// GetReply answers P.admin.get.
type GetReply struct {
	OK      bool        `json:"ok"`
	Backend BackendInfo `json:"backend"`
}

// MembersReply answers P.admin.members: the workers of the prefix and the
// partitions each owns. Once the workers have settled, every partition in
// [0, Partitions) is listed once.
type MembersReply struct {
	OK bool `json:"ok"`
	// Partitions is the partition count of the prefix (1 for a worker
	// without a store: one partition holds every key).
	Partitions int `json:"partitions"`
	// Members are sorted by name.
	Members []MemberInfo `json:"members"`
}

// HeartbeatReply answers a heartbeat that carried a reply subject.
type HeartbeatReply struct {
	OK            bool   `json:"ok"`
	Key           string `json:"key"`
	IdleTimeoutMS int64  `json:"idle_timeout_ms"`
}

// StateReply answers a state report that carried a reply subject.
type StateReply struct {
	OK    bool   `json:"ok"`
	Key   string `json:"key"`
	State string `json:"state"`
}

// ErrorReply is the reply to any rejected request.
type ErrorReply struct {
	OK    bool   `json:"ok"`
	Error string `json:"error"`
}

// ParseListRequest decodes a P.admin.list body; an empty body lists
// everything up to DefaultListLimit. Errors wrap ErrBadPayload or ErrBadKey.
func ParseListRequest(body []byte) (ListRequest, Pattern, error) {
	var r ListRequest
	if len(trimSpace(body)) > 0 {
		if err := decodeObject(body, "list request", member{"match", &r.Match}, member{"limit", &r.Limit}); err != nil {
			return ListRequest{}, Pattern{}, err
		}
	}
	switch {
	case r.Limit < 0 || r.Limit > MaxListLimit:
		return ListRequest{}, Pattern{}, fmt.Errorf("%w: limit %d out of range 0..%d", ErrBadPayload, r.Limit, MaxListLimit)
	case r.Limit == 0:
		r.Limit = DefaultListLimit
	}
	if r.Match == "" {
		r.Match = ">"
	}
	p, err := ParsePattern(r.Match)
	if err != nil {
		return ListRequest{}, Pattern{}, err
	}
	return r, p, nil
}

// ParseQuiesceRequest decodes a P.admin.quiesce body. Errors wrap
// ErrBadPayload or ErrBadKey.
func ParseQuiesceRequest(body []byte) (Pattern, coordinator.Reason, error) {
	var r QuiesceRequest
	p, err := parseMatchRequest(body, "quiesce request", &r.Match, member{"reason", &r.Reason})
	if err != nil {
		return Pattern{}, 0, err
	}
	reason := coordinator.Maintenance
	switch r.Reason {
	case "", "maintenance":
	case "broker_shutdown":
		reason = coordinator.BrokerShutdown
	default:
		return Pattern{}, 0, fmt.Errorf("%w: reason %q not allowed (want maintenance or broker_shutdown)", ErrBadPayload, r.Reason)
	}
	return p, reason, nil
}

// ParseForgetRequest decodes a P.admin.forget body. Errors wrap
// ErrBadPayload or ErrBadKey.
func ParseForgetRequest(body []byte) (Pattern, error) {
	var r ForgetRequest
	return parseMatchRequest(body, "forget request", &r.Match)
}

// parseMatchRequest decodes an admin request whose "match" member is
// required, into match and the other members, and parses the pattern.
func parseMatchRequest(body []byte, what string, match *string, others ...member) (Pattern, error) {
	if err := decodeObject(body, what, append([]member{{"match", match}}, others...)...); err != nil {
		return Pattern{}, err
	}
	if *match == "" {
		return Pattern{}, fmt.Errorf("%w: %s needs \"match\"", ErrBadPayload, what)
	}
	return ParsePattern(*match)
}

// ParseGetRequest decodes a P.admin.get body: {"key": K}. Errors wrap
// ErrBadPayload or ErrBadKey.
func ParseGetRequest(body []byte) (string, error) {
	var r GetRequest
	if err := decodeObject(body, "get request", member{"key", &r.Key}); err != nil {
		return "", err
	}
	if err := ValidateKey(r.Key); err != nil {
		return "", err
	}
	return r.Key, nil
}

// member names one member of a JSON object and where decodeObject puts its
// value.
type member struct {
	name string
	dst  any
}

// decodeObject decodes a JSON object member by member, ignoring unknown
// members and rejecting trailing data (json.Unmarshal does). Names match
// exactly, as in ParseHeartbeat: decoding into a struct would match them
// case-insensitively, so {"STATE":"removed"} would count as "state". A
// repeated member's last value wins.
func decodeObject(body []byte, what string, members ...member) error {
	b := trimSpace(body)
	if len(b) == 0 || b[0] != '{' {
		return fmt.Errorf("%w: %s must be a JSON object", ErrBadPayload, what)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrBadPayload, what, err)
	}
	for _, m := range members {
		v, ok := raw[m.name]
		if !ok {
			continue
		}
		if err := json.Unmarshal(v, m.dst); err != nil {
			return fmt.Errorf("%w: %s: member %q: %w", ErrBadPayload, what, m.name, err)
		}
	}
	return nil
}

// appendString appends s as a JSON string.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, `\u00`...)
			b = append(b, upperHex[c>>4], upperHex[c&15])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// ok replies, built without reflection on the heartbeat path.
func appendHeartbeatReply(b []byte, key string, timeout time.Duration) []byte {
	b = append(b, `{"ok":true,"key":`...)
	b = appendString(b, key)
	b = append(b, `,"idle_timeout_ms":`...)
	b = strconv.AppendInt(b, timeout.Milliseconds(), 10)
	return append(b, '}')
}

func errorReply(err error) []byte {
	b, _ := json.Marshal(ErrorReply{OK: false, Error: err.Error()})
	return b
}
