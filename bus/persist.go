package bus

import (
	"context"

	"github.com/idle-worker/idle-worker/coordinator"
)

// Store keeps the coordinator's records across restarts and publishes
// quiesce events durably; package store has the JetStream implementation.
// Keys fall into partitions (PartitionOf); a worker writes only the
// partitions it claimed, and the store refuses a write of a partition
// another worker claimed since. The worker loop calls Put, Delete and
// Publish on transitions only, never per heartbeat, and they must not
// block. Without a Store the worker keeps nothing and publishes events on
// core NATS.
type Store interface {
	// Load returns the store's identity: its id and generation high-water
	// mark (no records: Claim returns them).
	Load(ctx context.Context) (RegistryState, error)
	// Claim takes parts over from whoever held them (their later writes
	// are refused) and returns their records.
	Claim(ctx context.Context, parts []int) (Claimed, error)
	// Release writes what is pending for parts and gives them up.
	Release(ctx context.Context, parts []int) error
	// Lost receives the partitions another worker claimed from this one.
	Lost() <-chan int
	// Verify checks that this worker's claims on parts are still the
	// latest; those that are not arrive on Lost.
	Verify(ctx context.Context, parts []int) error
	// Partitions returns the partition count (PartitionOf's n).
	Partitions() int
	// Reserve reserves n generations [start, start+n), start >= floor and
	// above any reservation before it, of any worker.
	Reserve(ctx context.Context, floor, n uint64) (start uint64, err error)
	// Put stores rec, replacing any record of the same key. stored, when
	// not nil, is called once, from any goroutine, when rec is stored or
	// with the error that keeps it from being stored; the worker answers a
	// new backend's first heartbeat from it.
	Put(rec coordinator.Record, stored func(error))
	// Delete forgets key.
	Delete(key string)
	// Publish sends ev to brokers together with rec, the draining record
	// the event implies: both are stored or neither, and brokers see the
	// event only once it is stored. It copies what it keeps. An error
	// means the event will not be sent.
	Publish(ev *QuiesceEvent, rec coordinator.Record) error
	// StoreID replaces the store's id and waits until it is stored. The
	// worker calls it before serving when the stored id or high-water mark
	// cannot be trusted.
	StoreID(ctx context.Context, id string) error
	// Counters returns the store's write counters.
	Counters() StoreCounters
	// Close writes what is pending, bounded by ctx, and stops.
	Close(ctx context.Context) error
}

// Claimed is what Store.Claim returns.
type Claimed struct {
	// Records of the claimed partitions, in ascending key order.
	Records []coordinator.Record
	// HighWater is the generation high-water mark when they were read.
	HighWater uint64
	// Skipped counts stored entries that did not decode.
	Skipped int
}

// RegistryState is what Store.Load returns.
type RegistryState struct {
	// ID names the store; quiesce ids start with it, so an event re-sent
	// after a restart carries the same id.
	ID string
	// HighWater is the stored generation high-water mark.
	HighWater uint64
	// Unreadable says why the stored id or high-water mark could not be
	// read (empty when they could); the worker then starts a new id space.
	Unreadable string
	// NewID says Load created ID: the store was empty, so no high-water
	// mark is expected yet.
	NewID bool
	// Skipped counts stored records Load could not use (a migration's
	// undecodable ones).
	Skipped int
}

// StoreCounters are a Store's counters, read by Worker.Stats.
type StoreCounters struct {
	// Written counts acknowledged writes; Failed counts writes that failed
	// (each is retried until it is stored); Fenced counts writes the
	// server refused because another worker claimed their partition.
	Written, Failed, Fenced uint64
}
