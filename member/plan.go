package member

import "slices"

// DefaultMaxMoves is the hand-over limit Plan uses when Input.MaxMoves is
// not positive: partitions in flight between two live members at a time.
const DefaultMaxMoves = 4

// Input is what Plan decides from: one member's picture of the moment. All
// slices are read, never kept or changed.
type Input struct {
	// Self is the name of the member that plans.
	Self string
	// Members are the live members that are not leaving (View.Live), Self
	// among them once it has joined and hears its own heartbeats.
	Members []string
	// Assigned is the preferred owner of each partition:
	// Assign(Members, partitions). Its length is the partition count.
	Assigned []string
	// Owners is, for each partition, the live member that reports owning
	// it, "" for none (no report, or the reporter is dead or leaving):
	// View.Owners. A missing element counts as "". Self's entries are
	// ignored: Owned is the truth about Self.
	Owners []string
	// Owned are the partitions Self owns now (its claims that the store
	// accepted and that it has not released or lost).
	Owned []int
	// Busy are the partitions for which Self has a claim or a release under
	// way. Plan never returns them, and they count as moves in flight.
	Busy []int
	// Leaving says Self is shutting down: it releases everything it owns
	// and claims nothing.
	Leaving bool
	// MaxMoves bounds the hand-overs in flight (DefaultMaxMoves when not
	// positive): Plan releases a partition to another live member only
	// while fewer than MaxMoves partitions are in flight, counting Busy and
	// every partition that has no owner and is assigned to a live member
	// other than Self.
	MaxMoves int
}

// Moves is what Plan asks Self to do now. Both lists are sorted.
type Moves struct {
	// Claim are partitions assigned to Self that no live member owns: their
	// owner died, left or released them. Claim them in the store at once
	// (there is no limit on claims: a dead member's partitions have no one
	// deciding for them).
	Claim []int
	// Release are partitions Self owns that are assigned to another live
	// member, at most as many as the hand-over limit allows; all it owns
	// when Leaving. Flush and release each in the store, then report the
	// smaller set (Membership.SetOwned) so that the new owner claims it.
	Release []int
}

// Plan returns the claims and releases that move Self's ownership towards
// in.Assigned. It does no I/O and reads no clock: call it again whenever the
// view, Owned or Busy changes.
//
// Hand-over rule: a partition that a live member owns is never claimed by
// another one. Its owner releases it when it is assigned to someone else,
// and the assignee claims it once the owner's heartbeat no longer lists it.
// A member that is not among in.Members (not joined, or it does not hear
// its own heartbeats) does nothing but, when Leaving, release.
//
// When all members see the same live members they compute the same
// assignment, so at most one of them claims a given partition. When their
// views differ (a heartbeat not yet heard, a death seen by one first), two
// may both claim it: the store's fenced compare-and-set claim lets one win,
// the other's claim fails and it waits for its view to settle. Plan only
// suggests; the store decides.
func Plan(in Input) Moves {
	var mv Moves
	busy := func(p int) bool { return slices.Contains(in.Busy, p) }
	if in.Leaving {
		for _, p := range sortedSet(in.Owned) {
			if !busy(p) {
				mv.Release = append(mv.Release, p)
			}
		}
		return mv
	}
	if !slices.Contains(in.Members, in.Self) {
		return mv
	}
	owned := make([]bool, len(in.Assigned))
	for _, p := range in.Owned {
		if p >= 0 && p < len(owned) {
			owned[p] = true
		}
	}
	live := func(name string) bool { return name != "" && slices.Contains(in.Members, name) }
	inFlight := 0
	for _, p := range in.Busy {
		if p >= 0 && p < len(owned) {
			inFlight++
		}
	}
	var release []int
	for p, assignee := range in.Assigned {
		if busy(p) {
			continue
		}
		owner := ""
		if p < len(in.Owners) && in.Owners[p] != in.Self && live(in.Owners[p]) {
			owner = in.Owners[p]
		}
		switch {
		case owned[p]:
			if assignee != in.Self && live(assignee) {
				release = append(release, p)
			}
		case owner != "":
			// Another live member owns p: only it may let p go.
		case assignee == in.Self:
			mv.Claim = append(mv.Claim, p)
		case live(assignee):
			inFlight++ // released, waiting for its assignee's claim
		}
	}
	limit := in.MaxMoves
	if limit <= 0 {
		limit = DefaultMaxMoves
	}
	if n := limit - inFlight; n > 0 {
		mv.Release = release[:min(n, len(release))]
	}
	return mv
}

// sortedSet returns the distinct elements of ps in increasing order, in a
// new slice.
func sortedSet(ps []int) []int {
	out := slices.Clone(ps)
	slices.Sort(out)
	return slices.Compact(out)
}
