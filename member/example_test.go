package member_test

import (
	"fmt"

	"github.com/idle-worker/idle-worker/member"
)

// Three workers share 64 partitions; a fourth joins and takes partitions
// only from the others, about a quarter of the partitions.
func ExampleAssign() {
	three := member.Assign([]string{"w1", "w2", "w3"}, 64)
	four := member.Assign([]string{"w1", "w2", "w3", "w4"}, 64)
	moved := 0
	for p := range four {
		if four[p] != three[p] {
			moved++
		}
	}
	fmt.Println("w1, w2, w3:", countOwners(three)["w1"], countOwners(three)["w2"], countOwners(three)["w3"])
	fmt.Println("moved to w4:", moved, "=", countOwners(four)["w4"])
	// Output:
	// w1, w2, w3: 24 22 18
	// moved to w4: 13 = 13
}

// Worker b has joined; a owns all six partitions and hands b its three a
// few at a time (here two), while b waits for them.
func ExamplePlan() {
	assigned := []string{"a", "b", "a", "b", "b", "a"}
	owners := []string{"a", "a", "a", "a", "a", "a"}
	live := []string{"a", "b"}
	a := member.Plan(member.Input{Self: "a", Members: live, Assigned: assigned, Owners: owners,
		Owned: []int{0, 1, 2, 3, 4, 5}, MaxMoves: 2})
	b := member.Plan(member.Input{Self: "b", Members: live, Assigned: assigned, Owners: owners})
	fmt.Printf("a: claim %v release %v\n", a.Claim, a.Release)
	fmt.Printf("b: claim %v release %v\n", b.Claim, b.Release)
	// a has released 1 and 3; its next heartbeat no longer lists them.
	owners[1], owners[3] = "", ""
	b = member.Plan(member.Input{Self: "b", Members: live, Assigned: assigned, Owners: owners})
	fmt.Printf("b: claim %v\n", b.Claim)
	// Output:
	// a: claim [] release [1 3]
	// b: claim [] release []
	// b: claim [1 3]
}
