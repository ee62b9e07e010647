package integration

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/internal/natstest"
	"github.com/idle-worker/idle-worker/natsconn"
	"github.com/idle-worker/idle-worker/natsconn/natsconntest"
)

// secAuthCase is a server that requires one kind of authentication or TLS,
// and the client settings that pass it.
type secAuthCase struct {
	name   string
	server func(*server.Options)
	client natsconn.Config
	// refused is a client configuration the server must refuse, to show
	// that it really requires client's settings.
	refused natsconn.Config
	// wantAuth is what the worker logs as its authentication method.
	wantAuth string
}

// secCases returns one case per authentication method and TLS mode, with
// fresh credentials in dir.
func secCases(t *testing.T, dir string) []secAuthCase {
	t.Helper()
	const user, password, token = "idle-worker", "pw-7f3a9c1e-user", "tok-5b2e8d40-token"
	seed, public := natsconntest.UserSeed(t, dir, "worker.nk")
	otherSeed, _ := natsconntest.UserSeed(t, dir, "other.nk")
	op := natsconntest.NewOperator(t)
	creds := op.UserCreds(t, dir, "worker.creds", 0)
	strangerCreds := natsconntest.NewOperator(t).UserCreds(t, dir, "stranger.creds", 0)
	pki := natsconntest.NewPKI(t, dir, "ca")
	mtls := func(c natsconn.Config) natsconn.Config {
		c.TLSCAFile, c.TLSCertFile, c.TLSKeyFile = pki.CAFile, pki.ClientCertFile, pki.ClientKeyFile
		return c
	}
	return []secAuthCase{
		{
			name:     "user and password",
			server:   func(o *server.Options) { o.Username, o.Password = user, password },
			client:   natsconn.Config{User: user, Password: password},
			refused:  natsconn.Config{User: user, Password: "wrong-password"},
			wantAuth: "user",
		},
		{
			name:     "token",
			server:   func(o *server.Options) { o.Authorization = token },
			client:   natsconn.Config{Token: token},
			refused:  natsconn.Config{Token: "wrong-token"},
			wantAuth: "token",
		},
		{
			name:     "nkey",
			server:   func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: public}} },
			client:   natsconn.Config{NKeySeedFile: seed},
			refused:  natsconn.Config{NKeySeedFile: otherSeed},
			wantAuth: "nkey seed file",
		},
		{
			name:     "creds (operator JWT)",
			server:   func(o *server.Options) { op.Configure(t, o) },
			client:   natsconn.Config{CredsFile: creds},
			refused:  natsconn.Config{CredsFile: strangerCreds},
			wantAuth: "creds file",
		},
		{
			name:     "TLS",
			server:   func(o *server.Options) { pki.ServerTLS(t, o, false) },
			client:   natsconn.Config{TLSCAFile: pki.CAFile},
			refused:  natsconn.Config{}, // no CA: the server's certificate is unknown
			wantAuth: "none",
		},
		{
			name:     "mutual TLS",
			server:   func(o *server.Options) { pki.ServerTLS(t, o, true) },
			client:   mtls(natsconn.Config{}),
			refused:  natsconn.Config{TLSCAFile: pki.CAFile}, // no client certificate
			wantAuth: "none",
		},
		{
			name: "mutual TLS and creds",
			server: func(o *server.Options) {
				pki.ServerTLS(t, o, true)
				op.Configure(t, o)
			},
			client:   mtls(natsconn.Config{CredsFile: creds}),
			refused:  mtls(natsconn.Config{CredsFile: strangerCreds}),
			wantAuth: "creds file",
		},
	}
}

// secEnv returns the IDLE_NATS_* variables of c.
func secEnv(c natsconn.Config) map[string]string {
	env := map[string]string{}
	for k, v := range map[string]string{
		"IDLE_NATS_CREDS":     c.CredsFile,
		"IDLE_NATS_NKEY_SEED": c.NKeySeedFile,
		"IDLE_NATS_USER":      c.User,
		"IDLE_NATS_PASSWORD":  string(c.Password),
		"IDLE_NATS_TOKEN":     string(c.Token),
		"IDLE_NATS_TLS_CA":    c.TLSCAFile,
		"IDLE_NATS_TLS_CERT":  c.TLSCertFile,
		"IDLE_NATS_TLS_KEY":   c.TLSKeyFile,
	} {
		if v != "" {
			env[k] = v
		}
	}
	return env
}

