package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/metrics"
	"github.com/idle-worker/idle-worker/store"
)

// run starts the service and blocks until ctx is done, then shuts down within
// cfg.ShutdownTimeout. It returns nil after a clean shutdown.
func run(ctx context.Context, cfg config, logger *slog.Logger) error {
	// Bind the HTTP listener first, so that an address in use fails the
	// start at once; it serves once the worker exists. The default address
	// is best effort: a second worker on the host runs without HTTP.
	var ln net.Listener
	if cfg.HTTPAddr != "" {
		l, err := net.Listen("tcp", cfg.HTTPAddr)
		switch {
		case err == nil:
			ln = l
			defer ln.Close() // a no-op once the HTTP server has shut down
		case cfg.HTTPAddrSet:
			return fmt.Errorf("IDLE_HTTP_ADDR: %w", err)
		default:
			logger.Error("no /metrics, /healthz or /readyz: the default IDLE_HTTP_ADDR is taken; set IDLE_HTTP_ADDR to a free address, or to empty to serve no HTTP",
				"component", "http", "addr", cfg.HTTPAddr, "error", err)
		}
	}

	url := cfg.NATSURL
	if url == "" {
		srv, cleanup, err := startEmbedded(cfg, logger)
		if err != nil {
			return err
		}
		defer cleanup()
		url = srv.ClientURL()
	}

	nc, closed, err := connect(url, cfg, logger)
	if err != nil {
		return err
	}
	subjects, err := bus.NewSubjects(cfg.SubjectPrefix)
	if err != nil {
		nc.Close()
		return bad("SUBJECT_PREFIX", "%v", err)
	}
	lateness := metrics.NewLateness()
	wcfg := bus.WorkerConfig{
		Subjects: subjects,
		Policy: coordinator.Policy{
			DefaultIdleTimeout: cfg.DefaultTimeout,
			MaxBackends:        cfg.MaxBackends,
			RetryInterval:      cfg.QuiesceRetry,
			RetryMaxInterval:   cfg.QuiesceRetryMax,
		},
		MaxTimeout:      cfg.MaxTimeout,
		MaxBody:         cfg.MaxBody,
		QueueLength:     cfg.QueueLength,
		Version:         version,
		Logger:          logger,
		OutageDetection: cfg.PingInterval * (maxPingsOut + 1),
		ShutdownTimeout: workerShutdown(cfg),
		Observer:        lateness,
	}
	if err := persistence(ctx, nc, subjects, cfg, logger, &wcfg); err != nil {
		nc.Close()
		return err
	}
	w, err := bus.NewWorker(nc, wcfg)
	if err != nil {
		nc.Close()
		return err
	}
	stopHTTP := func() {}
	if ln != nil {
		stopHTTP, err = serveHTTP(ctx, ln, w, nc, lateness, cfg.ShutdownTimeout, logger)
		if err != nil {
			nc.Close()
			return err
		}
	}
	runErr := w.Run(ctx)

	// Drain the connection: pending publishes are flushed before it closes.
	// The worker had most of IDLE_SHUTDOWN_TIMEOUT; this gets the rest.
	if err := nc.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		logger.Warn("drain connection", "error", err)
	}
	select {
	case <-closed:
	case <-time.After(cfg.ShutdownTimeout - workerShutdown(cfg)):
		logger.Warn("connection did not drain in time; closing", "timeout", cfg.ShutdownTimeout)
		nc.Close()
	}
	stopHTTP()
	if runErr != nil {
		return runErr
	}
	logger.Info("idle-worker stopped")
	return nil
}

// workerShutdown is the worker's share of IDLE_SHUTDOWN_TIMEOUT; draining
// the connection and stopping HTTP get the rest.
func workerShutdown(cfg config) time.Duration { return cfg.ShutdownTimeout * 3 / 4 }

// maxPingsOut is how many pings may go unanswered before the client declares
// the connection dead.
const maxPingsOut = 2

