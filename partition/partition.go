package partition

import "github.com/idle-worker/idle-worker/bus"

// MaxPartitions is the largest partition count this package accepts for a
// prefix; each partition is a subscription, an owner and a claim.
const MaxPartitions = 1024

// Of returns the partition, in [0, n), of the backend key among n
// partitions: the partition nats-server's mapping {{partition(n,1,…,k)}}
// chooses for the k tokens of key, as the mappings of Mappings ask. n must
// be in 1..math.MaxInt32, as the server's is (Of panics on 0). Of does not
// check the key; for a key of more than bus.MaxKeyTokens tokens the result
// means nothing, since the server does not map it. It does not allocate.
//
// nats-server v2.15.2, server/subject_transform.go: partition's arguments
// are n and wildcard indexes (:269-293), each turned into the index of that
// "*" among the source's tokens (:105-110, :143-150); the tokens are
// appended to one buffer with no separator (:505-509) and hashed by
// getHashPartition (:469-478): FNV-1a 32-bit, h.Sum32() % uint32(n). So
// "a.bc" and "ab.c" always share a partition.
func Of(key string, n int) int { return bus.PartitionOf(key, n) }