// secConnect connects to url with c's options, closed when the test ends.
func secConnect(t *testing.T, url string, c natsconn.Config) *nats.Conn {
	t.Helper()
	opts, err := c.Options()
	if err != nil {
		t.Fatalf("natsconn options: %v", err)
	}
	return connect(t, url, opts...)
}

// secDial tries to connect to url with c's options and returns the error.
func secDial(url string, c natsconn.Config) error {
	opts, err := c.Options()
	if err != nil {
		return err
	}
	nc, err := nats.Connect(url, append(opts, nats.Timeout(bound), nats.NoReconnect())...)
	if err == nil {
		nc.Close()
	}
	return err
}

// secSecrets returns the secret values of c: password, token, and the seed,
// JWT and private key lines of its files.
func secSecrets(t *testing.T, cs ...natsconn.Config) []string {
	t.Helper()
	var out []string
	for _, c := range cs {
		for _, s := range []natsconn.Secret{c.Password, c.Token} {
			if s != "" {
				out = append(out, string(s))
			}
		}
		for _, f := range []string{c.CredsFile, c.NKeySeedFile, c.TLSKeyFile} {
			if f == "" {
				continue
			}
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range strings.Split(string(b), "\n") {
				if line = strings.TrimSpace(line); len(line) >= 16 && !strings.HasPrefix(line, "-----") {
					out = append(out, line)
				}
			}
		}
	}
	return out
}

// secNoSecrets fails if out holds any of secrets.
func secNoSecrets(t *testing.T, what, out string, secrets []string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("%s leaks a secret (%.6s…)", what, s)
		}
	}
}

// A worker connected with natsconn's options serves on a server that
// requires each kind of authentication or TLS, and the server refuses the
// wrong credentials, so the test shows the options are what let it in.
func TestSecAuthInProcess(t *testing.T) {
	t.Parallel()
	for _, tc := range secCases(t, t.TempDir()) {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const timeout = 200 * time.Millisecond
			s := startServer(t, natstest.Configure(tc.server))
			url := s.ClientURL()
			if err := secDial(url, tc.refused); err == nil {
				t.Fatalf("connect with the refused settings: got nil; want the server to refuse")
			}
			w := startWorkerOn(t, secConnect(t, url, tc.client), bus.WorkerConfig{Policy: coordinator.Policy{DefaultIdleTimeout: longTimeout}})
			nc := secConnect(t, url, tc.client)
			events := subscribe(t, nc, prefix+".quiesce.>")
			sent, _ := heartbeat(t, nc, "sec.auth", timeoutBody(timeout))
			ev := nextEvent(t, events, timeout+bound)
			checkTiming(t, sent, ev.arrived, timeout)
			if ev.Key != "sec.auth" {
				t.Errorf("event key: got %q; want sec.auth", ev.Key)
			}
			if got := w.Stats().Heartbeats; got != 1 {
				t.Errorf("heartbeats: got %d; want 1", got)
			}
		})
	}
}

// The built binary serves with each kind of authentication and TLS set
// through its IDLE_NATS_* variables, says which it used, and never logs a
// secret, even at debug level.
func TestSecAuthBinary(t *testing.T) {
	t.Parallel()
	for _, tc := range secCases(t, t.TempDir()) {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const timeout = 200 * time.Millisecond
			s := startServer(t, natstest.Configure(tc.server))
			env := secEnv(tc.client)
			env["IDLE_NATS_URL"] = s.ClientURL()
			env["IDLE_LOG_LEVEL"] = "debug"
			env["IDLE_LOG_FORMAT"] = "json"
			p := startBinary(t, env)
			nc := secConnect(t, s.ClientURL(), tc.client)
			waitServing(t, p, nc)
			events := subscribe(t, nc, prefix+".quiesce.>")
			heartbeat(t, nc, "sec.bin", timeoutBody(timeout))
			if ev := nextEvent(t, events, timeout+bound); ev.Key != "sec.bin" {
				t.Errorf("event key: got %q; want sec.bin", ev.Key)
			}
			p.signal(t, syscall.SIGTERM)
			if code := p.exitCode(t, 10*time.Second); code != 0 {
				t.Errorf("exit status after SIGTERM: got %d; want 0", code)
			}
			stderr := p.stderr.String()
			if want := fmt.Sprintf(`"auth":%q`, tc.wantAuth); !strings.Contains(stderr, want) {
				t.Errorf("log: want the connection line to say %s; got:\n%s", want, stderr)
			}
			if wantTLS := tc.client.TLS(); !strings.Contains(stderr, fmt.Sprintf(`"tls":%v`, wantTLS)) {
				t.Errorf("log: want the connection line to say tls %v", wantTLS)
			}
			secNoSecrets(t, "stderr", stderr, secSecrets(t, tc.client))
			secNoSecrets(t, "stdout", p.stdout.String(), secSecrets(t, tc.client))
		})
	}
}

