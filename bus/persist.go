package bus

import (
	"context"

	"github.com/idle-worker/idle-worker/coordinator"
)

// Registry keeps the coordinator's records across restarts; package store
// has the JetStream implementation. The worker loop calls Put, Delete and
// SetHighWater on transitions only, never per heartbeat, and they must not
// block. Load runs once, before the worker serves.
type Registry interface {
	// Load returns what the registry holds.
	Load(ctx context.Context) (RegistryState, error)
	// Put stores rec, replacing any record of the same key.
	Put(rec coordinator.Record)
	// Delete forgets key.
	Delete(key string)
	// SetHighWater stores a generation that no generation handed out by
	// this run exceeds before the next SetHighWater.
	SetHighWater(gen uint64)
	// StoreHighWater is SetHighWater, waiting until it is stored. The
	// worker calls it once before serving.
	StoreHighWater(ctx context.Context, gen uint64) error
	// StoreID replaces the registry's id and waits until it is stored. The
	// worker calls it before serving when the stored id or high-water mark
	// cannot be trusted.
	StoreID(ctx context.Context, id string) error
	// Counters returns the registry's write counters.
	Counters() RegistryCounters
	// Close writes what is pending, bounded by ctx, and stops.
	Close(ctx context.Context) error
}

// RegistryState is what Registry.Load returns.
type RegistryState struct {
	// ID names the registry; quiesce ids start with it, so an event re-sent
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
	// NewID says Load created ID: the registry was empty, so no high-water
	// mark is expected yet.
	NewID bool
}

// RegistryCounters are a Registry's counters, read by Worker.Stats.
type RegistryCounters struct {
	// Written counts acknowledged writes; Failed counts writes that failed
	// (each is retried until it is stored or superseded).
	Written, Failed uint64
}

// Publisher sends quiesce events to brokers. The worker loop calls Publish
// for every event, first emissions and re-sends alike; it must not block.
// Without one the worker publishes on core NATS.
type Publisher interface {
	// Publish sends ev on subject with ev.ID as its Nats-Msg-Id. It copies
	// what it keeps: ev may be reused once it returns. An error means the
	// event was not sent and will not be retried by the Publisher.
	Publish(subject string, ev *QuiesceEvent) error
	// Counters returns the publisher's counters.
	Counters() PublisherCounters
	// Close waits, bounded by ctx, for what is in flight, and stops.
	Close(ctx context.Context) error
}

// PublisherCounters are a Publisher's counters, read by Worker.Stats.
type PublisherCounters struct {
	// Failed counts events whose first publish or acknowledgement failed
	// (each is retried); Abandoned counts events left to redelivery after
	// every retry failed.
	Failed, Abandoned uint64
}
