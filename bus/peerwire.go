package bus

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
)

// The peer protocol's messages. A worker that receives an admin request
// asks the other members for their part on P.store.peer.<verb>, with the
// admin request's body as it came and the header hdrPeerFrom naming
// itself; each member answers for the partitions it owns with a
// peerAnswer, and the asking worker merges the answers with its own
// (mergeList, mergeGet, sumCounts). The answers come over NATS from other
// processes: parsePeerAnswer checks every one as hostile input.

// Peer verbs: the last token of P.store.peer.<verb>, one per admin
// endpoint that answers for the whole prefix.
const (
	peerList    = "list"
	peerGet     = "get"
	peerQuiesce = "quiesce"
	peerForget  = "forget"
)

// peerVerbs are the verbs a worker serves.
var peerVerbs = []string{peerList, peerGet, peerQuiesce, peerForget}

// hdrPeerFrom names the member that sent a peer request: a worker ignores
// its own.
const hdrPeerFrom = "Idle-Peer-From"

// maxMemberName bounds a member's name in a peer answer, in bytes.
const maxMemberName = 255

// peerAnswer is one member's answer to a peer request: what it holds of
// the request's backends, and which partitions it answered for.
type peerAnswer struct {
	// Name is the answering member's name.
	Name string `json:"name"`
	// Error, when not empty, says why the member could not answer (it is
	// shutting down); the other members are then empty.
	Error string `json:"error,omitempty"`
	// Partitions are the partitions the member owned when it answered,
	// ascending.
	Partitions []int `json:"partitions"`
	// Count is, for list, the matching backends; get, 1 when found, else
	// 0; quiesce, the backends drained; forget, the backends forgotten.
	Count int `json:"count"`
	// Backends are, for list, the first backends in key order (at most the
	// request's limit) and, for get, the backend when found.
	Backends []BackendInfo `json:"backends,omitempty"`
	// Unacknowledged is, for list, the member's unacknowledged drains.
	Unacknowledged int `json:"unacknowledged,omitempty"`
}

// peerQuery is what a worker asked, against which answers are checked.
type peerQuery struct {
	verb       string
	partitions int     // partition count of the prefix
	limit      int     // list: the request's limit
	pat        Pattern // list: the request's match
	key        string  // get: the requested key
}

// parsePeerAnswer decodes and checks a peer answer to q. Errors wrap
// ErrBadPayload.
func parsePeerAnswer(body []byte, q peerQuery) (peerAnswer, error) {
	var a peerAnswer
	err := decodeObject(body, "peer answer",
		member{"name", &a.Name}, member{"error", &a.Error}, member{"partitions", &a.Partitions},
		member{"count", &a.Count}, member{"backends", &a.Backends}, member{"unacknowledged", &a.Unacknowledged})
	if err != nil {
		return peerAnswer{}, err
	}
	if err := checkMemberName(a.Name); err != nil {
		return peerAnswer{}, err
	}
	if a.Error != "" {
		return peerAnswer{Name: a.Name, Error: a.Error}, nil
	}
	if err := checkPartitions(a.Partitions, q.partitions); err != nil {
		return peerAnswer{}, err
	}
	if a.Count < 0 || a.Unacknowledged < 0 {
		return peerAnswer{}, fmt.Errorf("%w: peer answer has negative counts", ErrBadPayload)
	}
	for _, b := range a.Backends {
		if err := checkBackendInfo(b); err != nil {
			return peerAnswer{}, err
		}
	}
	switch q.verb {
	case peerList:
		if len(a.Backends) > q.limit || len(a.Backends) > a.Count {
			return peerAnswer{}, fmt.Errorf("%w: peer list answer has %d backends for a limit of %d and a total of %d",
				ErrBadPayload, len(a.Backends), q.limit, a.Count)
		}
		for _, b := range a.Backends {
			if !q.pat.Match(b.Key) {
				return peerAnswer{}, fmt.Errorf("%w: peer list answer has %q, which does not match %q", ErrBadPayload, b.Key, q.pat.String())
			}
		}
	case peerGet:
		if a.Count != len(a.Backends) || a.Count > 1 || (a.Count == 1 && a.Backends[0].Key != q.key) {
			return peerAnswer{}, fmt.Errorf("%w: peer get answer is not the one backend %q or none", ErrBadPayload, q.key)
		}
	default:
		if len(a.Backends) > 0 || a.Unacknowledged > 0 {
			return peerAnswer{}, fmt.Errorf("%w: peer %s answer carries backends", ErrBadPayload, q.verb)
		}
	}
	return a, nil
}

