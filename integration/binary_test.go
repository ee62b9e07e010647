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
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/internal/logtest"
	"github.com/idle-worker/idle-worker/partition"
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
	if built.err != nil {
		t.Fatalf("building idle-worker: %v\n%s", built.err, built.output)
	}
	tmpDir := t.TempDir()
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
		t.Fatalf("start idle-worker: %v", err)
	}
	p.started = time.Now()
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			select {
			case <-p.done:
			case <-time.After(bound):
				t.Errorf("idle-worker (pid %d) still running %v after SIGKILL", cmd.Process.Pid, bound)
			}
		}
		if t.Failed() {
			t.Logf("idle-worker environment: %q", cmd.Env)
			t.Logf("idle-worker stdout:\n%s", p.stdout)
			t.Logf("idle-worker stderr:\n%s", p.stderr)
		}
	})
	return p
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
}

// A bad configuration value makes idle-worker exit with status 2 and name
// the variable, before it listens or connects anywhere.
func TestBinaryBadConfig(t *testing.T) {
	t.Parallel()
	// Where the configuration names no embedded listener, an unreachable
	// server keeps a wrongly accepted configuration from going anywhere:
	// the process would exit 1, not 2.
	dead := fmt.Sprintf("nats://127.0.0.1:%d", freePort(t))
	anyPort := fmt.Sprintf("0.0.0.0:%d", freePort(t))
	tests := []struct {
		name    string
		env     map[string]string
		wantVar string
	}{
		{"default timeout not a duration", map[string]string{"IDLE_DEFAULT_TIMEOUT": "abc"}, "IDLE_DEFAULT_TIMEOUT"},
		{"negative default timeout", map[string]string{"IDLE_DEFAULT_TIMEOUT": "-1s"}, "IDLE_DEFAULT_TIMEOUT"},
		{"negative max timeout", map[string]string{"IDLE_MAX_TIMEOUT": "-1s"}, "IDLE_MAX_TIMEOUT"},
		{"zero max timeout", map[string]string{"IDLE_MAX_TIMEOUT": "0s"}, "IDLE_MAX_TIMEOUT"},
		{"default above max", map[string]string{"IDLE_DEFAULT_TIMEOUT": "2h", "IDLE_MAX_TIMEOUT": "1h"}, "IDLE_DEFAULT_TIMEOUT"},
		{"unknown log level", map[string]string{"IDLE_LOG_LEVEL": "loud"}, "IDLE_LOG_LEVEL"},
		{"unknown log format", map[string]string{"IDLE_LOG_FORMAT": "xml"}, "IDLE_LOG_FORMAT"},
		{"prefix with empty token", map[string]string{"IDLE_SUBJECT_PREFIX": "a..b"}, "IDLE_SUBJECT_PREFIX"},
		{"prefix with wildcard", map[string]string{"IDLE_SUBJECT_PREFIX": "idle.*"}, "IDLE_SUBJECT_PREFIX"},
		{"prefix with space", map[string]string{"IDLE_SUBJECT_PREFIX": "my idle"}, "IDLE_SUBJECT_PREFIX"},
		{"negative max backends", map[string]string{"IDLE_MAX_BACKENDS": "-1"}, "IDLE_MAX_BACKENDS"},
		{"max backends not a number", map[string]string{"IDLE_MAX_BACKENDS": "many"}, "IDLE_MAX_BACKENDS"},
		{"max body too small", map[string]string{"IDLE_MAX_BODY": "1"}, "IDLE_MAX_BODY"},
		{"reply prefix on the registry", map[string]string{"IDLE_REPLY_PREFIXES": "_INBOX.,$KV."}, "IDLE_REPLY_PREFIXES"},
		{"reply prefix under the own prefix", map[string]string{"IDLE_REPLY_PREFIXES": "idle.state."}, "IDLE_REPLY_PREFIXES"},
		{"queue length not a number", map[string]string{"IDLE_QUEUE_LENGTH": "x"}, "IDLE_QUEUE_LENGTH"},
		{"zero queue length", map[string]string{"IDLE_QUEUE_LENGTH": "0"}, "IDLE_QUEUE_LENGTH"},
		{"zero connect timeout", map[string]string{"IDLE_CONNECT_TIMEOUT": "0s"}, "IDLE_CONNECT_TIMEOUT"},
		{"negative shutdown timeout", map[string]string{"IDLE_SHUTDOWN_TIMEOUT": "-5s"}, "IDLE_SHUTDOWN_TIMEOUT"},
		{"allow remote not a boolean", map[string]string{"IDLE_EMBEDDED_ALLOW_REMOTE": "perhaps"}, "IDLE_EMBEDDED_ALLOW_REMOTE"},
		{"embedded listen on all interfaces", map[string]string{"IDLE_NATS_URL": "", "IDLE_EMBEDDED_LISTEN": anyPort}, "IDLE_EMBEDDED_LISTEN"},
		{"embedded listen without a port", map[string]string{"IDLE_NATS_URL": "", "IDLE_EMBEDDED_LISTEN": "127.0.0.1"}, "IDLE_EMBEDDED_LISTEN"},
		{"embedded listen port out of range", map[string]string{"IDLE_NATS_URL": "", "IDLE_EMBEDDED_LISTEN": "127.0.0.1:70000"}, "IDLE_EMBEDDED_LISTEN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{"IDLE_NATS_URL": dead}
			for k, v := range tt.env {
				env[k] = v
			}
			p := startBinary(t, env)
			if code := p.exitCode(t, 10*time.Second); code != 2 {
				t.Errorf("exit status: got %d; want 2", code)
			}
			stderr := p.stderr.String()
			if !strings.Contains(stderr, tt.wantVar) {
				t.Errorf("stderr %q: want it to name %s", stderr, tt.wantVar)
			}
			if !strings.Contains(stderr, "bad configuration") {
				t.Errorf("stderr %q: want it to say \"bad configuration\"", stderr)
			}
		})
	}
}

