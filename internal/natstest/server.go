package natstest

import (
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

const (
	// loopback is the only interface a server started here listens on.
	loopback = "127.0.0.1"
	// readyBound bounds the wait for a server to accept connections.
	readyBound = 10 * time.Second
)

// Option configures a server started by Run, Start or StartCluster.
type Option func(*settings)

// settings is what the options chose.
type settings struct {
	configFile string
	jetStream  bool
	// storeDir is a JetStream store the caller owns (StartCluster's per
	// node); empty means Run creates one and Close removes it.
	storeDir  string
	configure []func(*server.Options)
}

// JetStream turns JetStream on, with its store in a new temporary directory
// that Close removes.
func JetStream() Option {
	return func(st *settings) { st.jetStream = true }
}

// ConfigFile starts from the nats-server configuration file at path,
// processed as nats-server does (so variables such as $PASSWORD are read
// from the environment when the server starts). Only what a test must not
// share is changed: the client listener moves to 127.0.0.1 and a random
// port, monitoring (http, https) is off, and a JetStream store in the file
// is replaced by a temporary one.
func ConfigFile(path string) Option {
	return func(st *settings) { st.configFile = path }
}

// Configure calls f on the server.Options after every other option has been
// applied and before the server starts, for what no other option covers:
// users, TLS, a fixed port. Several Configure options run in order.
func Configure(f func(*server.Options)) Option {
	return func(st *settings) { st.configure = append(st.configure, f) }
}

// Server is an embedded nats-server started by Run, Start or StartCluster.
// It embeds the *server.Server, so ClientURL, JetStreamEnabled, Shutdown
// and the rest are at hand.
type Server struct {
	*server.Server
	// ownDir is the JetStream store Run created, removed by Close.
	ownDir string
}

// Run starts a nats-server on 127.0.0.1 and a random port, without log or
// signal handlers, configured by opts, and returns it once it accepts
// connections (within 10 s). The caller must Close it. Start is Run for
// tests.
func Run(opts ...Option) (*Server, error) {
	var st settings
	for _, o := range opts {
		o(&st)
	}
	so := &server.Options{}
	if st.configFile != "" {
		var err error
		if so, err = server.ProcessConfigFile(st.configFile); err != nil {
			return nil, fmt.Errorf("natstest: config file %s: %w", st.configFile, err)
		}
		so.HTTPHost, so.HTTPPort, so.HTTPSPort = loopback, 0, 0
	}
	so.Host, so.Port = loopback, server.RANDOM_PORT
	so.NoLog, so.NoSigs = true, true
	so.JetStream = so.JetStream || st.jetStream
	s := &Server{}
	if so.JetStream {
		so.StoreDir = st.storeDir
		if so.StoreDir == "" {
			dir, err := os.MkdirTemp("", "natstest-js-")
			if err != nil {
				return nil, fmt.Errorf("natstest: JetStream store: %w", err)
			}
			s.ownDir, so.StoreDir = dir, dir
		}
	}
	for _, f := range st.configure {
		f(so)
	}
	srv, err := server.NewServer(so)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("natstest: new server: %w", err), s.Close())
	}
	s.Server = srv
	go srv.Start()
	if !srv.ReadyForConnections(readyBound) {
		return nil, errors.Join(fmt.Errorf("natstest: server not ready for connections within %v", readyBound), s.Close())
	}
	return s, nil
}

// Start is Run for a test or benchmark: it fails tb if the server does not
// start, and closes the server when tb ends.
func Start(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	s, err := Run(opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Error(err)
		}
	})
	return s
}

// Close shuts the server down, waits until it has stopped (so nothing
// writes to its store any more), and removes the JetStream store Run
// created for it. Closing a server again does nothing.
func (s *Server) Close() error {
	if s.Server != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
	if s.ownDir == "" {
		return nil
	}
	dir := s.ownDir
	s.ownDir = ""
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("natstest: remove JetStream store: %w", err)
	}
	return nil
}
