// Package embedded runs the nats-server, with JetStream, that idle-worker
// starts in its default mode (IDLE_NATS_URL empty), so that one worker runs
// alone on a host with nothing else to install.
//
// The server has neither authentication nor TLS, so Start refuses a listen
// address that is not loopback unless Config.AllowRemote says otherwise. Its
// JetStream store is Config.StoreDir, or a temporary directory that Close
// removes, and everything stored in it with it.
//
//	srv, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:4222", Logger: logger})
//	if err != nil {
//		return err
//	}
//	defer srv.Close()
//	nc, err := nats.Connect(srv.ClientURL())
//
// The server's own log goes to the Logger with component=nats-server: its
// warnings and errors as such, its notices (the start-up banner) and traces
// at debug level.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/idle-worker/idle-worker/internal/lograte"
)

// Sentinel errors of Start; test with errors.Is.
var (
	// ErrListen: the listen address is not host:port with a port in
	// 0..65535.
	ErrListen = errors.New("embedded: bad listen address")
	// ErrNotLoopback: the listen address is not loopback and
	// Config.AllowRemote is false.
	ErrNotLoopback = errors.New("embedded: listen address is not loopback")
)

// readyTimeout bounds the wait for the server to accept connections.
const readyTimeout = 10 * time.Second

// Config says where the embedded server listens and stores.
type Config struct {
	// Listen is the host:port to serve clients on; port 0 picks a free
	// one. The host must be loopback unless AllowRemote is set.
	Listen string
	// AllowRemote lets Listen be any address: the server has no
	// authentication, so this exposes it to whoever can reach it.
	AllowRemote bool
	// StoreDir is the JetStream store, kept at Close. Empty: a temporary
	// directory, removed at Close.
	StoreDir string
	// Logger receives the server's log with component=nats-server; nil
	// discards it.
	Logger *slog.Logger
}

// Server is a running embedded nats-server.
type Server struct {
	srv      *server.Server
	dir      string
	temp     bool
	once     sync.Once
	closeErr error
}

// Start starts the server and returns once it accepts connections. It fails
// fast, with the server's reason, when the server cannot start (a port
// already in use), and within 10 s when it does not become ready. A failed
// Start leaves no temporary directory behind.
func Start(cfg Config) (_ *Server, err error) {
	host, port, err := checkListen(cfg.Listen, cfg.AllowRemote)
	if err != nil {
		return nil, err
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{dir: cfg.StoreDir}
	if s.dir == "" {
		d, mkErr := os.MkdirTemp("", "idle-worker-js-")
		if mkErr != nil {
			return nil, fmt.Errorf("embedded nats-server: store dir: %w", mkErr)
		}
		s.dir, s.temp = d, true
		defer func() {
			if err != nil {
				_ = os.RemoveAll(d) // the server never came up: leave nothing behind
			}
		}()
	}
	s.srv, err = server.NewServer(&server.Options{
		ServerName: "idle-worker-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   s.dir,
		NoSigs:     true,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded nats-server: %w", err)
	}
	log := logger.With("component", "nats-server")
	fatal := make(chan error, 1)
	s.srv.SetLoggerV2(serverLog{l: log, fatal: fatal, limit: lograte.New(time.Second, nil)}, logger.Enabled(context.Background(), slog.LevelDebug), false, false)
	go s.srv.Start()
	// Wait for readiness, but stop at once on a fatal error such as a port
	// already in use.
	for deadline := time.Now().Add(readyTimeout); !s.srv.ReadyForConnections(50 * time.Millisecond); {
		select {
		case err := <-fatal:
			s.stop()
			return nil, fmt.Errorf("embedded nats-server on %s: %w", cfg.Listen, err)
		default:
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("embedded nats-server: not ready to accept connections on %s within %v", cfg.Listen, readyTimeout)
		}
	}
	log.Info("embedded nats-server listening", "url", s.srv.ClientURL(), "store_dir", s.dir)
	return s, nil
}

// ClientURL is the URL clients connect to, such as nats://127.0.0.1:4222.
func (s *Server) ClientURL() string { return s.srv.ClientURL() }

// StoreDir is the JetStream store directory.
func (s *Server) StoreDir() string { return s.dir }

// TempStore reports whether the store is a temporary directory, removed,
// with every stream and bucket in it, at Close.
func (s *Server) TempStore() bool { return s.temp }

// Close shuts the server down and waits until it has, so nothing writes to
// the store afterwards; then it removes a temporary store. It returns the
// error of that removal. Calling it again does nothing and returns the same.
func (s *Server) Close() error {
	s.once.Do(func() {
		s.stop()
		if s.temp {
			if err := os.RemoveAll(s.dir); err != nil {
				s.closeErr = fmt.Errorf("embedded nats-server: remove the temporary store: %w", err)
			}
		}
	})
	return s.closeErr
}

// stop shuts the server down and waits until it has.
func (s *Server) stop() {
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
}

// CheckListen reports whether listen may be Config.Listen: host:port with a
// port in 0..65535 (an error wrapping ErrListen), on a loopback host unless
// allowRemote (an error wrapping ErrNotLoopback).
func CheckListen(listen string, allowRemote bool) error {
	_, _, err := checkListen(listen, allowRemote)
	return err
}

// checkListen is CheckListen, returning the host and port.
func checkListen(listen string, allowRemote bool) (string, int, error) {
	host, port, err := splitListen(listen)
	if err != nil {
		return "", 0, err
	}
	if !allowRemote && !IsLoopback(host) {
		return "", 0, fmt.Errorf("%w: %q", ErrNotLoopback, listen)
	}
	return host, port, nil
}

// splitListen splits a host:port listen address and checks the port.
func splitListen(listen string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return "", 0, fmt.Errorf("%w %q: want host:port: %w", ErrListen, listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%w %q: port %q is not a number in 0..65535", ErrListen, listen, portStr)
	}
	return host, port, nil
}

// IsLoopback reports whether host, the host part of a listen address, is a
// loopback address or "localhost". An empty host (every interface) is not.
func IsLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// serverLog adapts slog to nats-server's Logger. Fatal errors also go to
// fatal, without blocking, so Start can fail fast.
type serverLog struct {
	l     *slog.Logger
	fatal chan<- error
	limit *lograte.Limiter
}

func (s serverLog) Noticef(f string, a ...any) { s.l.Debug(fmt.Sprintf(f, a...)) } // its banner is noise at info
func (s serverLog) Warnf(f string, a ...any)   { s.limited(slog.LevelWarn, f, a) }
func (s serverLog) Fatalf(f string, a ...any) {
	msg := fmt.Sprintf(f, a...)
	s.l.Error(msg)
	select {
	case s.fatal <- errors.New(msg):
	default:
	}
}
func (s serverLog) Errorf(f string, a ...any) { s.limited(slog.LevelError, f, a) }

// limited logs at most one line per second of each kind: a hostile or
// broken client can make the server report an error per connection (a
// control line too long, a bad protocol op). The kind is the format with the
// connection's own prefix ("cid:… - ") cut off.
func (s serverLog) limited(level slog.Level, f string, a []any) {
	k := f
	if i := strings.LastIndex(f, " - "); i >= 0 {
		k = f[i+3:]
	}
	if ok, n := s.limit.Allow(k); ok {
		s.l.Log(context.Background(), level, fmt.Sprintf(f, a...), "suppressed", n)
	}
}
func (s serverLog) Debugf(f string, a ...any) { s.l.Debug(fmt.Sprintf(f, a...)) }
func (s serverLog) Tracef(f string, a ...any) { s.l.Debug(fmt.Sprintf(f, a...)) }
