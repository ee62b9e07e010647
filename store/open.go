package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idle-worker/idle-worker/bus"
)

// ErrNoJetStream reports that the server offers no JetStream to this
// account.
var ErrNoJetStream = errors.New("store: JetStream not available")

// Config says where Open keeps the worker's state.
type Config struct {
	// RegistryBucket is the KV bucket of the registry (default
	// DefaultRegistryBucket).
	RegistryBucket string
	// Stream describes the quiesce event stream.
	Stream StreamConfig
}

// Store is the worker's durable state: the registry and the quiesce stream,
// to hand to bus.WorkerConfig.
type Store struct {
	Registry *KVRegistry
	Stream   *QuiesceStream
}

// Open checks that the server offers JetStream (an error wrapping
// ErrNoJetStream when it does not), then creates or opens the registry
// bucket and the quiesce stream on subjects' P.quiesce.>. The worker closes
// both when it stops.
func Open(ctx context.Context, nc *nats.Conn, subjects bus.Subjects, cfg Config, logger *slog.Logger) (*Store, error) {
	if err := CheckJetStream(ctx, nc); err != nil {
		return nil, err
	}
	if cfg.RegistryBucket == "" {
		cfg.RegistryBucket = DefaultRegistryBucket
	}
	reg, err := OpenKVRegistry(ctx, nc, cfg.RegistryBucket, logger)
	if err != nil {
		return nil, err
	}
	stream, err := OpenQuiesceStream(ctx, nc, subjects, cfg.Stream, logger)
	if err != nil {
		_ = reg.Close(ctx)
		return nil, err
	}
	return &Store{Registry: reg, Stream: stream}, nil
}

// CheckJetStream reports whether the server behind nc offers JetStream to
// this account: nil, an error wrapping ErrNoJetStream, or another failure
// as it is.
func CheckJetStream(ctx context.Context, nc *nats.Conn) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if _, err := js.AccountInfo(ctx); err != nil {
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) || errors.Is(err, nats.ErrNoResponders) {
			return fmt.Errorf("%w: %w", ErrNoJetStream, err)
		}
		return fmt.Errorf("store: JetStream account info: %w", err)
	}
	return nil
}
