package coordinator

import (
	"errors"
	"time"
)

// MinTimeout is the smallest idle timeout the model keeps: a timeout of zero
// or less clamps to it.
const MinTimeout = time.Millisecond

// DefaultIdleTimeout is the idle timeout of DefaultPolicy.
const DefaultIdleTimeout = 30 * time.Second

// ErrFull is returned by MarkActivity for a new key when the Coordinator
// already tracks Policy.MaxBackends backends, or its instance
// Policy.MaxPerInstance (then wrapped, naming the instance). Tracked keys
// keep working.
var ErrFull = errors.New("coordinator: backend limit reached")

// State is the lifecycle state of a tracked backend.
type State uint8

// The states a backend moves through. A backend is Running from its first
// activity until it is found idle (or forced to drain), then Draining until
// its broker reports it Quiesced or Removed, or fresh activity re-arms it.
const (
	Running State = iota + 1
	Draining
	Quiesced
)

var stateNames = [...]string{Running: "running", Draining: "draining", Quiesced: "quiesced"}

// String returns the wire name of s ("running", "draining", "quiesced").
func (s State) String() string {
	if int(s) < len(stateNames) && stateNames[s] != "" {
		return stateNames[s]
	}
	return "unknown"
}

// Reason says why a backend was asked to drain.
type Reason uint8

// The reasons for a quiesce.
const (
	IdleTimeout Reason = iota + 1
	BrokerShutdown
	Maintenance
)

var reasonNames = [...]string{IdleTimeout: "idle_timeout", BrokerShutdown: "broker_shutdown", Maintenance: "maintenance"}

// NumReasons is one more than the largest Reason: an array of NumReasons
// elements holds one element per Reason, indexed by it.
const NumReasons = len(reasonNames)

// Reasons returns every Reason, in the order of the wire contract.
func Reasons() []Reason { return []Reason{IdleTimeout, Maintenance, BrokerShutdown} }

// String returns the wire name of r ("idle_timeout", "broker_shutdown",
// "maintenance").
func (r Reason) String() string {
	if int(r) < len(reasonNames) && reasonNames[r] != "" {
		return reasonNames[r]
	}
	return "unknown"
}

// Policy holds the settings of a Coordinator.
type Policy struct {
	// DefaultIdleTimeout applies to activity that names no timeout of its
	// own. Zero or less clamps to MinTimeout.
	DefaultIdleTimeout time.Duration
	// MaxBackends bounds the number of tracked keys; 0 means no bound.
	MaxBackends int
	// RetryInterval, when positive, makes CollectDue return a Draining
	// backend again (same Generation, Attempt+1) when it has had no
	// MarkQuiesced, Remove or activity for this long since the last
	// attempt. The interval doubles with each attempt up to
	// RetryMaxInterval. Zero disables redelivery.
	RetryInterval time.Duration
	// RetryMaxInterval caps the backoff (default, when zero: 16 x
	// RetryInterval). Each wait gets up to a quarter more, spread by key and
	// attempt, so a mass drain is not re-sent in one burst.
	RetryMaxInterval time.Duration
	// ForgetAfter, when positive, removes a Draining or Quiesced backend
	// that has had no activity, state report or emission for this long, as
	// if its broker had reported it removed (CollectDue returns it with
	// Forgotten set). A backend still being re-sent its drain is forgotten
	// at its first re-send after that time. Zero: never.
	ForgetAfter time.Duration
	// MaxPerInstance, when positive, bounds the tracked backends of one
	// instance: those whose keys share the first token. A new key beyond it
	// is refused with ErrFull; other instances are unaffected.
	MaxPerInstance int
}

// DefaultPolicy returns a Policy with a 30 s default idle timeout and no
// bound on the number of backends.
func DefaultPolicy() Policy {
	return Policy{DefaultIdleTimeout: DefaultIdleTimeout}
}

// Due is a backend that must be drained, as returned by CollectDue and
// AppendDueN: the backend has already been moved to Draining. With Forgotten
// set it is instead a backend the model stopped tracking.
type Due struct {
	Key string
	// IdleFor is how long the backend had been idle when it was collected.
	IdleFor time.Duration
	// ConfiguredTimeout is the backend's idle timeout.
	ConfiguredTimeout time.Duration
	Reason            Reason
	// Deadline is when the backend became (or would have become) idle:
	// last activity + timeout.
	Deadline time.Time
	// Generation identifies the running period that ended: it changes each
	// time the backend becomes Running, so (Key, Generation) names one
	// emission.
	Generation uint64
	// Attempt is 1 for the first emission and counts redeliveries after it.
	Attempt int
	// Forgotten says the backend was not drained but forgotten (see
	// Policy.ForgetAfter): it is no longer tracked, and nothing is to be
	// sent.
	Forgotten bool
}

// Backend is a read-only snapshot of one tracked backend.
type Backend struct {
	Key         string
	State       State
	LastActive  time.Time
	IdleFor     time.Duration
	IdleTimeout time.Duration
	Generation  uint64
	// Reason is why a Draining or Quiesced backend was drained by an
	// emission (zero otherwise).
	Reason Reason
	// Attempts counts the quiesce emissions of a Draining backend's
	// current generation (zero when none was sent).
	Attempts int
}

// Record is what a registry keeps of a backend so that it survives a restart:
// it changes only on transitions, never on a plain heartbeat.
type Record struct {
	Key         string
	IdleTimeout time.Duration
	State       State
	Generation  uint64
	// Reason is why a Draining or Quiesced backend was drained; zero when it
	// was not drained by an emission.
	Reason Reason
}

// Change reports what a MarkActivity call changed, as a bit set. A plain
// refresh of a running backend returns 0.
type Change uint8

// The bits of a Change.
const (
	// Added: the key was not tracked before.
	Added Change = 1 << iota
	// Rearmed: the backend was Draining or Quiesced and is Running again.
	Rearmed
	// TimeoutChanged: the backend's idle timeout differs from before.
	TimeoutChanged
)
