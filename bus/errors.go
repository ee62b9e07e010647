package bus

import "errors"

// Sentinel errors. Errors returned by this package wrap one of them; test
// with errors.Is.
var (
	// ErrBadKey: a backend key, pattern or subject prefix breaks the rules.
	ErrBadKey = errors.New("bus: bad key")
	// ErrBadPayload: a message body is malformed or has out-of-range values.
	ErrBadPayload = errors.New("bus: bad payload")
	// ErrUnknownBackend: a message names a key the worker does not track.
	ErrUnknownBackend = errors.New("bus: unknown backend")
	// ErrBadReply: a message's reply subject is not one the worker answers
	// on (see WorkerConfig.ReplyPrefixes); the message was applied but not
	// answered.
	ErrBadReply = errors.New("bus: reply subject not allowed")
	// ErrConnectionClosed: the NATS connection closed for good (for example
	// after repeated authorization errors) and the worker stopped.
	ErrConnectionClosed = errors.New("bus: NATS connection closed")
	// ErrShuttingDown: the worker is stopping and did not serve a request.
	ErrShuttingDown = errors.New("bus: worker shutting down")
	// ErrIncomplete: an admin request could not be answered for the whole
	// prefix: a member that owns the partition asked about did not answer
	// in time.
	ErrIncomplete = errors.New("bus: answer incomplete")
	// ErrRejected: the worker answered a client's request with ok:false;
	// the error text carries the worker's reason.
	ErrRejected = errors.New("bus: rejected by worker")
)
