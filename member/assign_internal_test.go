package member

import (
	"encoding/binary"
	"hash/fnv"
	"testing"
)

// TestSplitmix64 checks the finalizer against the first outputs of the
// SplitMix64 generator seeded with 0 (state += 0x9e3779b97f4a7c15, then
// the finalizer), as java.util.SplittableRandom and the reference C code
// produce them.
func TestSplitmix64(t *testing.T) {
	const gamma = 0x9e3779b97f4a7c15
	want := []uint64{0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4, 0x06c45d188009454f}
	for i, w := range want {
		if got := splitmix64(gamma * uint64(i+1)); got != w {
			t.Errorf("splitmix64(%d × gamma) = %#x; want %#x", i+1, got, w)
		}
	}
}

// TestWeightMatchesReference computes the weight the slow way, with
// hash/fnv over the name and the big-endian partition, and compares.
func TestWeightMatchesReference(t *testing.T) {
	for _, name := range []string{"a", "worker-1", "db-1.example-k3x9qa", "Z_9"} {
		for _, p := range []int{0, 1, 63, 255, 256, 1023} {
			h := fnv.New64a()
			h.Write([]byte(name))
			h.Write(binary.BigEndian.AppendUint32(nil, uint32(p)))
			if got, want := weight(name, p), splitmix64(h.Sum64()); got != want {
				t.Errorf("weight(%q, %d) = %#x; want %#x", name, p, got, want)
			}
		}
	}
}

// TestWeightGolden pins a few weights (computed independently, in Python,
// from the definition): they are part of what all workers of a prefix must
// agree on, so a change here moves partitions between workers of two
// versions and must be deliberate.
func TestWeightGolden(t *testing.T) {
	tests := []struct {
		name string
		p    int
		want uint64
	}{
		{"a", 0, 0x3025e00c34f88fc7},
		{"worker-1", 17, 0xba081b866397226c},
	}
	for _, tt := range tests {
		if got := weight(tt.name, tt.p); got != tt.want {
			t.Errorf("weight(%q, %d) = %#x; want %#x", tt.name, tt.p, got, tt.want)
		}
	}
}
