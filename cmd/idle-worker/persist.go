package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/store"
)

// closeStore closes the registry and publisher that persistence opened, on
// a start that failed before the worker ran (the worker closes them
// otherwise).
func closeStore(wcfg bus.WorkerConfig, cfg config, logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if wcfg.Publisher != nil {
		if err := wcfg.Publisher.Close(ctx); err != nil {
			logger.Warn("closing the quiesce stream", "error", err)
		}
	}
	if wcfg.Registry != nil {
		if err := wcfg.Registry.Close(ctx); err != nil {
			logger.Warn("closing the registry", "error", err)
		}
	}
}

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
