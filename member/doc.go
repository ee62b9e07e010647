// Package member decides who is alive among the workers of one subject
// prefix and which of them should own each partition; it suggests
// ownership and never enforces it.
//
// Several idle-worker processes may share a prefix. Its keys fall into a
// fixed number of partitions (package partition), and each partition has
// one owner, recorded in the store by a claim whose stream sequence fences
// every write of that partition. This package does not touch the store. It
// answers three questions, and the caller (package bus) turns the answers
// into claims and releases, which the store accepts or refuses:
//
//   - Who is alive? A Membership sends a heartbeat on the core NATS subject
//     P.store.members (Subject) every Interval (250 ms) and hears everyone
//     else's; a member not heard for Timeout (1 s, IDLE_OWNER_TIMEOUT) is
//     dead, and one that announced leaving (Leave) is gone at once. The
//     heartbeat, JSON, also says which partitions the member owns:
//     {"name":"…","instance":"…","partitions":[…],"leaving":false,"age_ms":…}.
//   - Who should own what? Assign maps each partition to a live member by
//     rendezvous hashing: deterministic, even, and moving only what must
//     move when a member joins or leaves.
//   - What should I do now? Plan compares the assignment with what the
//     members report owning and returns the partitions to claim (assigned
//     to me, owned by no live member) and to release (owned by me, assigned
//     to another live member, a few at a time).
//
// # What it does not decide
//
// Membership is a hint. Two members may briefly disagree about who is
// alive (a heartbeat not yet heard, a frozen process that wakes up), and
// then two may try to claim one partition, or an owner may keep deciding
// for a partition another has claimed. The store settles both: a claim is a
// compare-and-set on the partition's last claim, so one of two claims
// fails, and every write of a partition carries the owner's claim sequence,
// so a stale owner's writes are refused. Nothing here relies on a member
// noticing in time.
//
// # Names
//
// Each worker has a name (IDLE_WORKER_NAME, DefaultName when unset): 1 to
// 64 bytes of [A-Za-z0-9._-] (CheckName). Each process start also draws a
// random instance id. Start listens for a heartbeat interval and a quarter (at most
// Timeout) before its first heartbeat;
// if it hears its own name from another instance, it fails with
// ErrNameTaken (two live workers with one name: the second refuses to
// start). If two instances with one name meet later (one was frozen while
// the other started), the younger one gets ErrNameTaken on Conflict. A
// restart under the same name joins at once: the others replace the old
// instance by the new one, and the old instance's partitions become free
// for their new owner.
//
// # Wiring it
//
// A worker starts a Membership, then on every value from Changes (and after
// each of its own claims and releases) computes
//
//	v := m.View()
//	live := v.Live()
//	mv := member.Plan(member.Input{
//		Self: m.Name(), Members: live, Assigned: member.Assign(live, n),
//		Owners: v.Owners(), Owned: owned, Busy: busy,
//	})
//
// claims mv.Claim and releases mv.Release in the store, and reports what it
// owns with SetOwned (which sends a heartbeat at once, so a released
// partition's next owner claims it within a round trip). To stop, it plans
// with Leaving set, releases everything, then calls Leave.
//
// A member judges others only while it hears its own heartbeats: a worker
// cut off from NATS, or frozen, does not declare everyone else dead, and
// Plan does nothing for a member that is not in its own view.
//
// Heartbeats that are too large (MaxHeartbeatBytes), do not parse, or carry
// a bad name, instance or partition are counted (Stats.Rejected) and
// ignored.
//
// Assign, Plan and View's methods are pure: no I/O, no clock, no
// goroutines. A Membership's methods are safe for concurrent use.
package member
