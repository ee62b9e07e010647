// Package partition splits the backend keys of one subject prefix into a
// fixed number of partitions, the way nats-server's subject mappings do, so
// that several workers can each own some partitions of one prefix.
//
// Of computes the partition of a key exactly as the server's mapping
// function {{partition(n,1,…,k)}} does for a key of k tokens: FNV-1a
// (32 bits) over the key's tokens joined with no separator, modulo n. The
// verb (activity or state) and the prefix are not hashed, so a key's
// heartbeats and state reports land in the same partition.
//
// Mappings returns the server configuration that routes each key's
// messages to its partition: for each verb and each key length k from 1 to
// bus.MaxKeyTokens, one mapping
//
//	P.<verb>.*.….*  →  P.p.<verb>.{{partition(n,1,…,k)}}.{{wildcard(1)}}.….{{wildcard(k)}}
//
// so P.activity.K arrives on P.p.activity.<Of(K, n)>.K (Subject builds
// these subjects, ParseSubject takes them apart). A source ending in ">"
// could not name its tokens to the partition function, hence one mapping
// per key length. A key of more than bus.MaxKeyTokens tokens matches none of
// them and keeps its subject, P.activity.K. Block.Config writes the
// mappings as a nats-server configuration block (the command `idle-worker
// mappings` prints it); every server that clients connect to needs it,
// since a mapping applies only where a message enters the system, from a
// client or leaf node connection (nats-server v2.15.2,
// server/parser.go:519), not to what arrives over a route.
//
// The partition count is fixed for the life of a prefix: changing it moves
// keys between partitions.
package partition
