package partition

import (
	"strconv"
	"strings"

	"github.com/idle-worker/idle-worker/bus"
)

// Verb names the messages the mappings route: heartbeats or state reports.
type Verb string

// The verbs, as they appear in subjects.
const (
	// Activity is a backend's heartbeat, published on P.activity.K.
	Activity Verb = "activity"
	// State is a broker's state report, published on P.state.K.
	State Verb = "state"
)

// verbs lists the verbs in the order Mappings returns their mappings.
func verbs() [2]Verb { return [2]Verb{Activity, State} }

// space is the token after the prefix under which the mappings deliver:
// P.p.<verb>.<partition>.<key>.
const space = "p"

// Subject returns P.p.<v>.<p>.<key>, where the mappings deliver the messages
// of verb v (Activity or State) for key when p is Of(key, n). With key ">"
// it is the subscription subject of partition p's messages of v.
func Subject(s bus.Subjects, v Verb, p int, key string) string {
	return s.Prefix() + "." + space + "." + string(v) + "." + strconv.Itoa(p) + "." + key
}

// ParseSubject takes apart a subject that Subject builds: its verb, its
// partition (decimal, below MaxPartitions) and the key, a substring of
// subject. ok is false for any other subject. It checks neither the key
// nor that p is its partition: a client may publish on P.p.… directly, so
// a receiver that relies on the partition compares it with Of. It does not
// allocate.
func ParseSubject(s bus.Subjects, subject string) (v Verb, p int, key string, ok bool) {
	rest, found := strings.CutPrefix(subject, s.Prefix())
	if !found {
		return "", 0, "", false
	}
	if rest, found = strings.CutPrefix(rest, "."+space+"."); !found {
		return "", 0, "", false
	}
	for _, verb := range verbs() {
		if r, found := strings.CutPrefix(rest, string(verb)); found && strings.HasPrefix(r, ".") {
			v, rest = verb, r[1:]
			break
		}
	}
	if v == "" {
		return "", 0, "", false
	}
	num, key, found := strings.Cut(rest, ".")
	if !found || key == "" {
		return "", 0, "", false
	}
	if p, ok = parseIndex(num); !ok {
		return "", 0, "", false
	}
	return v, p, key, true
}

// maxDigits is the length of the longest partition number below
// MaxPartitions.
const maxDigits = 4

// parseIndex parses a partition number as strconv.Itoa writes it, below
// MaxPartitions.
func parseIndex(s string) (int, bool) {
	if s == "" || len(s) > 1 && s[0] == '0' || len(s) > maxDigits {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, n < MaxPartitions
}
