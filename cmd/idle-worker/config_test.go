package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/natsconn/natsconntest"
)

// setEnv replaces every IDLE_* variable of the process with env, for the
// rest of the test. Tests that use it cannot run in parallel.
func setEnv(t *testing.T, env map[string]string) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, envPrefix+"_") {
			t.Setenv(k, "") // restored when the test ends
			if err := os.Unsetenv(k); err != nil {
				t.Fatal(err)
			}
		}
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	op := natsconntest.NewOperator(t)
	creds := op.UserCreds(t, dir, "worker.creds", 0)
	seed, _ := natsconntest.UserSeed(t, dir, "worker.nk")
	pki := natsconntest.NewPKI(t, dir, "t")
	missing := filepath.Join(dir, "missing")
	const (
		url      = "nats://127.0.0.1:4222"
		password = "hunter2-password"
		token    = "s3cr3t-token"
	)

	tests := []struct {
		name    string
		env     map[string]string
		wantVar string   // "" when the configuration is valid
		wantMsg []string // substrings of the error
		check   func(t *testing.T, c config)
	}{
		{name: "defaults", check: func(t *testing.T, c config) {
			if c.HTTPAddr != "127.0.0.1:9464" || c.HTTPAddrSet || c.NATSURL != "" || c.EmbeddedListen != "127.0.0.1:4222" {
				t.Errorf("got HTTPAddr %q (set %v) NATSURL %q EmbeddedListen %q; want 127.0.0.1:9464 (default), empty, 127.0.0.1:4222",
					c.HTTPAddr, c.HTTPAddrSet, c.NATSURL, c.EmbeddedListen)
			}
			// The binary's defaults are the library's, written twice only
			// because envconfig reads them from tags.
			if c.QuiesceRate != bus.DefaultQuiesceRate || !slices.Equal(c.ReplyPrefixes, bus.DefaultReplyPrefixes) ||
				c.MaxTimeout != bus.DefaultMaxTimeout || c.MaxBody != bus.DefaultMaxBody || c.QueueLength != bus.DefaultQueueLength {
				t.Errorf("got rate %d, reply prefixes %q, max timeout %v, max body %d, queue %d; want bus's defaults %d, %q, %v, %d, %d",
					c.QuiesceRate, c.ReplyPrefixes, c.MaxTimeout, c.MaxBody, c.QueueLength,
					bus.DefaultQuiesceRate, bus.DefaultReplyPrefixes, bus.DefaultMaxTimeout, bus.DefaultMaxBody, bus.DefaultQueueLength)
			}
		}},
		{name: "unprefixed names are ignored", env: map[string]string{"NATS_URL": "nats://127.0.0.1:1", "LOG_LEVEL": "trace", "NATS_TOKEN": token}, check: func(t *testing.T, c config) {
			if c.NATSURL != "" || c.LogLevel != "info" || c.NATSToken != "" {
				t.Errorf("got NATSURL %q LogLevel %q token set %v; want the IDLE_* defaults, bare names ignored", c.NATSURL, c.LogLevel, c.NATSToken != "")
			}
		}},
		{name: "scheme-less URL with credentials conflicts with a token", env: map[string]string{"IDLE_NATS_URL": "alice:pw@127.0.0.1:4222", "IDLE_NATS_TOKEN": token}, wantVar: "IDLE_NATS_URL"},
		{name: "partitions", env: map[string]string{"IDLE_PARTITIONS": "1024"}, check: func(t *testing.T, c config) {
			if c.Partitions != 1024 {
				t.Errorf("Partitions: got %d; want 1024", c.Partitions)
			}
		}},
		{name: "default partitions", check: func(t *testing.T, c config) {
			if c.Partitions != 64 {
				t.Errorf("Partitions: got %d; want 64", c.Partitions)
			}
		}},
		{name: "no partition", env: map[string]string{"IDLE_PARTITIONS": "0"}, wantVar: "IDLE_PARTITIONS", wantMsg: []string{"1..1024"}},
		{name: "too many partitions", env: map[string]string{"IDLE_PARTITIONS": "1025"}, wantVar: "IDLE_PARTITIONS"},
		{name: "partitions not a number", env: map[string]string{"IDLE_PARTITIONS": "many"}, wantVar: "IDLE_PARTITIONS"},
		{name: "store replicas", env: map[string]string{"IDLE_STORE_REPLICAS": "3"}, check: func(t *testing.T, c config) {
			if c.StoreReplicas != 3 {
				t.Errorf("StoreReplicas: got %d; want 3", c.StoreReplicas)
			}
		}},
		{name: "no replica", env: map[string]string{"IDLE_STORE_REPLICAS": "0"}, wantVar: "IDLE_STORE_REPLICAS", wantMsg: []string{"1..5"}},
		{name: "removed stream size limit", env: map[string]string{"IDLE_STREAM_MAX_BYTES": "1073741824"}, wantVar: "IDLE_STREAM_MAX_BYTES", wantMsg: []string{"no longer supported", "claims"}},
		{name: "HTTP disabled", env: map[string]string{"IDLE_HTTP_ADDR": ""}, check: func(t *testing.T, c config) {
			if c.HTTPAddr != "" || !c.HTTPAddrSet {
				t.Errorf("HTTPAddr: got %q (set %v); want empty, set (set but empty disables)", c.HTTPAddr, c.HTTPAddrSet)
			}
		}},
		{name: "HTTP on all interfaces", env: map[string]string{"IDLE_HTTP_ADDR": ":9464"}, check: func(t *testing.T, c config) {
			if c.HTTPAddr != ":9464" || !c.HTTPAddrSet {
				t.Errorf("HTTPAddr: got %q (set %v); want :9464, set", c.HTTPAddr, c.HTTPAddrSet)
			}
		}},
		{name: "HTTP without a port", env: map[string]string{"IDLE_HTTP_ADDR": "127.0.0.1"}, wantVar: "IDLE_HTTP_ADDR", wantMsg: []string{"host:port"}},
		{name: "HTTP port out of range", env: map[string]string{"IDLE_HTTP_ADDR": "127.0.0.1:65536"}, wantVar: "IDLE_HTTP_ADDR"},
		{name: "HTTP port not a number", env: map[string]string{"IDLE_HTTP_ADDR": "127.0.0.1:http"}, wantVar: "IDLE_HTTP_ADDR"},

		{name: "embedded on all interfaces", env: map[string]string{"IDLE_EMBEDDED_LISTEN": "0.0.0.0:4222"},
			wantVar: "IDLE_EMBEDDED_LISTEN", wantMsg: []string{"not a loopback", "IDLE_EMBEDDED_ALLOW_REMOTE"}},
		{name: "embedded on an empty host", env: map[string]string{"IDLE_EMBEDDED_LISTEN": ":4222"}, wantVar: "IDLE_EMBEDDED_LISTEN"},
		{name: "embedded on IPv6 any", env: map[string]string{"IDLE_EMBEDDED_LISTEN": "[::]:4222"}, wantVar: "IDLE_EMBEDDED_LISTEN"},
		{name: "embedded on a LAN address", env: map[string]string{"IDLE_EMBEDDED_LISTEN": "192.168.1.10:4222"}, wantVar: "IDLE_EMBEDDED_LISTEN"},
		{name: "embedded on a host name", env: map[string]string{"IDLE_EMBEDDED_LISTEN": "nats.example.com:4222"}, wantVar: "IDLE_EMBEDDED_LISTEN"},
		{name: "embedded remote allowed", env: map[string]string{"IDLE_EMBEDDED_LISTEN": "0.0.0.0:4222", "IDLE_EMBEDDED_ALLOW_REMOTE": "true"}},
		{name: "embedded on localhost", env: map[string]string{"IDLE_EMBEDDED_LISTEN": "localhost:0"}},
		{name: "embedded on IPv6 loopback", env: map[string]string{"IDLE_EMBEDDED_LISTEN": "[::1]:0"}},
		{name: "embedded on 127.0.0.2", env: map[string]string{"IDLE_EMBEDDED_LISTEN": "127.0.0.2:4222"}},
		{name: "external server ignores the embedded listener", env: map[string]string{"IDLE_NATS_URL": url, "IDLE_EMBEDDED_LISTEN": "0.0.0.0:4222"}},

		{name: "creds", env: map[string]string{"IDLE_NATS_URL": url, "IDLE_NATS_CREDS": creds}},
		{name: "nkey seed", env: map[string]string{"IDLE_NATS_URL": url, "IDLE_NATS_NKEY_SEED": seed}},
		{name: "user and password", env: map[string]string{"IDLE_NATS_URL": url, "IDLE_NATS_USER": "worker", "IDLE_NATS_PASSWORD": password},
			check: func(t *testing.T, c config) {
				if string(c.NATSPassword) != password {
					t.Errorf("NATSPassword: got a different value; want the variable's")
				}
				if s := fmt.Sprintf("%v %+v %#v", c, c, c); strings.Contains(s, password) {
					t.Errorf("formatted config: got %q; it prints the password", s)
				}
			}},
		{name: "token", env: map[string]string{"IDLE_NATS_URL": url, "IDLE_NATS_TOKEN": token}},
		{name: "mutual TLS with creds", env: map[string]string{"IDLE_NATS_URL": "tls://127.0.0.1:4222", "IDLE_NATS_CREDS": creds,
			"IDLE_NATS_TLS_CA": pki.CAFile, "IDLE_NATS_TLS_CERT": pki.ClientCertFile, "IDLE_NATS_TLS_KEY": pki.ClientKeyFile}},

		{name: "auth without a URL", env: map[string]string{"IDLE_NATS_USER": "worker", "IDLE_NATS_PASSWORD": password},
			wantVar: "IDLE_NATS_USER", wantMsg: []string{"IDLE_NATS_URL", "embedded"}},
		{name: "TLS without a URL", env: map[string]string{"IDLE_NATS_TLS_CA": pki.CAFile}, wantVar: "IDLE_NATS_TLS_CA", wantMsg: []string{"IDLE_NATS_URL"}},
		{name: "token without a URL", env: map[string]string{"IDLE_NATS_TOKEN": token}, wantVar: "IDLE_NATS_TOKEN"},

		{name: "missing creds", env: map[string]string{"IDLE_NATS_URL": url, "IDLE_NATS_CREDS": missing},
			wantVar: "IDLE_NATS_CREDS", wantMsg: []string{missing, "no such file"}},
		{name: "missing nkey seed", env: map[string]string{"IDLE_NATS_URL": url, "IDLE_NATS_NKEY_SEED": missing}, wantVar: "IDLE_NATS_NKEY_SEED", wantMsg: []string{missing}},
		{name: "missing CA", env: map[string]string{"IDLE_NATS_URL": url, "IDLE_NATS_TLS_CA": missing}, wantVar: "IDLE_NATS_TLS_CA", wantMsg: []string{missing}},
		{name: "missing cert", env: map[string]string{"IDLE_NATS_URL": url, "IDLE_NATS_TLS_CERT": missing, "IDLE_NATS_TLS_KEY": pki.ClientKeyFile},
			wantVar: "IDLE_NATS_TLS_CERT", wantMsg: []string{missing}},
		{name: "missing key", env: map[string]string{"IDLE_NATS_URL": url, "IDLE_NATS_TLS_CERT": pki.ClientCertFile, "IDLE_NATS_TLS_KEY": missing},
			wantVar: "IDLE_NATS_TLS_KEY", wantMsg: []string{missing}},
		{name: "seed file as creds", env: map[string]string{"IDLE_NATS_URL": url, "IDLE_NATS_CREDS": seed}, wantVar: "IDLE_NATS_CREDS", wantMsg: []string{"user JWT"}},
		{name: "creds file as CA", env: map[string]string{"IDLE_NATS_URL": url, "IDLE_NATS_TLS_CA": creds}, wantVar: "IDLE_NATS_TLS_CA", wantMsg: []string{"PEM"}},

		{name: "creds and token", env: map[string]string{"IDLE_NATS_URL": url, "IDLE_NATS_CREDS": creds, "IDLE_NATS_TOKEN": token},
			wantVar: "IDLE_NATS_TOKEN", wantMsg: []string{"IDLE_NATS_CREDS", "choose one"}},
		{name: "nkey and user", env: map[string]string{"IDLE_NATS_URL": url, "IDLE_NATS_NKEY_SEED": seed, "IDLE_NATS_USER": "u", "IDLE_NATS_PASSWORD": password},
			wantVar: "IDLE_NATS_USER", wantMsg: []string{"IDLE_NATS_NKEY_SEED"}},
		{name: "creds and nkey, both missing", env: map[string]string{"IDLE_NATS_URL": url, "IDLE_NATS_CREDS": missing, "IDLE_NATS_NKEY_SEED": missing},
			wantVar: "IDLE_NATS_NKEY_SEED", wantMsg: []string{"IDLE_NATS_CREDS"}},
		{name: "user without password", env: map[string]string{"IDLE_NATS_URL": url, "IDLE_NATS_USER": "u"},
			wantVar: "IDLE_NATS_USER", wantMsg: []string{"IDLE_NATS_PASSWORD"}},
		{name: "password without user", env: map[string]string{"IDLE_NATS_URL": url, "IDLE_NATS_PASSWORD": password},
			wantVar: "IDLE_NATS_PASSWORD", wantMsg: []string{"IDLE_NATS_USER"}},
		{name: "cert without key", env: map[string]string{"IDLE_NATS_URL": url, "IDLE_NATS_TLS_CERT": pki.ClientCertFile},
			wantVar: "IDLE_NATS_TLS_CERT", wantMsg: []string{"IDLE_NATS_TLS_KEY"}},
		{name: "credentials in the URL and a token", env: map[string]string{"IDLE_NATS_URL": "nats://u:" + password + "@127.0.0.1:4222", "IDLE_NATS_TOKEN": token},
			wantVar: "IDLE_NATS_URL", wantMsg: []string{"IDLE_NATS_TOKEN"}},
		{name: "credentials in the second URL and creds", env: map[string]string{"IDLE_NATS_URL": url + ",nats://" + token + "@127.0.0.1:4223", "IDLE_NATS_CREDS": creds},
			wantVar: "IDLE_NATS_URL"},
		{name: "credentials in the URL and TLS", env: map[string]string{"IDLE_NATS_URL": "tls://u:" + password + "@127.0.0.1:4222", "IDLE_NATS_TLS_CA": pki.CAFile}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setEnv(t, tt.env)
			c, err := loadConfig()
			if tt.wantVar == "" {
				if err != nil {
					t.Fatalf("loadConfig: got %v; want a valid configuration", err)
				}
				if tt.check != nil {
					tt.check(t, c)
				}
				return
			}
			var ce *configError
			if !errors.As(err, &ce) {
				t.Fatalf("loadConfig: got %v; want a *configError naming %s", err, tt.wantVar)
			}
			if ce.Var != tt.wantVar {
				t.Errorf("loadConfig: got an error about %s (%v); want %s", ce.Var, err, tt.wantVar)
			}
			for _, m := range tt.wantMsg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("loadConfig: got %q; want it to mention %q", err, m)
				}
			}
			for _, secret := range []string{password, token} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("loadConfig: got %q; it leaks a secret", err)
				}
			}
		})
	}
}
