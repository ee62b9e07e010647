package coordinator

import "testing"

// TestReasonsListsEveryReason: Reasons names each Reason with a wire name
// exactly once, and NumReasons indexes them all, so counters sized by it
// cannot miss a reason added later.
func TestReasonsListsEveryReason(t *testing.T) {
	seen := map[Reason]bool{}
	for _, r := range Reasons() {
		if seen[r] {
			t.Errorf("Reasons lists %v twice", r)
		}
		seen[r] = true
		if int(r) >= NumReasons {
			t.Errorf("Reason %v = %d does not fit an array of NumReasons = %d", r, r, NumReasons)
		}
	}
	for r := Reason(1); int(r) < NumReasons; r++ {
		if r.String() != "unknown" && !seen[r] {
			t.Errorf("Reason %d (%q) is missing from Reasons", r, r)
		}
	}
	if len(seen) != NumReasons-1 {
		t.Errorf("Reasons has %d reasons; want NumReasons-1 = %d", len(seen), NumReasons-1)
	}
}