// persistence sets up the registry and the quiesce stream as IDLE_PERSIST
// says: "on" requires JetStream, "auto" uses it when the server has it,
// "off" never does.
func persistence(ctx context.Context, nc *nats.Conn, subjects bus.Subjects, cfg config, logger *slog.Logger, wcfg *bus.WorkerConfig) error {
	if cfg.Persist == "off" {
		logger.Info("persistence off: backends are tracked in memory only")
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	st, err := store.Open(cctx, nc, subjects, store.Config{
		RegistryBucket: cfg.RegistryBucket,
		Stream: store.StreamConfig{
			Name:       cfg.QuiesceStream,
			Duplicates: cfg.StreamDuplicates,
			MaxAge:     cfg.StreamMaxAge,
			MaxBytes:   cfg.StreamMaxBytes,
		},
	}, logger)
	switch {
	case errors.Is(err, store.ErrNoJetStream) && cfg.Persist == "auto":
		logger.Warn("JetStream not available: backends are tracked in memory only and quiesce events are not stored", "error", err)
		return nil
	case errors.Is(err, store.ErrNoJetStream):
		return fmt.Errorf("IDLE_PERSIST=on: %w", err)
	case err != nil:
		return err
	}
	wcfg.Registry, wcfg.Publisher = st.Registry, st.Stream
	logger.Info("persistence on", "registry_bucket", cfg.RegistryBucket, "quiesce_stream", cfg.QuiesceStream)
	return nil
}

// connect dials NATS once, bounded by cfg.ConnectTimeout; after that first
// success it reconnects for ever.
func connect(url string, cfg config, logger *slog.Logger) (*nats.Conn, <-chan struct{}, error) {
	log := logger.With("component", "nats")
	closed := make(chan struct{})
	var disconnectedAt time.Time
	var secure []nats.Option
	if cfg.NATSURL != "" { // the embedded server has no authentication or TLS
		var err error
		if secure, err = cfg.natsConn().Options(); err != nil {
			return nil, nil, natsConnError(err)
		}
	}
	opts := append(secure,
		nats.Name("idle-worker"),
		nats.Timeout(cfg.ConnectTimeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.PingInterval(cfg.PingInterval),
		nats.MaxPingsOutstanding(maxPingsOut),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			disconnectedAt = time.Now()
			if err != nil { // nil when we close the connection ourselves
				log.Warn("disconnected from NATS", "error", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("reconnected to NATS", "url", c.ConnectedUrlRedacted(), "outage", time.Since(disconnectedAt).Round(time.Millisecond))
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Error("NATS error", "subject", subject, "error", err)
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }),
	)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to NATS at %s%s: %w", redact(url), connectHint(err), err)
	}
	auth := "none"
	switch a := cfg.natsConn().Auth(); {
	case cfg.NATSURL == "":
	case a != 0:
		auth = a.String()
	case urlHasUser(cfg.NATSURL):
		auth = "URL user information"
	}
	_, tlsErr := nc.TLSConnectionState()
	log.Info("connected to NATS", "url", nc.ConnectedUrlRedacted(), "auth", auth, "tls", tlsErr == nil)
	return nc, closed, nil
}

// connectHint explains a failed first connection that retrying will not
// fix: a refused login or a failed TLS handshake.
func connectHint(err error) string {
	switch {
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAuthRevoked):
		return " (login refused: check IDLE_NATS_CREDS, IDLE_NATS_NKEY_SEED, IDLE_NATS_USER and IDLE_NATS_PASSWORD, or IDLE_NATS_TOKEN)"
	case isTLSError(err):
		return " (TLS failed: check IDLE_NATS_TLS_CA, IDLE_NATS_TLS_CERT and IDLE_NATS_TLS_KEY)"
	}
	return ""
}

// isTLSError reports whether err comes from TLS: a certificate the client
// or the server refused (a server that refuses the client's certificate
// closes the connection right after the handshake: nats.ErrTLS), or a TLS
// requirement one side does not meet.
func isTLSError(err error) bool {
	var (
		verify    *tls.CertificateVerificationError
		alert     tls.AlertError
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		record    tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &verify), errors.As(err, &alert), errors.As(err, &unknownCA),
		errors.As(err, &hostname), errors.As(err, &invalid), errors.As(err, &record):
		return true
	case errors.Is(err, nats.ErrTLS), errors.Is(err, nats.ErrSecureConnRequired), errors.Is(err, nats.ErrSecureConnWanted):
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "tls: ") || strings.Contains(msg, "x509: ")
}

// errShuttingDown is /readyz's reason once a signal asked the worker to
// stop.
var errShuttingDown = errors.New("shutting down")

