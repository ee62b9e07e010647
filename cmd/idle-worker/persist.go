package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/partition"
	"github.com/idle-worker/idle-worker/store"
)

// closeStore closes the store that persistence opened, on a start that
// failed before the worker ran (the worker closes it otherwise).
func closeStore(wcfg bus.WorkerConfig, cfg config, logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if wcfg.Store != nil {
		if err := wcfg.Store.Close(ctx); err != nil {
			logger.Warn("closing the store", "error", err)
		}
	}
}

// persistence sets up the store (one JetStream stream) as IDLE_PERSIST
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
		Stream:     cfg.QuiesceStream,
		Partitions: cfg.Partitions,
		Replicas:   cfg.StoreReplicas,
		Duplicates: cfg.StreamDuplicates,
		MaxAge:     cfg.StreamMaxAge,
		V1Bucket:   cfg.RegistryBucket,
		Logger:     logger,
	})
	switch {
	case errors.Is(err, store.ErrNoJetStream) && cfg.Mapped:
		return fmt.Errorf("IDLE_MAPPED: partitions need JetStream, which the server does not offer: %w", err)
	case errors.Is(err, store.ErrNoJetStream) && cfg.Persist == "auto":
		logger.Warn("JetStream not available: backends are tracked in memory only and quiesce events are not stored", "error", err)
		return nil
	case errors.Is(err, store.ErrNoJetStream):
		return fmt.Errorf("IDLE_PERSIST=on: %w", err)
	case err != nil:
		return err
	}
	wcfg.Store, wcfg.Cluster = st, true
	if cfg.Mapped {
		wcfg.Router = partition.NewRouter(subjects)
	}
	logger.Info("persistence on", "stream", cfg.QuiesceStream, "partitions", cfg.Partitions, "replicas", cfg.StoreReplicas)
	return nil
}
