// Command idle-bench measures idle-worker end to end, each figure next to a
// baseline measured in the same run, and prints a table (also written as
// JSON, see -out).
//
// It starts an embedded nats-server with JetStream on 127.0.0.1 (random
// port, temporary store) and runs eight sections on it; a ninth runs the
// built idle-worker binary instead, and a tenth runs three workers on it
// (and on a second server, with the partition mappings):
//
//  1. Ingest. Publishers on their own connections send -messages heartbeats
//     over -keys distinct keys, once with empty bodies and once with
//     {"idle_timeout_ms":N}. The baseline is a plain subscriber that only
//     counts what it receives, through a queue as long as the worker's
//     (the limit of one connection); the worker's rate counts heartbeats
//     it applied (Stats().Heartbeats). Publishers keep at most -window
//     messages ahead of the consumer, so the figure is a sustained rate;
//     slow-consumer drops are still counted (sub.Dropped(),
//     Stats().Dropped) and reported. Each is measured -rounds times,
//     alternating which goes first, and the best round counts: on a shared
//     machine noise only ever slows a run down.
//
//  2. Timeliness. -timely backends heartbeat once with timeouts chosen so
//     that their deadlines fall within -spread, -lead after the start. A
//     subscriber stamps each quiesce event on arrival; lateness = arrival -
//     deadline, where the deadline is the heartbeat's publish time (before
//     the worker received it: conservative) plus its timeout, both on this
//     program's monotonic clock. Heartbeats are sent at most -timely-window
//     ahead of the worker, so none waits long in a queue. Early events are
//     counted; there must be none. The events of -timely-rounds rounds are
//     pooled. Alongside: the lateness split into its three legs (through a
//     bus.Observer: the worker shares this process and its clock), a bare
//     1 ms timer in this process as the floor any timer-driven decision
//     has, and the GC cycles meanwhile. The default subscriber (-subscriber
//     raw) speaks the NATS protocol itself and allocates nothing, so the
//     observer adds no garbage to the process under test; -subscriber nats
//     uses a nats.go subscription instead.
//
//  3. The NATS-native alternative: the same backends as keys of a KV bucket
//     with per-key TTLs and limit markers (LimitMarkerTTL), created with
//     kv.Create and jetstream.KeyTTL by -kv-concurrency goroutines and
//     watched for the expiry markers. KV TTLs are whole seconds, so each
//     key's TTL is rounded up to put every deadline within one second,
//     -kv-lead after the start.
//
//  4. Memory. Heap bytes per tracked backend in a coordinator.Coordinator
//     holding -memory-backends backends, after runtime.GC, with the bytes
//     of the key copies measured and counted apart.
//
//  5. Shutdown. Time for Worker.Run to return after its context is
//     cancelled, and then for its connection to drain, with
//     -shutdown-backends backends tracked.
//
//  6. Admin under load. A worker tracks -admin-backends backends; one
//     connection sends a heartbeat request every -admin-interval and
//     measures its round trip, for -admin-phase without admin calls, then
//     while -admin-clients clients each list {"limit":1000} in a loop with
//     a literal-prefix match ("adm-7.gopls.>"), then with a wildcard match
//     ("*.gopls.>", which visits every key). The baseline is the first
//     phase, in the same run. Keys are adm-I.gopls.pP.N: 1000 instances
//     I, 5 pools P (blocks of 1000 backends take turns). Last, as it leaves
//     a fifth of the backends draining: one P.admin.quiesce of
//     "*.gopls.p0.>", a wildcard pattern (the walk visits every key)
//     matching exactly a fifth (200,000 of 1M), timed from request to
//     reply, with the prober running until a subscriber has counted every
//     event (each once, none missing). The backends' idle timeout is an
//     hour, so only the forced drains fire.
//
//  7. Herd. A worker as operators run it by default (the store on one
//     JetStream stream through store.Open with its defaults; the default
//     policy) with QuiesceRate -herd-rate tracks -herd-backends backends
//     that heartbeated once, each asking for the time left until one common
//     deadline, so that all fall due within a millisecond. A subscriber
//     stamps each event: the emission spread (first to last
//     arrival; by design about (backends - rate/10) / rate), early, missing
//     and duplicate events, and the lateness from each deadline (which
//     grows through the herd by design). Stats().HeldBack is polled for its
//     maximum. A prober heartbeats 1000 other backends every
//     -admin-interval, for -herd-baseline just before the deadlines (the
//     baseline) and then until the last event.
//
//  8. Durable. The default configuration (store.Open on one stream, as
//     cmd/idle-worker wires it: WorkerConfig.Store) beside the memory path
//     (IDLE_PERSIST=off: no Store), both with QuiesceRate 0 (unlimited) and
//     the default policy, and the store's limit, all in the same run. First
//     the limit: a stream created by store.Open (so configured exactly as
//     the worker's: input transform P.store.qout.<p>.<K> -> P.quiesce.<K>,
//     RePublish to P.quiesce.<K>), into which a bare
//     jetstream.PublishMsgAsync publisher (the store's window) stores the
//     burst's -durable-backends events (the worker's JSON for the same
//     keys) with Nats-Msg-Id, unfenced, on the store's event subjects,
//     timed until a core subscriber on P.quiesce.> saw the last one. Then a
//     burst (-durable-backends due within -durable-burst) and a spread
//     (within -durable-spread) on each worker, stamped by a subscriber.
//     Then -durable-register new backends' first heartbeat requests from
//     -durable-conns connections on each worker, each request timed to its
//     reply (a durable worker answers only once the record is stored, so
//     answered means durable). Last, the durable worker's Run is cancelled
//     and a new one started on the same stream, timed until Ready, with
//     the backends it restored. -durable-parts runs some of these alone
//     (to profile one, say).
//
//  9. Process. The built idle-worker binary (-worker-bin; make bench
//     builds it first) as operators run it, with its embedded nats-server
//     and default store in a directory, driven only from outside
//     (internal/workerproc): -process-backends new backends' first
//     heartbeat requests at a target of -process-rate from
//     -process-conns connections with at most -process-window
//     unanswered; VmRSS and VmHWM from /proc right after the last reply
//     and -process-settle later; SIGTERM and a restart on the same store,
//     timed from the new process's start to /readyz and to its tracked
//     count (/metrics) reaching every backend. Then the same on a fresh
//     store, killed with SIGKILL right after the last reply: the restart
//     must track every backend whose reply arrived at least 50 ms before
//     the kill (checked key by key with idle.admin.list).
//
//  10. Cluster. Three clustered workers in this process (bus.WorkerConfig
//     Cluster), each on its own connection with its own store.Open on one
//     stream, each with member.Start and cluster.Controller beside it as
//     cmd/idle-worker wires them (IDLE_OWNER_TIMEOUT
//     -cluster-owner-timeout, default 1 s; a membership heartbeat every
//     quarter of it). In process rather than the binary: the death is
//     still found by the real detection path, and one clock and the
//     workers' counters give each leg of the takeover. -cluster-backends
//     backends heartbeat once, their deadlines within -cluster-spread
//     from -cluster-lead after the start (spread, so that their events
//     stay within what one stream stores per second: the lateness is the
//     takeover's, not a herd's); -cluster-kill-at from the first
//     deadline one worker dies (its connection closed: the
//     server drops it at once, as on kill -9), or hands over (its
//     controller stopped, as on SIGTERM: release, leave), or dies with
//     the partition mappings loaded (IDLE_MAPPED: no warm state). A
//     subscriber stamps every event with its id: for the leaving worker's
//     due backends, kill -> first and last event and lateness from each
//     deadline; for all, none missing, early or with a second id. Then
//     ingest: section 1's publisher sends -cluster-messages heartbeats
//     over -keys keys to 1 and 3 workers sharing the partitions evenly,
//     each receiving every heartbeat, and again with the mappings loaded
//     into a second server and a Router (each receives its partitions'
//     only): applied heartbeats/s summed, what each worker received, and
//     this process's CPU per heartbeat.
//
// Every section also reports how much of the machine other processes used
// meanwhile (from /proc, on Linux).
//
// Each target of the performance issues is checked and printed as met or
// missed. -quick shrinks every size for a smoke run; sizes given explicitly
// win over -quick. -only runs the named sections alone (for example
// -only admin).
//
// Usage:
//
//	go run ./cmd/idle-bench [-quick] [-out bench-results.json] [-keys N] [-messages N] ...
//	go run ./cmd/idle-bench -only admin   # section 6 alone, about 20 s
//	go run ./cmd/idle-bench -only herd    # section 7 alone, about 15 s
//	go run ./cmd/idle-bench -only durable # section 8 alone
//	make build && go run ./cmd/idle-bench -only process # section 9 alone
//	go run ./cmd/idle-bench -only cluster # section 10 alone, about 2 min
//	go run ./cmd/idle-bench -help     # every flag
//	go run ./cmd/idle-bench -cpuprofile cpu.prof -memprofile mem.prof   # for go tool pprof
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "idle-bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if _, err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "idle-bench:", err)
		os.Exit(1)
	}
}
