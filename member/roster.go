package member

import (
	"maps"
	"slices"
	"time"
)

// roster is the table of members one Membership hears, and the rules that
// judge them. It does no I/O and reads no clock: every method that depends
// on time takes now, which the Membership reads from the monotonic clock.
// It is not safe for concurrent use.
//
// Rules:
//   - a member is live from its first heartbeat until it has not been heard
//     for timeout; a heartbeat from a new instance of a known name replaces
//     the old instance (a restart);
//   - a leaving heartbeat marks the member leaving at once, and it stays
//     listed, flagged, until its timeout; heartbeats that its instance
//     sends after that are stale and ignored;
//   - once joined, self is judged by its own heartbeats like any member;
//     while self is not heard, no other member is judged dead: a worker cut
//     off from NATS (or frozen) cannot tell who else is alive, and Plan
//     does nothing for a member that does not see itself;
//   - a heartbeat with self's name and another instance is a name clash,
//     reported and otherwise ignored.
type roster struct {
	self     string
	instance string
	timeout  time.Duration
	joined   bool
	members  map[string]*entry
}

// entry is one member's last heartbeat and when it arrived.
type entry struct {
	instance   string
	partitions []int // sorted
	leaving    bool
	last       time.Time
}

// observation is what a heartbeat did to the roster.
type observation int

const (
	obsNone      observation = iota // a live member's heartbeat, nothing new
	obsUpdated                      // a member reports other partitions
	obsJoined                       // a name not listed before
	obsRestarted                    // a new instance of a listed name
	obsLeft                         // a member announced that it is leaving
	obsClash                        // self's name, another instance
	obsStale                        // an instance that left, heard again; or self before joining
)

// changed reports whether the observation changed the view.
func (o observation) changed() bool {
	return o == obsUpdated || o == obsJoined || o == obsRestarted || o == obsLeft
}

// event names the observation in a log line.
func (o observation) event() string {
	switch o {
	case obsJoined:
		return "member joined"
	case obsRestarted:
		return "member restarted"
	case obsLeft:
		return "member leaving"
	case obsUpdated:
		return "member partitions changed"
	}
	return "member heard"
}

func newRoster(self, instance string, timeout time.Duration) *roster {
	return &roster{self: self, instance: instance, timeout: timeout, members: make(map[string]*entry)}
}

// join starts judging self: it is live as of now.
func (r *roster) join(now time.Time) {
	r.joined = true
	r.members[r.self] = &entry{instance: r.instance, last: now}
}

// observe applies heartbeat h, received at now.
func (r *roster) observe(h heartbeat, now time.Time) observation {
	if h.Name == r.self {
		if h.Instance != r.instance {
			return obsClash
		}
		if !r.joined {
			return obsStale
		}
	}
	e := r.members[h.Name]
	switch {
	case e == nil:
		r.members[h.Name] = &entry{instance: h.Instance, partitions: h.Partitions, leaving: h.Leaving, last: now}
		if h.Leaving {
			return obsLeft
		}
		return obsJoined
	case e.instance != h.Instance:
		*e = entry{instance: h.Instance, partitions: h.Partitions, leaving: h.Leaving, last: now}
		if h.Leaving {
			return obsLeft
		}
		return obsRestarted
	case e.leaving && !h.Leaving:
		return obsStale
	}
	e.last = now
	switch {
	case h.Leaving && !e.leaving:
		e.leaving, e.partitions = true, h.Partitions
		return obsLeft
	case !slices.Equal(e.partitions, h.Partitions):
		e.partitions = h.Partitions
		return obsUpdated
	}
	return obsNone
}

// expire removes the members not heard for the timeout as of now (only
// self while self is not heard) and returns their names, sorted.
func (r *roster) expire(now time.Time) []string {
	if r.joined {
		if s := r.members[r.self]; s == nil || r.dead(s, now) {
			if s != nil {
				delete(r.members, r.self)
				return []string{r.self}
			}
			return nil
		}
	}
	var gone []string
	for name, e := range r.members {
		if r.dead(e, now) {
			delete(r.members, name)
			gone = append(gone, name)
		}
	}
	slices.Sort(gone)
	return gone
}

func (r *roster) dead(e *entry, now time.Time) bool {
	return now.Sub(e.last) >= r.timeout
}

// next returns when expire may next remove a member, and false when it
// will not without a heartbeat first.
func (r *roster) next() (time.Time, bool) {
	if r.joined {
		if s := r.members[r.self]; s == nil {
			return time.Time{}, false
		}
	}
	var first time.Time
	found := false
	for _, e := range r.members {
		if !found || e.last.Before(first) {
			first, found = e.last, true
		}
	}
	if !found {
		return time.Time{}, false
	}
	return first.Add(r.timeout), true
}

// view returns the roster as a View of the given partition count.
func (r *roster) view(partitions int) View {
	v := View{Self: r.self, Partitions: partitions, Members: make([]Member, 0, len(r.members))}
	for _, name := range slices.Sorted(maps.Keys(r.members)) {
		e := r.members[name]
		v.Members = append(v.Members, Member{
			Name: name, Instance: e.instance, Partitions: slices.Clone(e.partitions), Leaving: e.leaving,
		})
	}
	return v
}

// yields reports whether an instance that has run for mine gives way to
// another instance of its name whose heartbeat says it has run for theirs:
// the younger one yields. Ages that differ by no more than margin (a
// heartbeat's age is a little old when it arrives) are ordered by instance
// id instead, the larger id yielding, so that of two instances started
// together exactly one yields (as long as their measurements of each
// other differ by less than margin).
func yields(mine, theirs time.Duration, myInstance, theirInstance string, margin time.Duration) bool {
	switch d := theirs - mine; {
	case d > margin:
		return true
	case d < -margin:
		return false
	}
	return myInstance > theirInstance
}
