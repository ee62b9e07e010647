package member_test

import (
	"slices"
	"testing"

	"github.com/idle-worker/idle-worker/member"
)

func TestPlan(t *testing.T) {
	tests := []struct {
		name string
		in   member.Input
		want member.Moves
	}{
		{
			name: "single member claims all",
			in: member.Input{Self: "a", Members: []string{"a"}, Assigned: []string{"a", "a", "a", "a"},
				Owners: []string{"", "", "", ""}},
			want: member.Moves{Claim: []int{0, 1, 2, 3}},
		},
		{
			name: "single member owns all: nothing to do",
			in: member.Input{Self: "a", Members: []string{"a"}, Assigned: []string{"a", "a", "a"},
				Owners: []string{"a", "a", "a"}, Owned: []int{0, 1, 2}},
			want: member.Moves{},
		},
		{
			name: "claims not limited by MaxMoves",
			in: member.Input{Self: "a", Members: []string{"a"}, Assigned: []string{"a", "a", "a", "a", "a"},
				Owned: []int{}, MaxMoves: 1},
			want: member.Moves{Claim: []int{0, 1, 2, 3, 4}},
		},
		{
			name: "join: the owner releases a few at a time",
			in: member.Input{Self: "a", Members: []string{"a", "b"}, Assigned: []string{"a", "b", "a", "b", "b", "a"},
				Owners: []string{"a", "a", "a", "a", "a", "a"}, Owned: []int{0, 1, 2, 3, 4, 5}, MaxMoves: 2},
			want: member.Moves{Release: []int{1, 3}},
		},
		{
			name: "join: a released partition not yet claimed is in flight",
			in: member.Input{Self: "a", Members: []string{"a", "b"}, Assigned: []string{"a", "b", "a", "b", "b", "a"},
				Owners: []string{"a", "", "a", "a", "a", "a"}, Owned: []int{0, 2, 3, 4, 5}, MaxMoves: 2},
			want: member.Moves{Release: []int{3}},
		},
		{
			name: "join: my own report lagging counts as released",
			in: member.Input{Self: "a", Members: []string{"a", "b"}, Assigned: []string{"a", "b", "a", "b", "b", "a"},
				Owners: []string{"a", "a", "a", "a", "a", "a"}, Owned: []int{0, 2, 3, 4, 5}, MaxMoves: 2},
			want: member.Moves{Release: []int{3}},
		},
		{
			name: "join: a release under way counts as in flight",
			in: member.Input{Self: "a", Members: []string{"a", "b"}, Assigned: []string{"a", "b", "a", "b", "b", "a"},
				Owners: []string{"a", "a", "a", "a", "a", "a"}, Owned: []int{0, 1, 2, 3, 4, 5}, Busy: []int{1}, MaxMoves: 2},
			want: member.Moves{Release: []int{3}},
		},
		{
			name: "join: no release while the limit is in flight",
			in: member.Input{Self: "a", Members: []string{"a", "b"}, Assigned: []string{"a", "b", "a", "b", "b", "a"},
				Owners: []string{"a", "", "a", "", "a", "a"}, Owned: []int{0, 2, 4, 5}, MaxMoves: 2},
			want: member.Moves{},
		},
		{
			name: "join: the newcomer waits while a live member owns its partitions",
			in: member.Input{Self: "b", Members: []string{"a", "b"}, Assigned: []string{"a", "b", "a", "b", "b", "a"},
				Owners: []string{"a", "a", "a", "a", "a", "a"}},
			want: member.Moves{},
		},
		{
			name: "join: the newcomer claims what was released to it",
			in: member.Input{Self: "b", Members: []string{"a", "b"}, Assigned: []string{"a", "b", "a", "b", "b", "a"},
				Owners: []string{"a", "", "a", "", "a", "a"}},
			want: member.Moves{Claim: []int{1, 3}},
		},
		{
			name: "MaxMoves zero means DefaultMaxMoves",
			in: member.Input{Self: "a", Members: []string{"a", "b"}, Assigned: []string{"b", "b", "b", "b", "b", "b"},
				Owners: []string{"a", "a", "a", "a", "a", "a"}, Owned: []int{0, 1, 2, 3, 4, 5}},
			want: member.Moves{Release: []int{0, 1, 2, 3}},
		},
		{
			name: "death: the dead member's partitions are claimed at once",
			in: member.Input{Self: "a", Members: []string{"a", "b"}, Assigned: []string{"a", "a", "b", "a", "a", "b"},
				// c died: its partitions 1, 3, 4 are reported by no live member.
				Owners: []string{"a", "", "b", "", "", "b"}, Owned: []int{0}, MaxMoves: 1},
			want: member.Moves{Claim: []int{1, 3, 4}},
		},
		{
			name: "death: an owner that is not a live member owns nothing",
			in: member.Input{Self: "a", Members: []string{"a", "b"}, Assigned: []string{"a", "a", "b"},
				Owners: []string{"a", "c", "c"}, Owned: []int{0}},
			want: member.Moves{Claim: []int{1}},
		},
		{
			name: "death: partitions of the dead assigned to others are theirs to claim",
			in: member.Input{Self: "b", Members: []string{"a", "b"}, Assigned: []string{"a", "a", "b", "a", "a", "b"},
				Owners: []string{"a", "", "b", "", "", "b"}, Owned: []int{2, 5}},
			want: member.Moves{},
		},
		{
			name: "leaving: I release everything at once and claim nothing",
			in: member.Input{Self: "a", Members: []string{"a", "b"}, Assigned: []string{"a", "a", "b", "a", "a"},
				Owners: []string{"a", "a", "b", "a", ""}, Owned: []int{3, 0, 1}, Leaving: true, MaxMoves: 1},
			want: member.Moves{Release: []int{0, 1, 3}},
		},
		{
			name: "leaving: releases under way are not repeated",
			in: member.Input{Self: "a", Members: []string{"b"}, Assigned: []string{"b", "b", "b"},
				Owned: []int{0, 1, 2}, Busy: []int{1}, Leaving: true},
			want: member.Moves{Release: []int{0, 2}},
		},
		{
			name: "another member left: its partitions are claimed at once",
			// View.Owners lists nothing for a leaving member, and View.Live
			// leaves it out: to the planner it is gone, as if dead.
			in: member.Input{Self: "b", Members: []string{"a", "b"}, Assigned: []string{"b", "a", "b", "b"},
				Owners: []string{"", "a", "", ""}, MaxMoves: 1},
			want: member.Moves{Claim: []int{0, 2, 3}},
		},
		{
			name: "not a member (not joined, or cut off): nothing",
			in: member.Input{Self: "a", Members: []string{"b"}, Assigned: []string{"b", "b"},
				Owners: []string{"", ""}, Owned: []int{0}},
			want: member.Moves{},
		},
		{
			name: "no members at all: nothing",
			in:   member.Input{Self: "a", Assigned: []string{"", ""}, Owners: []string{"", ""}, Owned: []int{1}},
			want: member.Moves{},
		},
		{
			name: "my name in Owners without Owned: lost or released, claim again",
			in: member.Input{Self: "a", Members: []string{"a", "b"}, Assigned: []string{"a", "b"},
				Owners: []string{"a", "b"}, Owned: nil},
			want: member.Moves{Claim: []int{0}},
		},
		{
			name: "owned and assigned to me: kept even if another reports it",
			in: member.Input{Self: "a", Members: []string{"a", "b"}, Assigned: []string{"a", "b"},
				Owners: []string{"b", "b"}, Owned: []int{0}},
			want: member.Moves{},
		},
		{
			name: "busy claim not repeated",
			in: member.Input{Self: "a", Members: []string{"a"}, Assigned: []string{"a", "a", "a"},
				Owners: []string{"", "", ""}, Busy: []int{1}},
			want: member.Moves{Claim: []int{0, 2}},
		},
		{
			name: "short Owners: missing elements are no owner",
			in:   member.Input{Self: "a", Members: []string{"a"}, Assigned: []string{"a", "a", "a"}, Owners: []string{"a"}},
			want: member.Moves{Claim: []int{0, 1, 2}},
		},
		{
			name: "owned partitions out of range are ignored",
			in: member.Input{Self: "a", Members: []string{"a"}, Assigned: []string{"a"},
				Owners: []string{"a"}, Owned: []int{0, 5, -1}, Busy: []int{7}},
			want: member.Moves{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := member.Plan(tt.in)
			if !slices.Equal(got.Claim, tt.want.Claim) || !slices.Equal(got.Release, tt.want.Release) {
				t.Errorf("Plan = claim %v release %v; want claim %v release %v", got.Claim, got.Release, tt.want.Claim, tt.want.Release)
			}
		})
	}
}