// With IDLE_NATS_URL empty, idle-worker runs its own nats-server, with
// JetStream, on IDLE_EMBEDDED_LISTEN, and serves there.
func TestBinaryEmbeddedServer(t *testing.T) {
	t.Parallel()
	const timeout = 200 * time.Millisecond
	port := freePort(t)
	p := startBinary(t, map[string]string{
		"IDLE_NATS_URL":        "",
		"IDLE_EMBEDDED_LISTEN": fmt.Sprintf("127.0.0.1:%d", port),
	})
	nc := connectTo(t, p, fmt.Sprintf("nats://127.0.0.1:%d", port))
	waitServing(t, p, nc)
	events := subscribe(t, nc, prefix+".quiesce.>")

	sent, r := heartbeat(t, nc, "bin.embedded", timeoutBody(timeout))
	if r.IdleTimeoutMS != timeout.Milliseconds() {
		t.Errorf("reply idle_timeout_ms: got %d; want %d", r.IdleTimeoutMS, timeout.Milliseconds())
	}
	ev := nextEvent(t, events, timeout+bound)
	checkTiming(t, sent, ev.arrived, timeout)
	if ev.Key != "bin.embedded" || ev.Reason != "idle_timeout" {
		t.Errorf("event: got key %q reason %q; want bin.embedded idle_timeout", ev.Key, ev.Reason)
	}

	// The embedded server has JetStream, as the command's doc says.
	m := request(t, nc, "$JS.API.INFO", "")
	var info struct {
		Error *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &info); err != nil || info.Error != nil {
		t.Errorf("$JS.API.INFO: got %s; want account info (JetStream enabled)", m.Data)
	}

	p.signal(t, syscall.SIGTERM)
	if code := p.exitCode(t, 5*time.Second); code != 0 {
		t.Errorf("exit status after SIGTERM: got %d; want 0", code)
	}
	// Its JetStream store was a temporary directory, removed on exit.
	left, err := os.ReadDir(p.tmpDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range left {
		t.Errorf("TMPDIR after a clean exit: got %s left behind; want the embedded store removed", e.Name())
	}
}

// An embedded listener on a port already in use makes idle-worker exit 1
// and say why.
func TestBinaryEmbeddedPortInUse(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	p := startBinary(t, map[string]string{"IDLE_NATS_URL": "", "IDLE_EMBEDDED_LISTEN": l.Addr().String()})
	if code := p.exitCode(t, 20*time.Second); code != 1 {
		t.Errorf("exit status: got %d; want 1", code)
	}
	t.Logf("exited after %v", time.Since(p.started))
	if stderr := p.stderr.String(); !strings.Contains(stderr, "address already in use") {
		t.Errorf("stderr %q: want it to say the address is in use", stderr)
	}
	left, err := os.ReadDir(p.tmpDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range left {
		t.Errorf("TMPDIR after a failed start: got %s left behind; want the embedded store removed", e.Name())
	}
}

// With IDLE_NATS_URL set, idle-worker serves on that server, configured by
// its IDLE_* variables.
func TestBinaryExternalServer(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	s := startServer(t)
	p := startBinary(t, map[string]string{
		"IDLE_NATS_URL":        s.ClientURL(),
		"IDLE_SUBJECT_PREFIX":  "acme.idle",
		"IDLE_DEFAULT_TIMEOUT": "300ms",
		"IDLE_MAX_TIMEOUT":     "1m",
		"IDLE_MAX_BODY":        "64",
		"IDLE_MAX_BACKENDS":    "2",
	})
	nc := connect(t, s.ClientURL())
	waitServing(t, p, nc)
	events := subscribe(t, nc, "acme.idle.quiesce.>")

	sent := time.Now()
	var r bus.HeartbeatReply
	decodeOK(t, request(t, nc, "acme.idle.activity.ext.one", ""), &r)
	if r.Key != "ext.one" || r.IdleTimeoutMS != timeout.Milliseconds() {
		t.Errorf("reply: got %+v; want key ext.one, idle_timeout_ms %d (IDLE_DEFAULT_TIMEOUT)", r, timeout.Milliseconds())
	}
	ev := nextEventPrefix(t, events, "acme.idle", timeout+bound)
	checkTiming(t, sent, ev.arrived, timeout)
	if ev.Key != "ext.one" || ev.ConfiguredTimeoutMS != timeout.Milliseconds() {
		t.Errorf("event: got key %q configured_timeout_ms %d; want ext.one %d", ev.Key, ev.ConfiguredTimeoutMS, timeout.Milliseconds())
	}

	refusals := []struct {
		name, subject, body, want string
	}{
		{"IDLE_MAX_TIMEOUT", "acme.idle.activity.ext.one", `{"idle_timeout_ms":60001}`, "exceeds"},
		{"IDLE_MAX_BODY", "acme.idle.activity.ext.one", padBody(`{"idle_timeout_ms":1000,"pad":"`, `"}`, 65), "exceeds"},
		{"IDLE_MAX_BACKENDS", "acme.idle.activity.ext.three", "", "limit"},
	}
	decodeOK(t, request(t, nc, "acme.idle.activity.ext.two", padBody(`{"idle_timeout_ms":60000,"pad":"`, `"}`, 64)), &r)
	for _, rf := range refusals {
		if e := refusal(t, request(t, nc, rf.subject, rf.body)); !strings.Contains(e, rf.want) {
			t.Errorf("%s: got error %q; want it to mention %q", rf.name, e, rf.want)
		}
	}
	var l bus.ListReply
	decodeOK(t, request(t, nc, "acme.idle.admin.list", ""), &l)
	if got := listKeys(l); strings.Join(got, ",") != "ext.one,ext.two" {
		t.Errorf("acme.idle.admin.list: got %v; want ext.one ext.two", got)
	}
	if _, err := nc.Request(prefix+".activity.ext.one", nil, bound); !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("request under the default prefix: got %v; want nats.ErrNoResponders", err)
	}
	if p.exited() {
		t.Fatalf("idle-worker exited: %v", p.waitErr)
	}
}

// SIGTERM or SIGINT stops idle-worker cleanly: it exits 0 within 5 s and
// logs that it stopped.
func TestBinaryGracefulSignal(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		sig     syscall.Signal
		format  string
		stopped string // the log line that says it stopped
	}{
		{"SIGTERM text", syscall.SIGTERM, "text", `msg="idle-worker stopped"`},
		{"SIGTERM json", syscall.SIGTERM, "json", `"msg":"idle-worker stopped"`},
		{"SIGINT text", syscall.SIGINT, "text", `msg="idle-worker stopped"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := startServer(t)
			p := startBinary(t, map[string]string{"IDLE_NATS_URL": s.ClientURL(), "IDLE_LOG_FORMAT": tt.format})
			nc := connect(t, s.ClientURL())
			waitServing(t, p, nc)
			heartbeat(t, nc, "bin.signal", "")

			p.signal(t, tt.sig)
			sent := time.Now()
			if code := p.exitCode(t, 5*time.Second); code != 0 {
				t.Errorf("exit status after %v: got %d; want 0", tt.sig, code)
			}
			t.Logf("exited %v after %v", time.Since(sent), tt.sig)
			if stderr := p.stderr.String(); !strings.Contains(stderr, tt.stopped) {
				t.Errorf("log: want a line with %s; got:\n%s", tt.stopped, stderr)
			}
			if _, err := nc.Request(prefix+".admin.list", nil, bound); !errors.Is(err, nats.ErrNoResponders) {
				t.Errorf("admin list after exit: got %v; want nats.ErrNoResponders", err)
			}
		})
	}
}

// An IDLE_NATS_URL where nothing listens makes idle-worker exit 1, within
// IDLE_CONNECT_TIMEOUT and some, with an error about connecting that does
// not leak the URL's password.
func TestBinaryUnreachableNATS(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, url string }{
		{"plain", fmt.Sprintf("nats://127.0.0.1:%d", freePort(t))},
		{"with credentials", fmt.Sprintf("nats://worker:s3cret@127.0.0.1:%d", freePort(t))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := startBinary(t, map[string]string{"IDLE_NATS_URL": tt.url, "IDLE_CONNECT_TIMEOUT": "1s"})
			if code := p.exitCode(t, 10*time.Second); code != 1 {
				t.Errorf("exit status: got %d; want 1", code)
			}
			t.Logf("exited after %v", time.Since(p.started))
			stderr := p.stderr.String()
			if !strings.Contains(strings.ToLower(stderr), "connect") {
				t.Errorf("stderr %q: want an error about connecting", stderr)
			}
			if strings.Contains(stderr, "s3cret") {
				t.Errorf("stderr %q: leaks the password of IDLE_NATS_URL", stderr)
			}
		})
	}
}

// The arguments -h and -version, in their usual spellings, print the usage
// or the version and exit 0 without starting anything, even with a bad
// configuration; any other argument exits 2 and says so.
func TestBinaryArgs(t *testing.T) {
	t.Parallel()
	// A wrongly started worker would fail on this URL, with status 1.
	dead := fmt.Sprintf("nats://127.0.0.1:%d", freePort(t))
	usage := []string{"Usage: idle-worker", "IDLE_NATS_URL (default: empty)", "IDLE_EMBEDDED_LISTEN (default: 127.0.0.1:4222)",
		"IDLE_HTTP_ADDR (default: 127.0.0.1:9464)", "IDLE_NATS_TLS_KEY (default: empty)", "JetStream KV bucket of the registry."}
	version := []string{"idle-worker 0."}
	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		wantCode   int
		wantStdout []string
		wantStderr []string
	}{
		{name: "-h", args: []string{"-h"}, wantStdout: usage},
		{name: "-help", args: []string{"-help"}, wantStdout: usage},
		{name: "--help", args: []string{"--help"}, wantStdout: usage},
		{name: "help", args: []string{"help"}, wantStdout: usage},
		{name: "-h with a bad configuration", args: []string{"-h"}, env: map[string]string{"IDLE_LOG_LEVEL": "loud"}, wantStdout: usage},
		{name: "-version", args: []string{"-version"}, wantStdout: version},
		{name: "--version", args: []string{"--version"}, wantStdout: version},
		{name: "version", args: []string{"version"}, wantStdout: version},
		{name: "unknown word", args: []string{"foo"}, wantCode: 2,
			wantStderr: []string{`idle-worker: unknown argument "foo"; see idle-worker -h`}},
		{name: "unknown flag", args: []string{"-v"}, wantCode: 2, wantStderr: []string{`unknown argument "-v"`}},
		{name: "two arguments", args: []string{"-h", "foo"}, wantCode: 2, wantStderr: []string{`unexpected argument "foo" after "-h"`, "see idle-worker -h"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{"IDLE_NATS_URL": dead}
			for k, v := range tt.env {
				env[k] = v
			}
			p := startBinaryArgs(t, env, tt.args...)
			if code := p.exitCode(t, 10*time.Second); code != tt.wantCode {
				t.Errorf("exit status: got %d; want %d", code, tt.wantCode)
			}
			stdout, stderr := p.stdout.String(), p.stderr.String()
			for _, w := range tt.wantStdout {
				if !strings.Contains(stdout, w) {
					t.Errorf("stdout: want it to contain %q; got:\n%s", w, stdout)
				}
			}
			for _, w := range tt.wantStderr {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr: want it to contain %q; got:\n%s", w, stderr)
				}
			}
			if tt.wantStderr == nil && stderr != "" {
				t.Errorf("stderr: got %q; want nothing", stderr)
			}
			if tt.wantStdout == nil && stdout != "" {
				t.Errorf("stdout: got %q; want nothing", stdout)
			}
		})
	}
}

// binaryVersion returns the version the built binary reports.
func binaryVersion(t *testing.T) string {
	t.Helper()
	p := startBinaryArgs(t, nil, "-version")
	if code := p.exitCode(t, 10*time.Second); code != 0 {
		t.Fatalf("idle-worker -version: exit status %d", code)
	}
	v, ok := strings.CutPrefix(strings.TrimSpace(p.stdout.String()), "idle-worker ")
	if !ok || v == "" {
		t.Fatalf("idle-worker -version: got %q; want \"idle-worker <version>\"", p.stdout)
	}
	return v
}

// logLine returns the first line of log that contains msg, or "".
func logLine(log, msg string) string {
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, msg) {
			return line
		}
	}
	return ""
}

// The first log line names the version. With the embedded server's
// temporary store, the worker warns at start that the store, and every
// tracked backend with it, is thrown away at exit, and says at stop how
// many backends it discards; with a store directory it says neither.
func TestBinaryTempStoreWarnings(t *testing.T) {
	t.Parallel()
	version := binaryVersion(t)
	const (
		startMsg = "the JetStream store is a temporary directory"
		stopMsg  = "discarding the tracked backends with the temporary JetStream store"
	)
	tests := []struct {
		name     string
		storeDir bool
		persist  string
		warns    bool
	}{
		{name: "temporary store", warns: true},
		{name: "store directory", storeDir: true},
		{name: "temporary store, persistence off", persist: "off"}, // it says "persistence off" instead
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			port := freePort(t)
			env := map[string]string{
				"IDLE_NATS_URL":        "",
				"IDLE_EMBEDDED_LISTEN": fmt.Sprintf("127.0.0.1:%d", port),
				"IDLE_HTTP_ADDR":       "",
			}
			if tt.storeDir {
				env["IDLE_EMBEDDED_STORE_DIR"] = t.TempDir()
			}
			if tt.persist != "" {
				env["IDLE_PERSIST"] = tt.persist
			}
			p := startBinary(t, env)
			nc := connectTo(t, p, fmt.Sprintf("nats://127.0.0.1:%d", port))
			waitServing(t, p, nc)
			heartbeat(t, nc, "bin.tempstore", "") // the default timeout, 30s, keeps it tracked
			p.signal(t, syscall.SIGTERM)
			if code := p.exitCode(t, 10*time.Second); code != 0 {
				t.Errorf("exit status after SIGTERM: got %d; want 0", code)
			}
			stderr := p.stderr.String()

			first, _, _ := strings.Cut(stderr, "\n")
			if want := ` level=INFO msg="idle-worker starting" version=` + version; !strings.HasSuffix(first, want) {
				t.Errorf("first log line: got %q; want it to end with %q", first, want)
			}
			start, stop := logLine(stderr, startMsg), logLine(stderr, stopMsg)
			if !tt.warns {
				if start != "" || stop != "" {
					t.Errorf("log: got %q and %q; want no warning about a temporary store", start, stop)
				}
				return
			}
			for _, w := range []string{"level=WARN", "IDLE_EMBEDDED_STORE_DIR", "store_dir=" + p.tmpDir} {
				if !strings.Contains(start, w) {
					t.Errorf("start warning: got %q; want it to contain %q", start, w)
				}
			}
			for _, w := range []string{"level=WARN", "IDLE_EMBEDDED_STORE_DIR", "backends=1"} {
				if !strings.Contains(stop, w) {
					t.Errorf("stop warning: got %q; want it to contain %q", stop, w)
				}
			}
		})
	}
}

// idle-worker mappings prints the block of subject mappings for
// IDLE_SUBJECT_PREFIX and IDLE_PARTITIONS (64 by default), exactly as
// package partition writes it, and exits 0 without connecting anywhere; a
// bad partition count or an unmappable prefix exits 2 and names the
// variable.
func TestBinaryMappings(t *testing.T) {
	t.Parallel()
	// A wrongly started worker would fail on this URL, with status 1.
	dead := fmt.Sprintf("nats://127.0.0.1:%d", freePort(t))
	tests := []struct {
		name    string
		env     map[string]string
		prefix  string // of the block printed
		n       int
		wantVar string // named on stderr with status 2; "" for success
	}{
		{name: "defaults", prefix: "idle", n: 64},
		{name: "custom prefix and count", env: map[string]string{"IDLE_SUBJECT_PREFIX": "acme.idle", "IDLE_PARTITIONS": "8"}, prefix: "acme.idle", n: 8},
		{name: "most partitions", env: map[string]string{"IDLE_PARTITIONS": "1024"}, prefix: "idle", n: 1024},
		{name: "no partition", env: map[string]string{"IDLE_PARTITIONS": "0"}, wantVar: "IDLE_PARTITIONS"},
		{name: "too many partitions", env: map[string]string{"IDLE_PARTITIONS": "1025"}, wantVar: "IDLE_PARTITIONS"},
		{name: "partitions not a number", env: map[string]string{"IDLE_PARTITIONS": "x"}, wantVar: "IDLE_PARTITIONS"},
		{name: "prefix read as a wildcard", env: map[string]string{"IDLE_SUBJECT_PREFIX": "acme.$1"}, wantVar: "IDLE_SUBJECT_PREFIX"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{"IDLE_NATS_URL": dead}
			for k, v := range tt.env {
				env[k] = v
			}
			p := startBinaryArgs(t, env, "mappings")
			code := p.exitCode(t, 10*time.Second)
			stdout, stderr := p.stdout.String(), p.stderr.String()
			if tt.wantVar != "" {
				if code != 2 || !strings.Contains(stderr, tt.wantVar) || !strings.Contains(stderr, "bad configuration") || stdout != "" {
					t.Errorf("exit status %d, stdout %q, stderr %q; want 2, nothing, a bad configuration naming %s", code, stdout, stderr, tt.wantVar)
				}
				return
			}
			b, err := partition.Mappings(bus.MustSubjects(tt.prefix), tt.n)
			if err != nil {
				t.Fatal(err)
			}
			if code != 0 || stderr != "" {
				t.Errorf("exit status %d, stderr %q; want 0 and nothing", code, stderr)
			}
			if want := b.Config(); stdout != want {
				t.Errorf("stdout:\n%s\nwant:\n%s", stdout, want)
			}
		})
	}
}
