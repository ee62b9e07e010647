package member

import (
	"slices"
	"strings"
)

// View is a snapshot of the membership as one member sees it. It shares no
// memory with the Membership that made it.
type View struct {
	// Self is the name of the member whose view this is.
	Self string
	// Partitions is the partition count of the prefix.
	Partitions int
	// Members are the members heard from within the timeout, sorted by
	// name, leaving ones included (flagged) until their timeout runs out.
	// Self is among them while it hears its own heartbeats.
	Members []Member
}

// Member is one member as its last heartbeat described it.
type Member struct {
	// Name is the worker's name (IDLE_WORKER_NAME).
	Name string
	// Instance is the random id of the worker's process start: a restart
	// under the same name has a new one.
	Instance string
	// Partitions are the partitions it reports owning, sorted.
	Partitions []int
	// Leaving says it announced that it is shutting down: it is gone for
	// the assignment, and its partitions are free to claim.
	Leaving bool
}

// Live returns the names of the members that are not leaving, sorted: the
// members to Assign partitions to, Input.Members.
func (v View) Live() []string {
	var names []string
	for _, m := range v.Members {
		if !m.Leaving {
			names = append(names, m.Name)
		}
	}
	return names
}

// Owners returns, for each of v.Partitions partitions, the member that
// reports owning it, "" when no member that is not leaving does (leaving
// members own nothing). When several report one partition (an owner that
// lost it and has not noticed yet, or a view that is behind), another
// member wins over Self, and among others the smaller name: whoever it is,
// Plan leaves the partition alone while a live member reports it.
func (v View) Owners() []string {
	owners := make([]string, max(v.Partitions, 0))
	for _, m := range v.Members { // sorted: the first reporter has the smallest name
		if m.Leaving {
			continue
		}
		for _, p := range m.Partitions {
			if p < 0 || p >= len(owners) {
				continue
			}
			if owners[p] == "" || owners[p] == v.Self && m.Name != v.Self {
				owners[p] = m.Name
			}
		}
	}
	return owners
}

// Member returns the member named name and whether v has it.
func (v View) Member(name string) (Member, bool) {
	i, ok := slices.BinarySearchFunc(v.Members, name, func(m Member, name string) int {
		return strings.Compare(m.Name, name)
	})
	if !ok {
		return Member{}, false
	}
	return v.Members[i], true
}
