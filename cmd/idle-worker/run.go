package main

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/embedded"
	"github.com/idle-worker/idle-worker/member"
	"github.com/idle-worker/idle-worker/metrics"
	"github.com/idle-worker/idle-worker/natsconn"
)

// run starts the service and blocks until ctx is done, then shuts down within
// cfg.ShutdownTimeout. It returns nil after a clean shutdown.
func run(ctx context.Context, cfg config, logger *slog.Logger) error {
	logger.Info("idle-worker starting", "version", version)
	ln, err := listenHTTP(cfg, logger)
	if err != nil {
		return err
	}
	if ln != nil {
		defer ln.Close() // a no-op once the HTTP server has shut down
	}

	url, tempStore := cfg.NATSURL, false
	if url == "" {
		srv, err := embedded.Start(cfg.embedded(logger))
		if err != nil {
			return err
		}
		defer closeEmbedded(srv, logger)
		url, tempStore = srv.ClientURL(), srv.TempStore() && cfg.Persist != "off"
		if tempStore {
			logger.Warn("the JetStream store is a temporary directory: every tracked backend is lost at exit; set IDLE_EMBEDDED_STORE_DIR to keep them across restarts",
				"store_dir", srv.StoreDir())
		}
	}
	nc, closed, err := natsconn.Dial(url, cfg.dial(), logger)
	if err != nil {
		return natsConnError(err)
	}
	defer nc.Close() // on the way out of a failed start; a no-op after closeConn

	subjects, err := bus.NewSubjects(cfg.SubjectPrefix)
	if err != nil {
		return bad("SUBJECT_PREFIX", "%v", err)
	}
	lateness := metrics.NewLateness()
	wcfg := workerConfig(cfg, subjects, lateness, logger)
	if err := persistence(ctx, nc, subjects, cfg, logger, &wcfg); err != nil {
		return err
	}
	var peers *memberPeers
	if wcfg.Cluster {
		if cfg.WorkerName == "" {
			cfg.WorkerName = member.DefaultName()
		}
		peers = &memberPeers{name: cfg.WorkerName}
		wcfg.Peers = peers
	}
	w, err := bus.NewWorker(nc, wcfg)
	if err != nil {
		closeStore(wcfg, cfg, logger)
		return err
	}
	ready, wait := startWorker(ctx, w, nc, subjects, peers, cfg, logger)
	stopHTTP := func() {}
	if ln != nil {
		if stopHTTP, err = serveHTTP(ctx, ln, w, nc, lateness, ready, cfg.ShutdownTimeout, logger); err != nil {
			logger.Error("no /metrics, /healthz or /readyz: the HTTP server could not start", "component", "http", "error", err)
		}
	}

	atStop, runErr := wait()
	if tempStore {
		warnDiscarded(atStop, logger)
	}
	closeConn(nc, closed, cfg, logger)
	stopHTTP()
	if runErr != nil {
		return runErr
	}
	logger.Info("idle-worker stopped")
	return nil
}

// workerConfig is the worker's configuration, without persistence.
func workerConfig(cfg config, subjects bus.Subjects, lateness *metrics.Lateness, logger *slog.Logger) bus.WorkerConfig {
	return bus.WorkerConfig{
		Subjects: subjects,
		Policy: coordinator.Policy{
			DefaultIdleTimeout: cfg.DefaultTimeout,
			MaxBackends:        cfg.MaxBackends,
			RetryInterval:      cfg.QuiesceRetry,
			RetryMaxInterval:   cfg.QuiesceRetryMax,
			ForgetAfter:        cfg.ForgetAfter,
			MaxPerInstance:     cfg.MaxPerInstance,
		},
		QuiesceRate:     cfg.QuiesceRate,
		MaxTimeout:      cfg.MaxTimeout,
		MaxBody:         cfg.MaxBody,
		ReplyPrefixes:   cfg.ReplyPrefixes,
		QueueLength:     cfg.QueueLength,
		Version:         version,
		Logger:          logger,
		OutageDetection: cfg.dial().DeadAfter(),
		ShutdownTimeout: workerShutdown(cfg),
		Observer:        lateness,
	}
}

// workerShutdown is the worker's share of IDLE_SHUTDOWN_TIMEOUT; draining
// the connection and stopping HTTP get the rest.
func workerShutdown(cfg config) time.Duration { return cfg.ShutdownTimeout * 3 / 4 }

// closeEmbedded stops the embedded nats-server and removes a temporary
// store.
func closeEmbedded(srv *embedded.Server, logger *slog.Logger) {
	if err := srv.Close(); err != nil {
		logger.Warn("closing the embedded nats-server", "error", err)
	}
}

// warnDiscarded says how many tracked backends go with the temporary store.
func warnDiscarded(s bus.Stats, logger *slog.Logger) {
	n := s.Running + s.Draining + s.Quiesced
	level := slog.LevelWarn
	if n == 0 {
		level = slog.LevelInfo
	}
	logger.Log(context.Background(), level, "discarding the tracked backends with the temporary JetStream store; set IDLE_EMBEDDED_STORE_DIR to keep them across restarts",
		"backends", n)
}

// closeConn drains the connection: pending publishes are flushed before it
// closes. The worker had most of IDLE_SHUTDOWN_TIMEOUT; this gets the rest.
func closeConn(nc *nats.Conn, closed <-chan struct{}, cfg config, logger *slog.Logger) {
	if err := nc.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		logger.Warn("drain connection", "error", err)
	}
	select {
	case <-closed:
	case <-time.After(cfg.ShutdownTimeout - workerShutdown(cfg)):
		logger.Warn("connection did not drain in time; closing", "timeout", cfg.ShutdownTimeout)
		nc.Close()
	}
}