// A refused login or a failed TLS handshake stops the binary at start, with
// status 1 and a message that says what failed, well within
// IDLE_CONNECT_TIMEOUT and some: no silent retry loop. Its output holds no
// secret.
func TestSecAuthRefusedBinary(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cases := secCases(t, dir)
	other := natsconntest.NewPKI(t, dir, "other")
	plain := func(*server.Options) {}
	byName := map[string]secAuthCase{}
	for _, c := range cases {
		byName[c.name] = c
	}
	tests := []struct {
		name   string
		server func(*server.Options)
		client natsconn.Config
		want   []string // in stderr, lower-cased
	}{
		{"wrong password", byName["user and password"].server, byName["user and password"].refused, []string{"login refused", "authorization violation"}},
		{"wrong token", byName["token"].server, byName["token"].refused, []string{"login refused"}},
		{"no credentials", byName["token"].server, natsconn.Config{}, []string{"login refused"}},
		{"unknown nkey", byName["nkey"].server, byName["nkey"].refused, []string{"login refused"}},
		{"creds of another operator", byName["creds (operator JWT)"].server, byName["creds (operator JWT)"].refused, []string{"login refused"}},
		{"server certificate from an unknown CA", byName["TLS"].server, natsconn.Config{TLSCAFile: other.CAFile}, []string{"tls failed", "certificate"}},
		{"TLS server, no TLS settings", byName["TLS"].server, natsconn.Config{}, []string{"tls failed"}},
		{"mutual TLS without a client certificate", byName["mutual TLS"].server, byName["mutual TLS"].refused, []string{"tls failed"}},
		{"client certificate from an unknown CA", byName["mutual TLS"].server,
			natsconn.Config{TLSCAFile: byName["mutual TLS"].client.TLSCAFile, TLSCertFile: other.ClientCertFile, TLSKeyFile: other.ClientKeyFile}, []string{"tls failed"}},
		{"TLS settings, plain server", plain, byName["TLS"].client, []string{"tls failed", "secure connection"}},
	}
	secrets := secSecrets(t, byName["user and password"].client, byName["token"].client, byName["nkey"].client,
		byName["nkey"].refused, byName["creds (operator JWT)"].client, byName["creds (operator JWT)"].refused,
		byName["user and password"].refused, byName["token"].refused, byName["mutual TLS"].client)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := startServer(t, natstest.Configure(tt.server))
			env := secEnv(tt.client)
			env["IDLE_NATS_URL"] = s.ClientURL()
			env["IDLE_CONNECT_TIMEOUT"] = "2s"
			p := startBinary(t, env)
			if code := p.exitCode(t, 2*time.Second+5*time.Second); code != 1 {
				t.Errorf("exit status: got %d; want 1", code)
			}
			t.Logf("exited after %v", time.Since(p.started))
			stderr := p.stderr.String()
			for _, w := range tt.want {
				if !strings.Contains(strings.ToLower(stderr), w) {
					t.Errorf("stderr: want it to say %q; got:\n%s", w, stderr)
				}
			}
			secNoSecrets(t, "stderr", stderr, secrets)
		})
	}
}

