// Package bus is idle-worker's side of NATS: the subjects and payloads of the
// wire contract (documented in subjects.md), the Worker that connects a
// coordinator.Coordinator to a NATS connection, and the client helpers that
// backends (Heartbeater) and brokers (SubscribeQuiesce, ReportState) use.
//
// Subjects hang off a configurable prefix P (DefaultPrefix is "idle"):
//
//	P.activity.K   backends → worker   heartbeat, optional {"idle_timeout_ms":N}
//	P.state.K      brokers → worker    {"state":"draining"|"quiesced"|"removed"}
//	P.quiesce.K    worker → brokers    a QuiesceEvent, header Nats-Msg-Id
//	P.admin.list   operators, request  list tracked backends
//	P.admin.quiesce operators, request force a drain by key or pattern
//	P.admin.forget operators, request  stop tracking backends by key or pattern
//	P.admin.get    operators, request  one backend
//	P.admin.members operators, request the workers of the prefix and their partitions
//	P.store.>      workers only        the store's subjects, membership, peer questions
//
// K, the backend key, is the rest of the subject: see ValidateKey for its
// rules and BackendID for the recommended, percent-encoded shape.
//
// Files, by concern: the wire contract in subjects.go, key.go,
// backendid.go, heartbeat.go, payload.go and record.go (stored records);
// the Worker in worker.go (configuration, the Run loop), lifecycle.go
// (subscribe, shut down), ingest.go (heartbeats and reports), reply.go
// (which reply subjects are answered), emit.go (the timer, events, the
// summary log), pace.go (the event budget), restore.go (loading the
// registry), outage.go, admin.go and scan.go (the admin service and its
// sliced walks), peer.go and peerwire.go (the admin service's questions to
// the other workers of the prefix, so that it answers for all of them),
// alone.go (the warning about uncoordinated workers), stats.go, ratelog.go; the interfaces the Worker depends on
// in persist.go; the client helpers in client.go.
//
// Every parser in this package (ValidateKey, ParsePattern, ParseBackendID,
// ParseHeartbeat, ParseStateReport, ParseQuiesceEvent and the admin request
// parsers) returns errors that wrap ErrBadKey or ErrBadPayload, so callers
// can tell bad input from failures of their own.
package bus