// TestPlanSameView: members that see the same view never claim the same
// partition, and none claims one a live member reports.
func TestPlanSameView(t *testing.T) {
	members := []string{"w1", "w2", "w3", "w4"}
	assigned := member.Assign(members, 64)
	owners := make([]string, 64)
	for p := range owners {
		switch p % 4 {
		case 0:
			owners[p] = "" // released or dead
		case 1:
			owners[p] = members[(p/4)%4] // a live member, perhaps not the assignee
		default:
			owners[p] = assigned[p]
		}
	}
	claimedBy := map[int]string{}
	for _, self := range members {
		var owned []int
		for p, o := range owners {
			if o == self {
				owned = append(owned, p)
			}
		}
		mv := member.Plan(member.Input{Self: self, Members: members, Assigned: assigned, Owners: owners, Owned: owned})
		for _, p := range mv.Claim {
			if prev, ok := claimedBy[p]; ok {
				t.Errorf("partition %d claimed by %s and %s", p, prev, self)
			}
			claimedBy[p] = self
			if owners[p] != "" {
				t.Errorf("%s claims partition %d, which live %s owns", self, p, owners[p])
			}
		}
	}
	if len(claimedBy) != 16 {
		t.Errorf("%d partitions claimed; want the 16 with no owner", len(claimedBy))
	}
}

