package natsconn_test

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/idle-worker/idle-worker/internal/logtest"
	"github.com/idle-worker/idle-worker/internal/natstest"
	"github.com/idle-worker/idle-worker/natsconn"
)

// startServer starts a nats-server on 127.0.0.1 and port (-1: random),
// shut down when the test ends.
func startServer(t *testing.T, port int, configure func(*server.Options)) *natstest.Server {
	t.Helper()
	return natstest.Start(t, natstest.Configure(func(o *server.Options) {
		o.Port = port
		if configure != nil {
			configure(o)
		}
	}))
}

// idleName names settings as idle-worker does.
func idleName(s natsconn.Setting) string {
	return map[natsconn.Setting]string{
		natsconn.CredsFile: "IDLE_NATS_CREDS", natsconn.NKeySeedFile: "IDLE_NATS_NKEY_SEED",
		natsconn.User: "IDLE_NATS_USER", natsconn.Password: "IDLE_NATS_PASSWORD", natsconn.Token: "IDLE_NATS_TOKEN",
		natsconn.TLSCAFile: "IDLE_NATS_TLS_CA", natsconn.TLSCertFile: "IDLE_NATS_TLS_CERT", natsconn.TLSKeyFile: "IDLE_NATS_TLS_KEY",
	}[s]
}

func TestDial(t *testing.T) {
	t.Parallel()
	const password = "hunter2-password"
	plain := startServer(t, -1, nil)
	login := startServer(t, -1, func(o *server.Options) { o.Username, o.Password = "worker", password })
	hostPort := func(s *natstest.Server) string { return s.Addr().String() }
	refused, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := refused.Addr().String()
	refused.Close()

	tests := []struct {
		name     string
		url      string
		security natsconn.Config
		nameFn   func(natsconn.Setting) string
		wantErr  []string // substrings of the error; nil: success
		wantLog  []string // substrings of the log on success
	}{
		{name: "no authentication", url: plain.ClientURL(),
			wantLog: []string{`msg="connected to NATS"`, "component=nats", "auth=none", "tls=false"}},
		{name: "user and password", url: login.ClientURL(), security: natsconn.Config{User: "worker", Password: password},
			wantLog: []string{`msg="connected to NATS"`, `auth=user`}},
		{name: "credentials in the URL", url: "nats://worker:" + password + "@" + hostPort(login),
			wantLog: []string{`msg="connected to NATS"`, `auth="URL user information"`}},
		{name: "wrong password", url: login.ClientURL(), security: natsconn.Config{User: "worker", Password: "wrong-password"}, nameFn: idleName,
			wantErr: []string{"connect to NATS at " + login.ClientURL(), "(login refused: check IDLE_NATS_CREDS, IDLE_NATS_NKEY_SEED, IDLE_NATS_USER and IDLE_NATS_PASSWORD, or IDLE_NATS_TOKEN)", "uthorization"}},
		{name: "wrong password in the URL, default names", url: "nats://worker:wrong-password@" + hostPort(login),
			wantErr: []string{"connect to NATS at nats://redacted@" + hostPort(login) + " (login refused: check creds file,"}},
		{name: "nothing listening", url: "nats://u:wrong-password@" + deadAddr,
			wantErr: []string{"connect to NATS at nats://redacted@" + deadAddr + ": "}},
		{name: "bad security", url: plain.ClientURL(), security: natsconn.Config{TLSCAFile: filepath.Join(t.TempDir(), "missing.pem")},
			wantErr: []string{"TLS CA file", "missing.pem"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var logs logtest.Buffer
			logger := slog.New(slog.NewTextHandler(&logs, nil))
			cfg := natsconn.DialConfig{Name: "natsconn-test", Timeout: 2 * time.Second, PingInterval: time.Second,
				Security: tt.security, SettingName: tt.nameFn}
			start := time.Now()
			nc, closed, err := natsconn.Dial(tt.url, cfg, logger)
			if tt.wantErr != nil {
				if err == nil {
					nc.Close()
					t.Fatalf("Dial: got a connection; want an error saying %q", tt.wantErr)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("Dial: got %q; want it to contain %q", err, w)
					}
				}
				for _, secret := range []string{password, "wrong-password"} {
					if strings.Contains(err.Error()+logs.String(), secret) {
						t.Errorf("Dial: error %q or log %q leaks a password", err, logs.String())
					}
				}
				if took := time.Since(start); took > cfg.Timeout+time.Second {
					t.Errorf("Dial: failed after %v; want within the timeout %v and some", took, cfg.Timeout)
				}
				return
			}
			if err != nil {
				t.Fatalf("Dial: %v", err)
			}
			for _, w := range tt.wantLog {
				if !strings.Contains(logs.String(), w) {
					t.Errorf("log %q: want it to contain %q", logs.String(), w)
				}
			}
			if strings.Contains(logs.String(), password) {
				t.Errorf("log %q: leaks the password", logs.String())
			}
			select {
			case <-closed:
				t.Fatal("closed: got closed while the connection is open")
			default:
			}
			nc.Close()
			select {
			case <-closed:
			case <-time.After(5 * time.Second):
				t.Fatal("closed: still open 5s after Close")
			}
		})
	}
}

// A connection made by Dial logs the loss of its server and reconnects, for
// as long as it takes, when the server is back.
func TestDialReconnects(t *testing.T) {
	t.Parallel()
	first := startServer(t, -1, nil)
	port := first.Addr().(*net.TCPAddr).Port
	var logs logtest.Buffer
	nc, closed, err := natsconn.Dial(first.ClientURL(), natsconn.DialConfig{Name: "natsconn-test", Timeout: 2 * time.Second, PingInterval: time.Second},
		slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer nc.Close()
	first.Shutdown()
	first.WaitForShutdown()
	natstest.WaitFor(t, 10*time.Second, "the disconnection to be logged", func() bool {
		return strings.Contains(logs.String(), `level=WARN msg="disconnected from NATS"`)
	})
	startServer(t, port, nil)
	natstest.WaitFor(t, 10*time.Second, "the reconnection to be logged", func() bool {
		return strings.Contains(logs.String(), `level=INFO msg="reconnected to NATS"`) && nc.IsConnected()
	})
	if want := fmt.Sprintf("url=nats://127.0.0.1:%d outage=", port); !strings.Contains(logs.String(), want) {
		t.Errorf("log %q: want the reconnection line to say %q", logs.String(), want)
	}
	select {
	case <-closed:
		t.Fatal("closed: got closed while reconnecting; want the connection kept")
	default:
	}
}

func TestDialConfigDeadAfter(t *testing.T) {
	t.Parallel()
	c := natsconn.DialConfig{PingInterval: 5 * time.Second}
	if got, want := c.DeadAfter(), 15*time.Second; got != want {
		t.Errorf("DeadAfter with a 5s ping interval: got %v; want %v (MaxPingsOut %d + 1 intervals)", got, want, natsconn.MaxPingsOut)
	}
}

// Dial's errors for a bad Config are the Config's own.
func TestDialBadSecurity(t *testing.T) {
	t.Parallel()
	_, _, err := natsconn.Dial("nats://127.0.0.1:1", natsconn.DialConfig{Security: natsconn.Config{User: "u"}}, slog.New(slog.DiscardHandler))
	var ne *natsconn.Error
	if !errors.As(err, &ne) || !errors.Is(err, natsconn.ErrIncomplete) || ne.Setting != natsconn.User {
		t.Errorf("Dial with a user and no password: got %v; want a *natsconn.Error for the user wrapping ErrIncomplete", err)
	}
}
