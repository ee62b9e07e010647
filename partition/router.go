package partition

import "github.com/idle-worker/idle-worker/bus"

// NewRouter returns the bus.Router of the mappings of prefix s (the block
// Mappings returns): the owner of partition p subscribes to
// Subject(s, Activity, p, ">") and Subject(s, State, p, ">"), and receives
// nothing of the other partitions.
func NewRouter(s bus.Subjects) bus.Router { return router{s} }

type router struct{ s bus.Subjects }

// Subjects implements bus.Router.
func (r router) Subjects(p int) []string {
	return []string{Subject(r.s, Activity, p, ">"), Subject(r.s, State, p, ">")}
}

// Parse implements bus.Router.
func (r router) Parse(subject string) (activity bool, key string, ok bool) {
	v, _, key, ok := ParseSubject(r.s, subject)
	return v == Activity, key, ok
}
