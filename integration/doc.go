// Package integration holds the end-to-end tests of idle-worker. It has no
// code of its own: its tests run a real bus.Worker, or the idle-worker binary
// built from ./cmd/idle-worker, against an embedded nats-server listening on
// 127.0.0.1, and check the wire contract of subjects.md over real NATS
// connections.
//
// Every test starts its own server on a random port through startServer, and
// every wait is bounded: NextMsg with a timeout, a select with time.After, or
// waitFor, which polls a condition until a deadline. Where a test must show
// that something does not happen (no second quiesce while a backend drains,
// no quiesce before the deadline), it waits a bounded window and expects
// nats.ErrTimeout.
//
// The in-process tests use idle timeouts of a few hundred milliseconds. A
// quiesce must never arrive before its timeout has passed since the last
// heartbeat was sent, measured on the test's monotonic clock, and must arrive
// within a generous slack after it, which catches a timer that never fires or
// a slow fixed poll. A monitor goroutine measures how long the test process
// was starved of CPU, and that time is added to the slack, so a busy machine
// does not fail the tests while a late timer on a quiet one still does.
//
// The binary tests build ./cmd/idle-worker once, in TestMain, and run it with
// a controlled environment. The crash and restart tests run it through
// internal/workerproc, which drives it only from outside (signals, /proc,
// /readyz, /metrics, the wire contract), so they hold whatever the store.
// The chaos and cluster tests run nats-server as a process too (also built
// in TestMain); the cluster tests (cluster_test.go) start three as one
// JetStream cluster and several workers sharing a prefix, and kill, freeze
// and restart them under 2,000 backends (-short skips them).
//
// Run them with
//
//	go test -race -count=1 ./integration
package integration
