package member_test

import (
	"fmt"
	"slices"
	"testing"

	"pgregory.net/rapid"

	"github.com/idle-worker/idle-worker/member"
)

func TestAssign(t *testing.T) {
	tests := []struct {
		name       string
		members    []string
		partitions int
		check      func(t *testing.T, got []string)
	}{
		{name: "no members", members: nil, partitions: 4, check: func(t *testing.T, got []string) {
			if want := []string{"", "", "", ""}; !slices.Equal(got, want) {
				t.Errorf("got %q; want %q", got, want)
			}
		}},
		{name: "no partitions", members: []string{"a"}, partitions: 0, check: func(t *testing.T, got []string) {
			if len(got) != 0 {
				t.Errorf("got %q; want none", got)
			}
		}},
		{name: "negative partitions", members: []string{"a"}, partitions: -1, check: func(t *testing.T, got []string) {
			if len(got) != 0 {
				t.Errorf("got %q; want none", got)
			}
		}},
		{name: "one member owns all", members: []string{"solo"}, partitions: 64, check: func(t *testing.T, got []string) {
			for p, o := range got {
				if o != "solo" {
					t.Fatalf("partition %d assigned to %q; want solo", p, o)
				}
			}
		}},
		{name: "order does not matter", members: []string{"c", "a", "b"}, partitions: 64, check: func(t *testing.T, got []string) {
			if want := member.Assign([]string{"a", "b", "c"}, 64); !slices.Equal(got, want) {
				t.Errorf("Assign(c,a,b) = %q; Assign(a,b,c) = %q", got, want)
			}
		}},
		{name: "duplicates do not matter", members: []string{"a", "b", "a", "c", "b"}, partitions: 64, check: func(t *testing.T, got []string) {
			if want := member.Assign([]string{"a", "b", "c"}, 64); !slices.Equal(got, want) {
				t.Errorf("with duplicates %q; without %q", got, want)
			}
		}},
		{name: "three members all used", members: []string{"w1", "w2", "w3"}, partitions: 64, check: func(t *testing.T, got []string) {
			counts := countOwners(got)
			for _, m := range []string{"w1", "w2", "w3"} {
				if counts[m] < 12 || counts[m] > 30 {
					t.Errorf("%s has %d partitions; want 12..30 (counts %v)", m, counts[m], counts)
				}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.check(t, member.Assign(tt.members, tt.partitions))
		})
	}
}

// nameGen draws sane worker names.
var nameGen = rapid.StringMatching(`[A-Za-z0-9._-]{1,64}`)

func namesGen(minLen, maxLen int) *rapid.Generator[[]string] {
	return rapid.SliceOfNDistinct(nameGen, minLen, maxLen, func(s string) string { return s })
}

// TestAssignProperties: every partition goes to a member, whatever the
// order of the members.
func TestAssignProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		names := namesGen(1, 8).Draw(t, "names")
		n := rapid.IntRange(1, 256).Draw(t, "partitions")
		got := member.Assign(names, n)
		if len(got) != n {
			t.Fatalf("%d owners for %d partitions", len(got), n)
		}
		for p, o := range got {
			if !slices.Contains(names, o) {
				t.Fatalf("partition %d assigned to %q, not a member of %q", p, o, names)
			}
		}
		shuffled := rapid.Permutation(names).Draw(t, "shuffled")
		if again := member.Assign(shuffled, n); !slices.Equal(got, again) {
			t.Fatalf("Assign(%q) = %q; Assign(%q) = %q", names, got, shuffled, again)
		}
	})
}

// TestAssignBalanceBound: three members share 64 partitions, each 4..42.
// For an ideal hash each member's count is Binomial(64, 1/3) (mean 21.3,
// standard deviation 3.8); P(count < 4 or > 42) = 6.4e-8, so a run of 100
// name sets (300 counts) fails with probability under 2e-5. The tighter
// 12..30 holds for 96% of name sets: TestAssignBalanceStatistics tests it
// over many.
func TestAssignBalanceBound(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		names := namesGen(3, 3).Draw(t, "names")
		counts := countOwners(member.Assign(names, 64))
		for _, m := range names {
			if counts[m] < 4 || counts[m] > 42 {
				t.Fatalf("%q has %d of 64 partitions; want 4..42 (counts %v)", m, counts[m], counts)
			}
		}
	})
}

// TestAssignBalanceStatistics checks the distribution over 3,000 fixed
// sets of three names (deterministic, so it fails always or never): for
// an ideal hash, 3.6% of sets have a member outside 12..30 (standard
// deviation 0.34% over 3,000 sets), and the largest share averages 25.2
// partitions; each partition goes to each position in the set a third of
// the time (1,000 ± 26).
func TestAssignBalanceStatistics(t *testing.T) {
	const sets, partitions = 3000, 64
	outside, maxSum := 0, 0
	var byPosition [partitions][3]int
	for i := range sets {
		names := []string{fmt.Sprintf("host-%d-a", i), fmt.Sprintf("worker%d", i*7+1), fmt.Sprintf("n.%d_z", i*13)}
		got := member.Assign(names, partitions)
		counts := countOwners(got)
		biggest := 0
		for _, m := range names {
			if counts[m] < 12 || counts[m] > 30 {
				outside++
				break
			}
		}
		for _, m := range names {
			biggest = max(biggest, counts[m])
		}
		maxSum += biggest
		for p, o := range got {
			byPosition[p][slices.Index(names, o)]++
		}
	}
	if frac := float64(outside) / sets; frac > 0.06 {
		t.Errorf("%.1f%% of name sets have a member outside 12..30; want about 3.6%%, at most 6%%", 100*frac)
	}
	if mean := float64(maxSum) / sets; mean > 26.5 {
		t.Errorf("the largest share averages %.2f partitions; want about 25.2, at most 26.5", mean)
	}
	for p, row := range byPosition {
		for pos, c := range row {
			if c < 1000-150 || c > 1000+150 {
				t.Errorf("partition %d went to position %d in %d of %d sets; want about 1000", p, pos, c, sets)
			}
		}
	}
}

// TestAssignMinimalMovement: a member joining takes partitions only for
// itself; a member leaving hands over only its own.
func TestAssignMinimalMovement(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		names := namesGen(2, 9).Draw(t, "names")
		n := rapid.IntRange(1, 128).Draw(t, "partitions")
		moved := names[0]
		rest := names[1:]
		before, after := member.Assign(rest, n), member.Assign(names, n)
		for p := range n {
			if before[p] != after[p] && after[p] != moved {
				t.Fatalf("join of %q moved partition %d from %q to %q", moved, p, before[p], after[p])
			}
			// Read the other way: after is the view before moved leaves.
			if after[p] != before[p] && after[p] != moved {
				t.Fatalf("leave of %q moved partition %d from %q to %q", moved, p, after[p], before[p])
			}
		}
	})
}

func countOwners(owners []string) map[string]int {
	counts := map[string]int{}
	for _, o := range owners {
		counts[o]++
	}
	return counts
}
