package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
)

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
	if err := bus.CheckJetStream(cctx, nc); err != nil {
		if cfg.Persist == "on" {
			return fmt.Errorf("IDLE_PERSIST=on: %w", err)
		}
		logger.Warn("JetStream not available: backends are tracked in memory only and quiesce events are not stored", "error", err)
		return nil
	}
	reg, err := bus.OpenKVRegistry(cctx, nc, cfg.RegistryBucket, logger)
	if err != nil {
		return err
	}
	stream, err := bus.OpenQuiesceStream(cctx, nc, subjects, bus.StreamConfig{
		Name:       cfg.QuiesceStream,
		Duplicates: cfg.StreamDuplicates,
		MaxAge:     cfg.StreamMaxAge,
		MaxBytes:   cfg.StreamMaxBytes,
	}, logger)
	if err != nil {
		_ = reg.Close(cctx)
		return err
	}
	wcfg.Registry, wcfg.Stream = reg, stream
	logger.Info("persistence on", "registry_bucket", cfg.RegistryBucket, "quiesce_stream", cfg.QuiesceStream)
	return nil
}
