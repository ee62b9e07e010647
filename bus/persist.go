package bus

import (
	"context"

	"github.com/idle-worker/idle-worker/coordinator"
)

// Store keeps the coordinator's records across restarts and publishes
// quiesce events durably; package store has the JetStream implementation.
// The worker loop calls Put, Delete, Publish and SetHighWater on
// transitions only, never per heartbeat, and they must not block. Load runs
// once, before the worker serves. Without a Store the worker keeps nothing
// and publishes events on core NATS.
type Store interface {
	// Load returns what the store holds.
	Load(ctx context.Context) (RegistryState, error)
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
	// SetHighWater stores a generation that no generation handed out by
	// this run exceeds before the next SetHighWater.
	SetHighWater(gen uint64)
	// StoreHighWater is SetHighWater, waiting until it is stored. The
	// worker calls it once before serving.
	StoreHighWater(ctx context.Context, gen uint64) error
	// StoreID replaces the store's id and waits until it is stored. The
	// worker calls it before serving when the stored id or high-water mark
	// cannot be trusted.
	StoreID(ctx context.Context, id string) error
	// Counters returns the store's write counters.
	Counters() StoreCounters
	// Close writes what is pending, bounded by ctx, and stops.
	Close(ctx context.Context) error
}

// RegistryState is what Store.Load returns.
type RegistryState struct {
	// ID names the store; quiesce ids start with it, so an event re-sent
	// after a restart carries the same id.
	ID string
	// HighWater is the stored generation high-water mark.
	HighWater uint64
	Records   []coordinator.Record
	// Skipped counts stored records that did not decode.
	Skipped int
	// Unreadable says why the stored id or high-water mark could not be
	// read (empty when they could); the worker then starts a new id space.
	Unreadable string
	// NewID says Load created ID: the store was empty, so no high-water
	// mark is expected yet.
	NewID bool
}

// StoreCounters are a Store's counters, read by Worker.Stats.
type StoreCounters struct {
	// Written counts acknowledged writes; Failed counts writes that failed
	// (each is retried until it is stored); Fenced counts writes the
	// server refused because another worker claimed their partition.
	Written, Failed, Fenced uint64
}
