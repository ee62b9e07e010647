package member

// The FNV-1a 64-bit parameters (offset basis and prime), as in Go's
// hash/fnv.
const (
	fnvOffset64 uint64 = 14695981039346656037
	fnvPrime64  uint64 = 1099511628211
)

// Assign returns the preferred owner of each of the given number of
// partitions among members, by rendezvous (highest-random-weight) hashing:
// element p is the member with the highest weight for p, the
// lexicographically smaller name on a tie. A member's weight for p is
// FNV-1a 64 of the member's name followed by p as 4 bytes big-endian, then
// the splitmix64 finalizer. Every worker of a prefix must compute the same
// weights: changing them would make workers of two versions disagree.
//
// Assign is deterministic and does not depend on the order of members nor
// on duplicates in it. With no members every element is "".
//
// Rendezvous hashing moves as little as possible: when a member joins, the
// only partitions that change owner are those it now wins, and when one
// leaves, only the partitions it owned change owner, each to the member
// that was second for it. With m members each gets about partitions/m
// (64 partitions among 3 members: a binomial count, mean 21.3, between 12
// and 30 for 96% of name sets).
//
// Assign does no I/O and reads no clock; it costs one weight per member and
// partition.
func Assign(members []string, partitions int) []string {
	owners := make([]string, max(partitions, 0))
	if len(owners) == 0 || len(members) == 0 {
		return owners
	}
	seeds := make([]uint64, len(members))
	for i, m := range members {
		seeds[i] = nameHash(m)
	}
	for p := range owners {
		var best uint64
		found := false
		for i, m := range members {
			w := partitionWeight(seeds[i], p)
			if !found || w > best || w == best && m < owners[p] {
				owners[p], best, found = m, w, true
			}
		}
	}
	return owners
}

// weight is the rendezvous weight of member for partition p: FNV-1a 64 of
// the name's bytes followed by p as 4 bytes big-endian (always the last 4
// bytes, so two different pairs never make the same input), then the
// splitmix64 finalizer,
// which spreads FNV's weak mixing of the last bytes over all 64 bits.
func weight(member string, p int) uint64 {
	return partitionWeight(nameHash(member), p)
}

// nameHash is the FNV-1a 64 state after the name's bytes.
func nameHash(name string) uint64 {
	h := fnvOffset64
	for i := 0; i < len(name); i++ {
		h ^= uint64(name[i])
		h *= fnvPrime64
	}
	return h
}

// partitionWeight continues the FNV-1a 64 state h with p as 4 bytes
// big-endian and finalizes it.
func partitionWeight(h uint64, p int) uint64 {
	u := uint32(p)
	for shift := 24; shift >= 0; shift -= 8 {
		h ^= uint64(byte(u >> shift))
		h *= fnvPrime64
	}
	return splitmix64(h)
}

// splitmix64 is the finalizer of Steele, Lea and Flood's SplitMix64
// generator (as in java.util.SplittableRandom): a bijection of uint64 in
// which every input bit affects every output bit.
func splitmix64(z uint64) uint64 {
	z ^= z >> 30
	z *= 0xbf58476d1ce4e5b9
	z ^= z >> 27
	z *= 0x94d049bb133111eb
	z ^= z >> 31
	return z
}
