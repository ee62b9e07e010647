// Package coordinator is the pure state model at the heart of idle-worker: it
// decides when a backend process has been idle long enough to be drained.
//
// A Coordinator tracks, per backend key, the time of its last activity, its
// idle timeout and a State (Running, Draining or Quiesced). Callers feed it
// events (MarkActivity, MarkDraining, MarkQuiesced, Remove) and the current
// time; it answers with plain values: CollectDue returns the backends whose
// idle time has reached their timeout and moves them to Draining, so each
// running period produces at most one Due; NextDeadline tells the caller when
// to call CollectDue next, so the caller arms one timer instead of polling.
//
// An operator's drain is Force: the backend comes out of the next CollectDue
// with the given reason, behind those already due, so a caller that paces
// its output with AppendDueN keeps one order for every drain. With
// Policy.ForgetAfter, backends left Draining or Quiesced that long come out
// with Forgotten set and are no longer tracked; Policy.MaxPerInstance bounds
// the backends of one instance (a key's first token).
//
// The package performs no I/O, starts no goroutines and never reads a clock:
// every time-dependent method takes now. That makes it deterministic and
// lets its tests move time explicitly. It takes no locks of its own (the
// B-tree library of its key index takes an uncontended one when it
// allocates or frees a node). A Coordinator is not safe for concurrent use;
// exactly one goroutine must own it (in idle-worker, the worker loop in
// package bus).
//
// # Time
//
// Times are time.Time values from a single clock. In production pass
// time.Now(), whose monotonic reading makes every interval immune to wall-clock
// steps; tests pass a fixed t0 advanced with t0.Add(d). Internally each time is
// kept as nanoseconds since the first time the Coordinator was given, which
// keeps entries small; times are exact within about 292 years of it, and a
// deadline beyond that (a timeout of math.MaxInt64, say) reads as that limit:
// late, never wrapped into the past. Idle time saturates at zero when now is
// earlier than the last activity.
//
// # Timeouts
//
// A timeout of zero or less clamps to MinTimeout (1 ms), for the policy default
// and for per-backend timeouts alike. Upper bounds are the caller's business
// (the worker rejects timeouts above its configured maximum before they reach
// the model).
//
// # Cost
//
// Entries live in a map and running entries in a binary min-heap ordered by a
// lower bound of their deadline. A heartbeat on a running backend whose
// timeout does not shrink only stores the new activity time: O(1). The heap
// entry is corrected lazily when its stale deadline reaches the top, so a
// backend heartbeating every second with a 30 s timeout costs one O(log n)
// heap fix per 30 s, not per heartbeat. CollectDue costs O((k+s) log n) for k
// due and s stale entries; NextDeadline is O(1) when the top is fresh.
//
// A B-tree of the entries ordered by key (github.com/google/btree) serves
// Scan and List. It changes only when a key is added or removed, in
// O(log n), never on a heartbeat of a tracked key, and costs about 17 bytes
// per backend (measured at a million). Scan finds its start in O(log n) and
// costs O(1) amortized per key visited; it visits a prefix's keys only, at
// most a given number per call, and resumes after a key, so a caller can
// walk a million keys in slices and let other work run between them (the
// worker does, for its admin requests).
package coordinator
