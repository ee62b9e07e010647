package bus

import "fmt"

// DefaultPrefix is the subject prefix used when none is configured.
const DefaultPrefix = "idle"

// Header names used on the wire.
const (
	// HeaderMsgID carries a quiesce event's id, so JetStream can
	// de-duplicate re-sent events.
	HeaderMsgID = "Nats-Msg-Id"
)

// Subjects builds every subject of the wire contract under one prefix. It is
// the only place subject strings are made.
type Subjects struct {
	prefix   string
	activity string // "P.activity."
	state    string // "P.state."
	quiesce  string // "P.quiesce."
}

// NewSubjects returns the subjects under prefix, which must be one or more
// literal subject tokens (such as "idle" or "acme.idle"). An empty prefix
// means DefaultPrefix.
func NewSubjects(prefix string) (Subjects, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if err := validateTokens(prefix, MaxKeyTokens, false); err != nil {
		return Subjects{}, fmt.Errorf("subject prefix %q: %w", prefix, err)
	}
	return Subjects{
		prefix:   prefix,
		activity: prefix + ".activity.",
		state:    prefix + ".state.",
		quiesce:  prefix + ".quiesce.",
	}, nil
}

// MustSubjects is NewSubjects for prefixes known to be valid; it panics
// otherwise.
func MustSubjects(prefix string) Subjects {
	s, err := NewSubjects(prefix)
	if err != nil {
		panic(err)
	}
	return s
}

// Prefix returns the prefix P.
func (s Subjects) Prefix() string { return s.prefix }

// Activity returns P.activity.key, where backend key heartbeats.
func (s Subjects) Activity(key string) string { return s.activity + key }

// State returns P.state.key, where a broker reports key's state.
func (s Subjects) State(key string) string { return s.state + key }

// Quiesce returns P.quiesce.key, where the worker asks key to drain. Pass a
// pattern such as ">" to get a subscription subject.
func (s Subjects) Quiesce(key string) string { return s.quiesce + key }

// Store returns P.store.rest: the subjects of the worker's store (package
// store lays them out under it; pass ">" for all of them). Only workers may
// publish or subscribe there.
func (s Subjects) Store(rest string) string { return s.prefix + ".store." + rest }

// AdminList returns P.admin.list.
func (s Subjects) AdminList() string { return s.prefix + ".admin.list" }

// AdminQuiesce returns P.admin.quiesce.
func (s Subjects) AdminQuiesce() string { return s.prefix + ".admin.quiesce" }

// AdminForget returns P.admin.forget.
func (s Subjects) AdminForget() string { return s.prefix + ".admin.forget" }

// AdminGet returns P.admin.get.
func (s Subjects) AdminGet() string { return s.prefix + ".admin.get" }

// AdminMembers returns P.admin.members.
func (s Subjects) AdminMembers() string { return s.prefix + ".admin.members" }

// AdminGroup returns P.admin, the subject group of the admin service.
func (s Subjects) AdminGroup() string { return s.prefix + ".admin" }

// ActivityKey returns the key of an activity subject, and false when subject
// is not under P.activity. The key is a substring of subject: no copy.
func (s Subjects) ActivityKey(subject string) (string, bool) {
	return cutPrefix(subject, s.activity)
}

// StateKey returns the key of a state subject, and false when subject is not
// under P.state.
func (s Subjects) StateKey(subject string) (string, bool) {
	return cutPrefix(subject, s.state)
}

// QuiesceKey returns the key of a quiesce subject, and false when subject is
// not under P.quiesce.
func (s Subjects) QuiesceKey(subject string) (string, bool) {
	return cutPrefix(subject, s.quiesce)
}

func cutPrefix(subject, prefix string) (string, bool) {
	if len(subject) < len(prefix) || subject[:len(prefix)] != prefix {
		return "", false
	}
	return subject[len(prefix):], true
}
