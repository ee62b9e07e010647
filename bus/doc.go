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
//
// K, the backend key, is the rest of the subject: see ValidateKey for its
// rules and BackendID for the recommended, percent-encoded shape.
//
// Every parser in this package (ValidateKey, ParsePattern, ParseBackendID,
// ParseHeartbeat, ParseStateReport, ParseQuiesceEvent and the admin request
// parsers) returns errors that wrap ErrBadKey or ErrBadPayload, so callers
// can tell bad input from failures of their own.
package bus
