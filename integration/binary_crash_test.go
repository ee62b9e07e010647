package integration

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/internal/workerproc"
)

// crashBackends is how many new backends each crash test registers.
const crashBackends = 100_000

// The binary, with its embedded server and the default store in a
// directory, is killed with SIGKILL right after its last reply to 100,000
// first heartbeats, or midway through the replies; restarted on the same
// store, it tracks every backend whose reply arrived at least 50 ms before
// the kill. The heartbeats go as fast as the sender goes, a window of them
// in flight over a few connections. Not parallel: it takes the machine.
func TestBinaryCrashKeepsAnswered(t *testing.T) {
	if built.err != nil {
		t.Fatalf("building idle-worker: %v\n%s", built.err, built.output)
	}
	tests := []struct {
		name   string
		killAt int // kill as the killAt-th ok reply arrives; crashBackends: after the last
	}{
		{"kill after the last reply", crashBackends},
		{"kill midway through the replies", crashBackends / 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			p := startProc(t, workerproc.Config{Binary: built.path, Dir: t.TempDir()})
			if _, err := p.WaitReady(ctx); err != nil {
				t.Fatal(err)
			}
			keys := workerproc.Keys{Instance: "crash"}
			s, err := workerproc.NewSender(workerproc.SendConfig{URL: p.URL(), Keys: keys, N: crashBackends, Rate: -1})
			if err != nil {
				t.Fatal(err)
			}
			reached := s.WhenAnswered(tt.killAt)
			type sent struct {
				res workerproc.SendResult
				err error
			}
			done := make(chan sent, 1)
			go func() {
				res, err := s.Run(ctx)
				done <- sent{res, err}
			}()
			var res sent
			select {
			case <-reached:
			case res = <-done:
				t.Fatalf("the sender stopped before %d replies: %v", tt.killAt, res.err)
			}
			killed := time.Since(s.Start())
			if err := p.Kill(); err != nil {
				t.Fatal(err)
			}
			res = <-done
			switch {
			case tt.killAt == crashBackends && res.err != nil:
				t.Fatalf("sender: %v", res.err)
			case tt.killAt < crashBackends && !errors.Is(res.err, workerproc.ErrIncomplete):
				t.Fatalf("sender after a kill midway: got %v; want it incomplete", res.err)
			}
			t.Logf("sent %d, answered %d at %.0f/s until the kill at %v", res.res.Sent, res.res.Answered, res.res.PerSecond, killed.Round(time.Millisecond))

			q, err := p.Restart()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { logProc(t, q) })
			ready, err := q.WaitReady(ctx)
			if err != nil {
				t.Fatal(err)
			}
			nc, err := nats.Connect(q.URL(), nats.Timeout(bound))
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			tracked, err := workerproc.TrackedKeys(ctx, nc, bus.MustSubjects(prefix), keys, crashBackends)
			if err != nil {
				t.Fatal(err)
			}
			out := workerproc.Tally(crashBackends, s.ReplyAt, tracked, killed, workerproc.DefaultMargin)
			t.Logf("restart ready %v after the start; %v", ready.Round(time.Millisecond), out)
			if out.Lost() > 0 {
				t.Errorf("%d of %d backends answered at least %v before the kill are not tracked after the restart (first: %v)",
					out.Lost(), out.Required, out.Margin, missingKeys(keys, out.Missing))
			}
			if out.Required == 0 {
				t.Errorf("no backend was answered %v before the kill; the test checked nothing", out.Margin)
			}
		})
	}
}

// Stopped with SIGTERM after 20,000 first heartbeats were answered, the
// binary exits 0 and, restarted on the same store, tracks every one of
// them: the /metrics count, the restored gauge and idle.admin.list agree.
func TestBinaryRestartAfterSIGTERM(t *testing.T) {
	if built.err != nil {
		t.Fatalf("building idle-worker: %v\n%s", built.err, built.output)
	}
	const n = 20_000
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := startProc(t, workerproc.Config{Binary: built.path, Dir: t.TempDir()})
	if _, err := p.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	keys := workerproc.Keys{Instance: "term"}
	s, err := workerproc.NewSender(workerproc.SendConfig{URL: p.URL(), Keys: keys, N: n, Rate: -1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := p.Tracked(ctx); err != nil || got != n {
		t.Fatalf("tracked before the stop: %d, %v; want %d", got, err, n)
	}
	mem, err := p.Memory()
	if err != nil || mem.RSS <= 0 || mem.HWM < mem.RSS {
		t.Errorf("memory: %+v, %v; want a resident set, the high-water mark at least as large", mem, err)
	}
	took, err := p.Terminate(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	q, err := p.Restart()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logProc(t, q) })
	ready, err := q.WaitReady(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stopped %v after SIGTERM; restart ready %v after the start; RSS %d MiB before", took.Round(time.Millisecond), ready.Round(time.Millisecond), mem.RSS>>20)
	if got, err := q.Tracked(ctx); err != nil || got != n {
		t.Errorf("tracked after the restart: %d, %v; want %d", got, err, n)
	}
	if got, err := q.Metric(ctx, workerproc.MetricRestored); err != nil || got != n {
		t.Errorf("%s: %v, %v; want %d", workerproc.MetricRestored, got, err, n)
	}
	nc, err := nats.Connect(q.URL(), nats.Timeout(bound))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	tracked, err := workerproc.TrackedKeys(ctx, nc, bus.MustSubjects(prefix), keys, n)
	if err != nil {
		t.Fatal(err)
	}
	// Every reply arrived before the SIGTERM, so every backend is required.
	if out := workerproc.Tally(n, s.ReplyAt, tracked, time.Since(s.Start()), 0); out.Lost() > 0 || out.Required != n {
		t.Errorf("after a graceful stop: %v; want all %d", out, n)
	}
}

// startProc starts the binary through workerproc, kills it when the test
// ends and prints its output then if the test failed.
func startProc(t *testing.T, cfg workerproc.Config) *workerproc.Process {
	t.Helper()
	p, err := workerproc.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logProc(t, p) })
	return p
}

// logProc kills p and, when the test failed, prints its output.
func logProc(t *testing.T, p *workerproc.Process) {
	if err := p.Close(); err != nil {
		t.Error(err)
	}
	if t.Failed() {
		t.Logf("idle-worker (pid %d) output:\n%s", p.Pid(), p.Output())
	}
}

// missingKeys names the backends of indexes.
func missingKeys(k workerproc.Keys, indexes []int) []string {
	out := make([]string, len(indexes))
	for j, i := range indexes {
		out[j] = k.Key(i)
	}
	return out
}