// TestPlanViewsDiffer shows what the package doc says: when two members
// see different members, both may claim one partition; the store's
// compare-and-set claim lets one win, and once the views agree the winner
// hands the partition over if it is not its own.
func TestPlanViewsDiffer(t *testing.T) {
	// b has just joined and hears a, b and c; a has not heard b yet.
	// Nothing is owned (all three just started).
	aView, bView := []string{"a", "c"}, []string{"a", "b", "c"}
	aAssigned, bAssigned := member.Assign(aView, 64), member.Assign(bView, 64)
	free := make([]string, 64)
	aClaims := member.Plan(member.Input{Self: "a", Members: aView, Assigned: aAssigned, Owners: free}).Claim
	bClaims := member.Plan(member.Input{Self: "b", Members: bView, Assigned: bAssigned, Owners: free}).Claim
	var both, want []int
	for p := range 64 {
		if slices.Contains(aClaims, p) && slices.Contains(bClaims, p) {
			both = append(both, p)
		}
		if aAssigned[p] == "a" && bAssigned[p] == "b" {
			want = append(want, p) // b wins p, a was second: only b's arrival moves it
		}
	}
	if len(want) == 0 {
		t.Fatal("no partition where b comes first and a second; pick other names")
	}
	if !slices.Equal(both, want) {
		t.Fatalf("claimed by both: %v; want %v", both, want)
	}
	// The store lets a's claims win. When a hears b, it releases them to b
	// (a few at a time), and b, which sees a own them, waits.
	owners := make([]string, 64)
	for _, p := range aClaims {
		owners[p] = "a"
	}
	var aOwned []int
	for p, o := range owners {
		if o == "a" {
			aOwned = append(aOwned, p)
		}
	}
	rel := member.Plan(member.Input{Self: "a", Members: bView, Assigned: bAssigned, Owners: owners, Owned: aOwned, MaxMoves: 64}).Release
	if !slices.Equal(rel, want) {
		t.Errorf("a releases %v; want %v", rel, want)
	}
	for _, p := range member.Plan(member.Input{Self: "b", Members: bView, Assigned: bAssigned, Owners: owners}).Claim {
		if owners[p] != "" {
			t.Errorf("b claims partition %d, which a owns", p)
		}
	}
}
