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