// serveHTTP serves /metrics, /healthz and /readyz on ln until the returned
// stop is called, which shuts the server down gracefully within timeout.
func serveHTTP(ctx context.Context, ln net.Listener, w *bus.Worker, nc *nats.Conn, lateness *metrics.Lateness, timeout time.Duration, logger *slog.Logger) (stop func(), err error) {
	log := logger.With("component", "http")
	reg, err := metrics.NewRegistry(metrics.NewCollector(w, nc), lateness)
	if err != nil {
		return nil, err
	}
	ready := metrics.Readiness(nc, w.Ready())
	srv := &http.Server{
		Handler: metrics.Handler(reg, func() error {
			if ctx.Err() != nil {
				return errShuttingDown
			}
			return ready()
		}, log),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("HTTP server failed", "error", err)
		}
	}()
	log.Info("serving /metrics, /healthz and /readyz", "addr", ln.Addr().String())
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			log.Warn("HTTP server did not shut down in time; closing", "error", err)
			_ = srv.Close()
		}
		<-done
	}, nil
}

// redact hides user information in a comma-separated list of NATS URLs, for
// logs and errors.
func redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		u, err := parseNATSURL(p)
		if err != nil {
			parts[i] = "(unparseable URL)"
			continue
		}
		if u.User != nil {
			u.User = neturl.User("redacted")
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}

// startEmbedded starts the embedded nats-server with JetStream.
func startEmbedded(cfg config, logger *slog.Logger) (_ *server.Server, _ func(), err error) {
	host, portStr, _ := net.SplitHostPort(cfg.EmbeddedListen)
	port, _ := strconv.Atoi(portStr)
	if port == 0 {
		port = server.RANDOM_PORT
	}
	dir, removeDir := cfg.EmbeddedStoreDir, false
	if dir == "" {
		d, mkErr := os.MkdirTemp("", "idle-worker-js-")
		if mkErr != nil {
			return nil, nil, fmt.Errorf("embedded nats-server: store dir: %w", mkErr)
		}
		dir, removeDir = d, true
		defer func() {
			if err != nil {
				_ = os.RemoveAll(dir) // the server never came up: leave nothing behind
			}
		}()
	}
	opts := &server.Options{
		ServerName: "idle-worker-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   dir,
		NoSigs:     true,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, nil, fmt.Errorf("embedded nats-server: %w", err)
	}
	log := logger.With("component", "nats-server")
	fatal := make(chan error, 1)
	srv.SetLoggerV2(serverLog{l: log, fatal: fatal}, logger.Enabled(context.Background(), slog.LevelDebug), false, false)
	go srv.Start()
	// Wait for readiness, but stop at once on a fatal error such as a port
	// already in use.
	for deadline := time.Now().Add(10 * time.Second); !srv.ReadyForConnections(50 * time.Millisecond); {
		select {
		case err := <-fatal:
			stopServer(srv)
			return nil, nil, fmt.Errorf("embedded nats-server on %s: %w", cfg.EmbeddedListen, err)
		default:
		}
		if time.Now().After(deadline) {
			stopServer(srv)
			return nil, nil, fmt.Errorf("embedded nats-server: not ready to accept connections on %s within 10s", cfg.EmbeddedListen)
		}
	}
	log.Info("embedded nats-server listening", "url", srv.ClientURL(), "store_dir", dir)
	cleanup := func() {
		stopServer(srv)
		if removeDir {
			_ = os.RemoveAll(dir)
		}
	}
	return srv, cleanup, nil
}

// stopServer shuts srv down and waits until it has, so nothing writes to its
// store afterwards.
func stopServer(srv *server.Server) {
	srv.Shutdown()
	srv.WaitForShutdown()
}

// serverLog adapts slog to nats-server's Logger. Fatal errors also go to
// fatal, without blocking, so startEmbedded can fail fast.
type serverLog struct {
	l     *slog.Logger
	fatal chan<- error
}

func (s serverLog) Noticef(f string, a ...any) { s.l.Debug(fmt.Sprintf(f, a...)) } // its banner is noise at info
func (s serverLog) Warnf(f string, a ...any)   { s.l.Warn(fmt.Sprintf(f, a...)) }
func (s serverLog) Fatalf(f string, a ...any) {
	msg := fmt.Sprintf(f, a...)
	s.l.Error(msg)
	select {
	case s.fatal <- errors.New(msg):
	default:
	}
}
func (s serverLog) Errorf(f string, a ...any) { s.l.Error(fmt.Sprintf(f, a...)) }
func (s serverLog) Debugf(f string, a ...any) { s.l.Debug(fmt.Sprintf(f, a...)) }
func (s serverLog) Tracef(f string, a ...any) { s.l.Debug(fmt.Sprintf(f, a...)) }