// checkMemberName checks a member's name: 1 to maxMemberName bytes of
// printable ASCII. Errors wrap ErrBadPayload.
func checkMemberName(name string) error {
	if name == "" || len(name) > maxMemberName {
		return fmt.Errorf("%w: member name of %d bytes (want 1 to %d)", ErrBadPayload, len(name), maxMemberName)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x21 || c > 0x7e {
			return fmt.Errorf("%w: member name has byte 0x%02x, not printable ASCII", ErrBadPayload, c)
		}
	}
	return nil
}

// checkPartitions checks that parts ascend strictly within [0, n).
func checkPartitions(parts []int, n int) error {
	for i, p := range parts {
		if p < 0 || p >= n || (i > 0 && p <= parts[i-1]) {
			return fmt.Errorf("%w: peer answer partitions %v do not ascend within 0..%d", ErrBadPayload, parts, n-1)
		}
	}
	return nil
}

// checkBackendInfo checks one backend of a peer answer.
func checkBackendInfo(b BackendInfo) error {
	if err := ValidateKey(b.Key); err != nil {
		return fmt.Errorf("%w: peer answer backend: %w", ErrBadPayload, err)
	}
	switch b.State {
	case "running", "draining", "quiesced":
	default:
		return fmt.Errorf("%w: peer answer backend %q has state %q", ErrBadPayload, b.Key, b.State)
	}
	if b.IdleForMS < 0 || b.IdleTimeoutMS < 0 || b.Attempts < 0 {
		return fmt.Errorf("%w: peer answer backend %q has negative numbers", ErrBadPayload, b.Key)
	}
	return nil
}

// encodePeerAnswer encodes a; it cannot fail.
func encodePeerAnswer(a peerAnswer) []byte {
	if a.Partitions == nil {
		a.Partitions = []int{}
	}
	b, err := json.Marshal(a)
	if err != nil {
		panic(fmt.Sprintf("bus: encoding a peer answer: %v", err)) // ints, strings and slices of them
	}
	return b
}

// mergeList merges the list answers of the members (this worker's
// included): the backends in key order, each key once (a key two members
// hold, during a hand-over, is listed and counted once), the first limit
// of them; the totals and unacknowledged drains summed.
func mergeList(limit int, answers []peerAnswer) ListReply {
	reply := ListReply{OK: true, Backends: []BackendInfo{}}
	for _, a := range answers {
		reply.Backends = append(reply.Backends, a.Backends...)
		reply.Total += a.Count
		reply.Unacknowledged += a.Unacknowledged
	}
	slices.SortStableFunc(reply.Backends, func(x, y BackendInfo) int { return cmp.Compare(x.Key, y.Key) })
	n := len(reply.Backends)
	reply.Backends = slices.CompactFunc(reply.Backends, func(x, y BackendInfo) bool { return x.Key == y.Key })
	reply.Total -= n - len(reply.Backends) // counted by both holders
	if len(reply.Backends) > limit {
		reply.Backends = reply.Backends[:limit]
	}
	reply.Truncated = reply.Total > len(reply.Backends)
	return reply
}

// sumCounts sums the answers' counts.
func sumCounts(answers []peerAnswer) int {
	n := 0
	for _, a := range answers {
		n += a.Count
	}
	return n
}

// found returns the backend an answer to a get found, if any did.
func found(answers []peerAnswer) (BackendInfo, bool) {
	for _, a := range answers {
		if a.Count == 1 && len(a.Backends) == 1 {
			return a.Backends[0], true
		}
	}
	return BackendInfo{}, false
}

// uncovered returns the partitions among n that no answer covers,
// ascending.
func uncovered(n int, answers []peerAnswer) []int {
	covered := make([]bool, n)
	for _, a := range answers {
		for _, p := range a.Partitions {
			if p >= 0 && p < n {
				covered[p] = true
			}
		}
	}
	var missing []int
	for p, c := range covered {
		if !c {
			missing = append(missing, p)
		}
	}
	return missing
}
