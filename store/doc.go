// Package store keeps idle-worker's durable state in JetStream: the registry
// of tracked backends (KVRegistry, a bus.Registry in a KV bucket) and the
// stream of quiesce events (QuiesceStream, a bus.Publisher), so that a
// restarted worker resumes where it stopped and an offline broker catches up
// through a durable consumer.
//
// The byte formats (records, event bodies, escaped keys) belong to package
// bus; this package decides only where they live and how they are written:
// asynchronously, batched, retried, never blocking the worker loop. Open sets
// both up as the IDLE_PERSIST setting asks.
package store
