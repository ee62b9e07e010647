package member

import "errors"

// Sentinel errors. Errors returned by this package wrap one of them; test
// with errors.Is.
var (
	// ErrBadName: a worker name (or instance id) is not 1..64 bytes of
	// [A-Za-z0-9._-].
	ErrBadName = errors.New("member: bad name")
	// ErrBadConfig: a Config value is out of range, or the connection
	// cannot serve a membership (it does not receive its own messages).
	ErrBadConfig = errors.New("member: bad config")
	// ErrNameTaken: another live worker uses this worker's name. Start
	// returns it when the other one was there first; Conflict delivers it
	// later when the other one is the older of the two.
	ErrNameTaken = errors.New("member: name taken by another live worker")
	// ErrBadHeartbeat: a heartbeat message is too large, does not parse, or
	// carries a bad name, instance or partition.
	ErrBadHeartbeat = errors.New("member: bad heartbeat")
)
