package natstest_test

import (
	"context"
	"errors"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idle-worker/idle-worker/internal/natstest"
)

// bound bounds every wait of these tests.
const bound = 10 * time.Second

// confFile is the example least-privilege configuration of the repository.
const confFile = "../../deploy/nats-server.conf"

// confPasswords are the environment variables confFile reads its users'
// passwords from, with test values.
var confPasswords = map[string]string{
	"IDLE_WORKER_PASSWORD":  "worker-secret",
	"BACKEND_DEV7_PASSWORD": "b7",
	"BACKEND_DEV8_PASSWORD": "b8",
	"BROKER_DEV7_PASSWORD":  "k7",
	"BROKER_DEV8_PASSWORD":  "k8",
	"OPERATOR_PASSWORD":     "op",
}

func TestStart(t *testing.T) {
	for _, tt := range []struct {
		name   string
		env    map[string]string
		opts   []natstest.Option
		client []nats.Option // to connect as a user allowed $JS.API.INFO
		denied []nats.Option // a connection the server must refuse; nil: none
		wantJS bool
	}{
		{name: "core"},
		{name: "jetstream", opts: []natstest.Option{natstest.JetStream()}, wantJS: true},
		{
			name: "configure users",
			opts: []natstest.Option{natstest.Configure(func(o *server.Options) {
				o.Users = []*server.User{{Username: "alice", Password: "pw"}}
			})},
			client: []nats.Option{nats.UserInfo("alice", "pw")},
			denied: []nats.Option{nats.UserInfo("alice", "wrong")},
		},
		{
			name:   "config file",
			env:    confPasswords,
			opts:   []natstest.Option{natstest.ConfigFile(confFile)},
			client: []nats.Option{nats.UserInfo("idle-worker", confPasswords["IDLE_WORKER_PASSWORD"])},
			denied: []nats.Option{nats.UserInfo("idle-worker", "wrong")},
			wantJS: true,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var store string
			t.Run("running", func(t *testing.T) {
				s := natstest.Start(t, tt.opts...)
				u, err := url.Parse(s.ClientURL())
				if err != nil {
					t.Fatalf("client URL %q: %v", s.ClientURL(), err)
				}
				if u.Hostname() != "127.0.0.1" || u.Port() == "4222" {
					t.Errorf("client URL %s; want 127.0.0.1 and a random port", u)
				}
				if addr := s.MonitorAddr(); addr != nil {
					t.Errorf("monitoring on %v; want it off", addr)
				}
				if got := s.JetStreamEnabled(); got != tt.wantJS {
					t.Fatalf("JetStream enabled: got %v; want %v", got, tt.wantJS)
				}
				if tt.wantJS {
					store = filepath.Dir(s.StoreDir())
					if !strings.HasPrefix(store, os.TempDir()) {
						t.Errorf("JetStream store %s; want a directory under %s", store, os.TempDir())
					}
				}
				nc, err := nats.Connect(s.ClientURL(), append(tt.client, nats.Timeout(bound))...)
				if err != nil {
					t.Fatalf("connect: %v", err)
				}
				defer nc.Close()
				js, err := jetstream.New(nc)
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), bound)
				defer cancel()
				if _, err := js.AccountInfo(ctx); (err == nil) != tt.wantJS {
					t.Errorf("JetStream account info: got error %v; want JetStream available = %v", err, tt.wantJS)
				}
				if tt.denied != nil {
					if nc, err := nats.Connect(s.ClientURL(), append(tt.denied, nats.Timeout(bound))...); err == nil {
						nc.Close()
						t.Errorf("connect with %s: got a connection; want it refused", tt.name)
					}
				}
			})
			if store == "" {
				return
			}
			if _, err := os.Stat(store); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("JetStream store %s after the test: got %v; want it removed", store, err)
			}
		})
	}
}

func TestRunFails(t *testing.T) {
	for _, tt := range []struct {
		name  string
		unset string // an environment variable to unset
		opts  []natstest.Option
		want  string // in the error
	}{
		{"no such config file", "", []natstest.Option{natstest.ConfigFile("testdata/missing.conf")}, "missing.conf"},
		{"password variable unset", "OPERATOR_PASSWORD", []natstest.Option{natstest.ConfigFile(confFile)}, "OPERATOR_PASSWORD"},
		{"invalid options", "", []natstest.Option{natstest.Configure(func(o *server.Options) {
			o.ServerName = "has a space"
		})}, "natstest: new server"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range confPasswords {
				t.Setenv(k, v)
			}
			if tt.unset != "" {
				os.Unsetenv(tt.unset) // t.Setenv above restores it
			}
			s, err := natstest.Run(tt.opts...)
			if err == nil {
				s.Close()
				t.Fatalf("Run: got a server; want an error mentioning %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Run: got error %q; want it to mention %q", err, tt.want)
			}
		})
	}
}

// Close may be called again, as a test that stops its server early and
// then its cleanup do.
func TestCloseTwice(t *testing.T) {
	s, err := natstest.Run(natstest.JetStream())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := s.Close(); err != nil {
			t.Errorf("Close #%d: %v", i+1, err)
		}
	}
	if s.Running() {
		t.Error("server running after Close")
	}
}
