package store

import (
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/partition"
)

// DefaultStreamName is the one stream of a prefix: claims, the registry's
// snapshots and log, and the quiesce events brokers consume.
const DefaultStreamName = "IDLE_QUIESCE"

// Stream defaults.
const (
	// DefaultDuplicates is the de-duplication window on Nats-Msg-Id.
	DefaultDuplicates = 2 * time.Minute
	// DefaultMaxAge bounds how long quiesce events are kept. The store's own
	// messages carry Nats-TTL never and outlive it.
	DefaultMaxAge = 24 * time.Hour
)

// Headers the store writes. Nats-* are JetStream's.
const (
	hdrMsgID       = bus.HeaderMsgID
	hdrExpectSeq   = "Nats-Expected-Last-Subject-Sequence"
	hdrExpectSubj  = "Nats-Expected-Last-Subject-Sequence-Subject"
	hdrTTL         = "Nats-TTL"
	hdrRollup      = "Nats-Rollup"
	hdrRecord      = "Idle-Record" // an event's draining record: base64 of one upsert entry
	ttlNever       = "never"
	rollupSubject  = "sub"
	eventTransform = "qout"
)

// layout names the subjects of one prefix's stream. All the store's own
// subjects are under P.store.; only workers may publish or subscribe there.
type layout struct {
	subj bus.Subjects
	base string // "P.store."
}

func newLayout(s bus.Subjects) layout {
	return layout{subj: s, base: s.Store("")}
}

// own is the claim subject of partition p: the sequence of its last message
// is the partition's owner token, and every write of p is fenced on it.
func (l layout) own(p int) string { return l.base + "own." + strconv.Itoa(p) }

// log is partition p's log subject: records changed since the last flush.
func (l layout) log(p int) string { return l.base + "log." + strconv.Itoa(p) }

// snap is partition p's snapshot manifest subject (one message, rolled up).
func (l layout) snap(p int) string { return l.base + "snap." + strconv.Itoa(p) }

// chunk is chunk c of snapshot id of partition p.
func (l layout) chunk(p int, id string, c int) string {
	return l.base + "chunk." + strconv.Itoa(p) + "." + id + "." + strconv.Itoa(c)
}

// chunks matches every chunk of snapshot id of partition p.
func (l layout) chunks(p int, id string) string {
	return l.base + "chunk." + strconv.Itoa(p) + "." + id + ".>"
}

// meta holds the store's identity: id, partition count, format.
func (l layout) meta() string { return l.base + "meta" }

// hwm holds the generation high-water mark.
func (l layout) hwm() string { return l.base + "hwm" }

// event is where the worker publishes key's quiesce event: the stream stores
// it as P.quiesce.<key> and republishes it there once stored.
func (l layout) event(p int, key string) string {
	return l.base + eventTransform + "." + strconv.Itoa(p) + "." + key
}

// EventSubject is the subject the store publishes key's quiesce event on,
// for a stream of the given partition count: the stream stores it as
// P.quiesce.<key> and republishes it there. Benchmarks use it to publish
// exactly as the store does.
func EventSubject(s bus.Subjects, partitions int, key string) string {
	return newLayout(s).event(partition.Of(key, partitions), key)
}

// storedSubjects are the store's subjects the stream captures: all of
// P.store. but the membership heartbeats (P.store.members, core NATS only).
func (l layout) storedSubjects() []string {
	return []string{l.base + "own.*", l.base + "log.*", l.base + "snap.*", l.base + "chunk.>",
		l.base + eventTransform + ".>", l.meta(), l.hwm()}
}

// streamConfig is the one stream of the prefix. Events come in on
// P.store.qout.<p>.<K>, fenced; an input transform stores them as
// P.quiesce.<K>, where brokers' durable consumers read, and RePublish hands
// each stored event to core subscribers of P.quiesce.<K>: a broker never
// sees an event that was not stored, nor one that a stale owner sent. No
// MaxBytes or MaxMsgs: a limit would discard the oldest messages first,
// claims and snapshots included; events are bounded by MaxAge, the store's
// own messages carry Nats-TTL never.
func (l layout) streamConfig(name string, replicas int, dup, maxAge time.Duration) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        name,
		Description: "idle-worker: quiesce events, registry snapshots and log, partition claims",
		Subjects:    l.storedSubjects(),
		SubjectTransform: &jetstream.SubjectTransformConfig{
			Source:      l.base + eventTransform + ".*.>",
			Destination: l.subj.Quiesce(">"),
		},
		RePublish:   &jetstream.RePublish{Source: l.subj.Quiesce(">"), Destination: l.subj.Quiesce(">")},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		Replicas:    max(replicas, 1),
		Duplicates:  dup,
		MaxAge:      maxAge,
		MaxBytes:    -1,
		MaxMsgs:     -1,
		AllowMsgTTL: true,
		AllowRollup: true,
		AllowDirect: true,
	}
}
