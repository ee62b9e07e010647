package bus

// The FNV-1a 32-bit parameters (offset basis and prime), as in Go's
// hash/fnv and nats-server.
const (
	fnvOffset32 uint32 = 2166136261
	fnvPrime32  uint32 = 16777619
)

// PartitionOf returns the partition, in [0, n), of the backend key among n
// partitions: the partition nats-server's mapping {{partition(n,1,…,k)}}
// chooses for the k tokens of key (FNV-1a 32-bit over the tokens with no
// separator, mod n; package partition documents the server's code and
// tests the two agree). n must be at least 1. It does not check the key and
// does not allocate. The store writes each partition apart, and one worker
// decides for each.
func PartitionOf(key string, n int) int {
	h := fnvOffset32
	for i := 0; i < len(key); i++ {
		if c := key[i]; c != '.' {
			h ^= uint32(c)
			h *= fnvPrime32
		}
	}
	return int(h % uint32(n))
}
