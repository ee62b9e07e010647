package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/metrics"
)

// listenHTTP binds IDLE_HTTP_ADDR, so that an address in use fails the
// start at once; serveHTTP serves on it once the worker exists. It returns
// nil when no HTTP is wanted. The default address is best effort: a second
// worker on the host runs without HTTP.
func listenHTTP(cfg config, logger *slog.Logger) (net.Listener, error) {
	if cfg.HTTPAddr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	switch {
	case err == nil:
		return ln, nil
	case cfg.HTTPAddrSet:
		return nil, fmt.Errorf("IDLE_HTTP_ADDR: %w", err)
	}
	logger.Error("no /metrics, /healthz or /readyz: the default IDLE_HTTP_ADDR is taken; set IDLE_HTTP_ADDR to a free address, or to empty to serve no HTTP",
		"component", "http", "addr", cfg.HTTPAddr, "error", err)
	return nil, nil
}

// errShuttingDown is /readyz's reason once a signal asked the worker to
// stop.
var errShuttingDown = errors.New("shutting down")

// serveHTTP serves /metrics, /healthz and /readyz on ln until the returned
// stop is called, which shuts the server down gracefully within timeout.
func serveHTTP(ctx context.Context, ln net.Listener, w *bus.Worker, nc *nats.Conn, lateness *metrics.Lateness, workerReady <-chan struct{}, timeout time.Duration, logger *slog.Logger) (stop func(), err error) {
	log := logger.With("component", "http")
	reg, err := metrics.NewRegistry(metrics.NewCollector(w, nc), lateness)
	if err != nil {
		return nil, err
	}
	ready := metrics.Readiness(nc, workerReady)
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
