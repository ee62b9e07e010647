package workerproc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Errors of a Process.
var (
	// ErrExited: the process exited while it was waited on to serve.
	ErrExited = errors.New("workerproc: idle-worker exited")
	// ErrRunning: Restart was called while the process still runs.
	ErrRunning = errors.New("workerproc: idle-worker still running")
)

// exitBound bounds the wait for the process to exit after SIGKILL.
const exitBound = 10 * time.Second

// readyPoll is the pause between two looks at /readyz.
const readyPoll = 2 * time.Millisecond

// Config says how to run the binary.
type Config struct {
	// Binary is the path of the idle-worker binary.
	Binary string
	// Dir holds what outlives a process: the JetStream store (Dir/store)
	// and the process's TMPDIR (Dir/tmp). The caller creates and removes
	// it; restarts on the same Dir find the same store.
	Dir string
	// Env is set on top of the package's environment (see Start), so it
	// may override any of it but the addresses, which the package picks.
	Env map[string]string
}

// Process is one run of the binary. Its methods may be called from several
// goroutines.
type Process struct {
	cfg      Config
	natsAddr string // host:port of the embedded nats-server
	httpAddr string // host:port of /metrics, /readyz
	cmd      *exec.Cmd
	out      *tail
	started  time.Time
	done     chan struct{} // closed when the process has exited
	waitErr  error         // valid once done is closed
	http     *http.Client
	killOnce sync.Once
}

// Start runs cfg.Binary with an embedded nats-server (IDLE_NATS_URL empty)
// on a free 127.0.0.1 port, its JetStream store in cfg.Dir/store, HTTP on
// another free port, text logs at level info and cfg.Env on top. It does
// not wait for the process to serve: see WaitReady. The caller must Close
// (or Kill, or Terminate) the process.
func Start(cfg Config) (*Process, error) {
	if cfg.Binary == "" || cfg.Dir == "" {
		return nil, errors.New("workerproc: Config needs Binary and Dir")
	}
	natsPort, err := freePort()
	if err != nil {
		return nil, err
	}
	httpPort, err := freePort()
	if err != nil {
		return nil, err
	}
	return start(cfg, net.JoinHostPort("127.0.0.1", strconv.Itoa(natsPort)), net.JoinHostPort("127.0.0.1", strconv.Itoa(httpPort)))
}

// Restart runs the binary again with p's configuration, store and
// addresses, once p has exited (after Kill or Terminate).
func (p *Process) Restart() (*Process, error) {
	if !p.Exited() {
		return nil, ErrRunning
	}
	return start(p.cfg, p.natsAddr, p.httpAddr)
}

func start(cfg Config, natsAddr, httpAddr string) (*Process, error) {
	tmp := filepath.Join(cfg.Dir, "tmp")
	store := filepath.Join(cfg.Dir, "store")
	for _, d := range []string{tmp, store} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("workerproc: %w", err)
		}
	}
	vars := map[string]string{
		"PATH":                    os.Getenv("PATH"),
		"TMPDIR":                  tmp,
		"IDLE_LOG_LEVEL":          "info",
		"IDLE_LOG_FORMAT":         "text",
		"IDLE_EMBEDDED_STORE_DIR": store,
	}
	for k, v := range cfg.Env {
		vars[k] = v
	}
	vars["IDLE_NATS_URL"] = ""
	vars["IDLE_EMBEDDED_LISTEN"] = natsAddr
	vars["IDLE_HTTP_ADDR"] = httpAddr
	cmd := exec.Command(cfg.Binary)
	for k, v := range vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := &Process{
		cfg: cfg, natsAddr: natsAddr, httpAddr: httpAddr, cmd: cmd,
		out:  newTail(64 << 10),
		done: make(chan struct{}),
		http: &http.Client{Timeout: 5 * time.Second},
	}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("workerproc: start %s: %w", cfg.Binary, err)
	}
	p.started = time.Now()
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// URL is the embedded nats-server's client URL.
func (p *Process) URL() string { return "nats://" + p.natsAddr }

// HTTPAddr is the host:port of /metrics, /healthz and /readyz.
func (p *Process) HTTPAddr() string { return p.httpAddr }

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Started is when the process was started.
func (p *Process) Started() time.Time { return p.started }

// Done is closed once the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ExitErr is what waiting for the process returned (nil for exit status 0);
// it is valid once Exited.
func (p *Process) ExitErr() error {
	<-p.done
	return p.waitErr
}

// Output returns the last 64 KiB the process wrote to stdout and stderr.
func (p *Process) Output() string { return p.out.String() }

// WaitReady polls /readyz until it answers 200 and returns the time from
// the start of the process until then. It fails when ctx is done or the
// process exits first (wrapping ErrExited, with the tail of its output).
func (p *Process) WaitReady(ctx context.Context) (time.Duration, error) {
	url := "http://" + p.httpAddr + "/readyz"
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return 0, err
		}
		if resp, err := p.http.Do(req); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(p.started), nil
			}
		}
		select {
		case <-p.done:
			return 0, p.exitedErr("before it was ready")
		case <-ctx.Done():
			return 0, fmt.Errorf("workerproc: not ready after %v: %w", time.Since(p.started).Round(time.Millisecond), ctx.Err())
		case <-time.After(readyPoll):
		}
	}
}

func (p *Process) exitedErr(when string) error {
	return fmt.Errorf("%w %s (%v); its output ends:\n%s", ErrExited, when, p.waitErr, p.out.Last(4096))
}

// Kill sends SIGKILL and waits for the process to exit. Killing an exited
// process does nothing.
func (p *Process) Kill() error {
	if p.Exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("workerproc: SIGKILL: %w", err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(exitBound):
		return fmt.Errorf("workerproc: pid %d still running %v after SIGKILL", p.Pid(), exitBound)
	}
}

// Terminate sends SIGTERM and waits up to timeout for the process to exit;
// it returns how long that took. A process still running then is killed,
// and one that exits with a non-zero status is an error too.
func (p *Process) Terminate(timeout time.Duration) (time.Duration, error) {
	t0 := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return 0, fmt.Errorf("workerproc: SIGTERM: %w", err)
	}
	select {
	case <-p.done:
	case <-time.After(timeout):
		_ = p.Kill()
		return time.Since(t0), fmt.Errorf("workerproc: still running %v after SIGTERM; killed", timeout)
	}
	took := time.Since(t0)
	if p.waitErr != nil {
		return took, fmt.Errorf("workerproc: exit after SIGTERM: %w; its output ends:\n%s", p.waitErr, p.out.Last(4096))
	}
	return took, nil
}

// Close kills the process if it still runs. It is safe to call more than
// once and after Kill or Terminate.
func (p *Process) Close() error {
	var err error
	p.killOnce.Do(func() { err = p.Kill() })
	return err
}

// freePort returns a loopback port that nothing listened on a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("workerproc: free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	return port, l.Close()
}
