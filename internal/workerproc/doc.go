// Package workerproc runs the built idle-worker binary as a child process
// and drives it only through what an operator has: its environment, signals,
// /proc, its HTTP endpoints (/readyz, /metrics) and the wire contract of
// subjects.md (heartbeat requests, idle.admin.list). It knows nothing of how
// the worker stores its registry, so the same code measures whichever store
// is the default. The integration tests and cmd/idle-bench share it; its API
// returns errors and never takes a testing.TB.
//
// A Process is one run of the binary with an embedded nats-server on a
// loopback port and its JetStream store in a directory that outlives the
// process, so a restart finds what the previous run stored:
//
//	p, err := workerproc.Start(workerproc.Config{Binary: bin, Dir: dir})
//	if err != nil { ... }
//	defer p.Close()
//	if _, err := p.WaitReady(ctx); err != nil { ... }
//	mem, err := p.Memory()          // VmRSS and VmHWM from /proc/<pid>/status
//	err = p.Kill()                  // SIGKILL, then waits for the exit
//	q, err := p.Restart()           // the same store and addresses
//	n, err := q.Tracked(ctx)        // backends tracked, from /metrics
//
// A Sender registers many backends at once: first heartbeats sent as
// requests over a few connections, a bounded window of them unanswered, at
// a target rate, with the arrival time of each reply recorded. Keys names
// the backends in groups of GroupSize, so that TrackedKeys can ask
// idle.admin.list for each group and say exactly which backends the worker
// tracks, and Tally compares that with what was answered before a crash:
//
//	keys := workerproc.Keys{Instance: "crash"}
//	s, err := workerproc.NewSender(workerproc.SendConfig{URL: p.URL(), Keys: keys, N: 100_000})
//	res, err := s.Run(ctx)
//	killed := time.Since(s.Start())
//	_ = p.Kill()
//	q, _ := p.Restart()
//	_, _ = q.WaitReady(ctx)
//	tracked, err := workerproc.TrackedKeys(ctx, nc, subjects, keys, 100_000)
//	out := workerproc.Tally(100_000, s.ReplyAt, tracked, killed, 50*time.Millisecond)
//
// Every wait is bounded, by its context or by a timeout of its own.
package workerproc