// Bad authentication settings are configuration errors: status 2, naming the
// variable, before any connection.
func TestSecAuthBadConfigBinary(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	seed, _ := natsconntest.UserSeed(t, dir, "worker.nk")
	creds := natsconntest.NewOperator(t).UserCreds(t, dir, "worker.creds", 0)
	missing := dir + "/missing.creds"
	// Nothing listens there: a configuration wrongly accepted exits 1.
	dead := fmt.Sprintf("nats://127.0.0.1:%d", freePort(t))
	const password = "pw-0d9e1f2a-config"
	tests := []struct {
		name    string
		env     map[string]string
		wantVar string
		want    string
	}{
		{"missing creds file", map[string]string{"IDLE_NATS_URL": dead, "IDLE_NATS_CREDS": missing}, "IDLE_NATS_CREDS", "no such file"},
		{"missing nkey seed", map[string]string{"IDLE_NATS_URL": dead, "IDLE_NATS_NKEY_SEED": missing}, "IDLE_NATS_NKEY_SEED", "no such file"},
		{"missing CA", map[string]string{"IDLE_NATS_URL": dead, "IDLE_NATS_TLS_CA": missing}, "IDLE_NATS_TLS_CA", "no such file"},
		{"creds and nkey seed", map[string]string{"IDLE_NATS_URL": dead, "IDLE_NATS_CREDS": creds, "IDLE_NATS_NKEY_SEED": seed}, "IDLE_NATS_NKEY_SEED", "choose one"},
		{"user and token", map[string]string{"IDLE_NATS_URL": dead, "IDLE_NATS_USER": "u", "IDLE_NATS_PASSWORD": password, "IDLE_NATS_TOKEN": "t0k"}, "IDLE_NATS_TOKEN", "choose one"},
		{"user without password", map[string]string{"IDLE_NATS_URL": dead, "IDLE_NATS_USER": "u"}, "IDLE_NATS_USER", "IDLE_NATS_PASSWORD"},
		{"password in the URL and creds", map[string]string{"IDLE_NATS_URL": strings.Replace(dead, "//", "//u:"+password+"@", 1), "IDLE_NATS_CREDS": creds}, "IDLE_NATS_URL", "choose one"},
		{"password for the embedded server", map[string]string{"IDLE_NATS_URL": "", "IDLE_EMBEDDED_LISTEN": "127.0.0.1:0", "IDLE_NATS_USER": "u", "IDLE_NATS_PASSWORD": password}, "IDLE_NATS_USER", "embedded"},
		{"bad HTTP address", map[string]string{"IDLE_NATS_URL": dead, "IDLE_HTTP_ADDR": "localhost"}, "IDLE_HTTP_ADDR", "host:port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := startBinary(t, tt.env)
			if code := p.exitCode(t, 10*time.Second); code != 2 {
				t.Errorf("exit status: got %d; want 2", code)
			}
			stderr := p.stderr.String()
			if !strings.Contains(stderr, tt.wantVar) || !strings.Contains(stderr, tt.want) || !strings.Contains(stderr, "bad configuration") {
				t.Errorf("stderr %q: want a bad configuration naming %s and saying %q", stderr, tt.wantVar, tt.want)
			}
			if strings.Contains(stderr, password) {
				t.Errorf("stderr %q: leaks the password", stderr)
			}
		})
	}
}

// The embedded server, which has no authentication, listens only on
// loopback unless IDLE_EMBEDDED_ALLOW_REMOTE=true says otherwise.
func TestSecEmbeddedRemote(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		allow    string
		wantExit bool
	}{
		{"refused without IDLE_EMBEDDED_ALLOW_REMOTE", "", true},
		{"refused with IDLE_EMBEDDED_ALLOW_REMOTE=false", "false", true},
		{"allowed with IDLE_EMBEDDED_ALLOW_REMOTE=true", "true", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			port := freePort(t)
			env := map[string]string{"IDLE_NATS_URL": "", "IDLE_EMBEDDED_LISTEN": fmt.Sprintf("0.0.0.0:%d", port), "IDLE_HTTP_ADDR": ""}
			if tt.allow != "" {
				env["IDLE_EMBEDDED_ALLOW_REMOTE"] = tt.allow
			}
			p := startBinary(t, env)
			if tt.wantExit {
				if code := p.exitCode(t, 10*time.Second); code != 2 {
					t.Errorf("exit status: got %d; want 2", code)
				}
				if stderr := p.stderr.String(); !strings.Contains(stderr, "IDLE_EMBEDDED_LISTEN") || !strings.Contains(stderr, "IDLE_EMBEDDED_ALLOW_REMOTE") {
					t.Errorf("stderr %q: want it to name IDLE_EMBEDDED_LISTEN and IDLE_EMBEDDED_ALLOW_REMOTE", stderr)
				}
				return
			}
			// Only loopback traffic: the test talks to it on 127.0.0.1.
			nc := connectTo(t, p, fmt.Sprintf("nats://127.0.0.1:%d", port))
			waitServing(t, p, nc)
			p.signal(t, syscall.SIGTERM)
			if code := p.exitCode(t, 10*time.Second); code != 0 {
				t.Errorf("exit status after SIGTERM: got %d; want 0", code)
			}
		})
	}
}

// secIsPermission reports whether err is a permissions violation about
// subject.
func secIsPermission(err error, subject string) bool {
	return errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `"`+subject+`"`)
}
