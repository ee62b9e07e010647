package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/internal/logtest"
)

// built is the idle-worker binary that TestMain builds once per process.
var built struct {
	path   string
	output string
	err    error
}

func TestMain(m *testing.M) {
	stalls.start()
	// Build before any test runs, so the compiler does not compete with the
	// timing tests for the CPU.
	dir, err := os.MkdirTemp("", "idle-worker-bin-")
	if err != nil {
		built.err = err
	} else {
		built.path, built.output, built.err = buildBinary(dir)
		chaosServerBin.path, chaosServerBin.output, chaosServerBin.err = chaosBuildServer(dir)
	}
	code := m.Run()
	if dir != "" {
		_ = os.RemoveAll(dir)
	}
	os.Exit(code)
}

// buildBinary builds ./cmd/idle-worker of this module into dir.
func buildBinary(dir string) (string, string, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return "", "", fmt.Errorf("the go command is needed to build idle-worker: %w", err)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		return "", "", err
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return "", "", fmt.Errorf("module root: %w", err)
	}
	out := filepath.Join(dir, "idle-worker")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", out, "./cmd/idle-worker")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	b, err := cmd.CombinedOutput()
	if err != nil {
		return "", string(b), fmt.Errorf("go build ./cmd/idle-worker: %w", err)
	}
	return out, string(b), nil
}

// proc is a running idle-worker process.
type proc struct {
	cmd     *exec.Cmd
	stdout  *logtest.Buffer
	stderr  *logtest.Buffer
	done    chan struct{} // closed when the process has exited
	waitErr error         // valid once done is closed
	started time.Time
	tmpDir  string // the process's TMPDIR
}

// startBinary runs the idle-worker binary with a controlled environment:
// PATH, HOME, a TMPDIR of the test's own, a few IDLE_* defaults for fast and
// readable tests, and env on top. It kills the process when the test ends
// and prints its output when the test failed.
func startBinary(t *testing.T, env map[string]string) *proc {
	t.Helper()
	return startBinaryArgs(t, env)
}

// startBinaryArgs is startBinary with command-line arguments.
func startBinaryArgs(t *testing.T, env map[string]string, args ...string) *proc {
	t.Helper()
	p, err := launchBinary(t, env, args...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// launchBinary is startBinaryArgs for a process that owner, which may be
// a parent of the calling test, kills and reports on when it ends.
func launchBinary(owner testing.TB, env map[string]string, args ...string) (*proc, error) {
	if built.err != nil {
		return nil, fmt.Errorf("building idle-worker: %w\n%s", built.err, built.output)
	}
	tmpDir := owner.TempDir()
	vars := map[string]string{
		"PATH":                  os.Getenv("PATH"),
		"HOME":                  os.Getenv("HOME"),
		"TMPDIR":                tmpDir,
		"IDLE_LOG_LEVEL":        "info",
		"IDLE_LOG_FORMAT":       "text",
		"IDLE_CONNECT_TIMEOUT":  "2s",
		"IDLE_SHUTDOWN_TIMEOUT": "3s",
	}
	for k, v := range env {
		vars[k] = v
	}
	cmd := exec.Command(built.path, args...)
	for k, v := range vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := &proc{cmd: cmd, stdout: new(logtest.Buffer), stderr: new(logtest.Buffer), done: make(chan struct{}), tmpDir: tmpDir}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start idle-worker: %w", err)
	}
	p.started = time.Now()
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	owner.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			select {
			case <-p.done:
			case <-time.After(bound):
				owner.Errorf("idle-worker (pid %d) still running %v after SIGKILL", cmd.Process.Pid, bound)
			}
		}
		if owner.Failed() {
			owner.Logf("idle-worker environment: %q", cmd.Env)
			owner.Logf("idle-worker stdout:\n%s", p.stdout)
			owner.Logf("idle-worker stderr:\n%s", p.stderr)
		}
	})
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitCode waits up to timeout for the process to exit and returns its exit
// status.
func (p *proc) exitCode(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("idle-worker still running %v later; want it to exit", timeout)
	}
	if p.waitErr == nil {
		return 0
	}
	var ee *exec.ExitError
	if !errors.As(p.waitErr, &ee) {
		t.Fatalf("waiting for idle-worker: %v", p.waitErr)
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		t.Fatalf("idle-worker was killed by %v; want a normal exit", ws.Signal())
	}
	return ee.ExitCode()
}

func (p *proc) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// freePort returns a loopback port that nothing listened on a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return port
}

// connectTo waits until a NATS server accepts connections at url, failing
// early if p exits.
func connectTo(t *testing.T, p *proc, url string) *nats.Conn {
	t.Helper()
	var nc *nats.Conn
	waitFor(t, 30*time.Second, func() bool {
		if p.exited() {
			t.Fatalf("idle-worker exited (%v) before accepting connections", p.waitErr)
		}
		c, err := nats.Connect(url, nats.Timeout(250*time.Millisecond), nats.NoReconnect())
		if err != nil {
			return false
		}
		nc = c
		return true
	})
	t.Cleanup(nc.Close)
	return nc
}

// waitServing waits until the worker in p answers a micro PING on nc.
func waitServing(t *testing.T, p *proc, nc *nats.Conn) {
	t.Helper()
	ping, _ := micro.ControlSubject(micro.PingVerb, bus.ServiceName, "")
	waitFor(t, 30*time.Second, func() bool {
		if p.exited() {
			t.Fatalf("idle-worker exited (%v) before serving", p.waitErr)
		}
		_, err := nc.Request(ping, nil, 250*time.Millisecond)
		return err == nil
	})
	// With a store, the worker decides once it holds its partitions: a
	// worker alone on its prefix claims them all.
	waitFor(t, 30*time.Second, func() bool {
		s, err := serviceStats(nc)
		return err == nil && int64(s.Partitions) == s.PartitionsOwned
	})
}

// serviceStats reads the worker's counters from the micro stats endpoint.
func serviceStats(nc *nats.Conn) (bus.Stats, error) {
	subj, _ := micro.ControlSubject(micro.StatsVerb, bus.ServiceName, "")
	m, err := nc.Request(subj, nil, 250*time.Millisecond)
	if err != nil {
		return bus.Stats{}, err
	}
	var st struct {
		Endpoints []struct {
			Data bus.Stats `json:"data"`
		} `json:"endpoints"`
	}
	if err := json.Unmarshal(m.Data, &st); err != nil || len(st.Endpoints) == 0 {
		return bus.Stats{}, fmt.Errorf("stats: %w (%s)", err, m.Data)
	}
	return st.Endpoints[0].Data, nil
}
