package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/internal/lograte"
)

// V1RegistryBucket is the KV bucket where idle-worker v1 kept its registry,
// one entry per backend. Open migrates it into the stream once.
const V1RegistryBucket = "idle_registry"

// v1 entry names: b.<bus.StoreKey(key)> per backend, m.id and m.hwm.
const (
	v1BackendPrefix = "b."
	v1IDKey         = "m.id"
	v1HighWaterKey  = "m.hwm"
)

// v1Registry is what a v1 bucket holds.
type v1Registry struct {
	ID        string
	HighWater uint64
	Records   []entry // upserts, lsn 0
	Skipped   int
}

// readV1 reads a v1 registry bucket whole. It returns found false when the
// bucket does not exist. Entries that do not decode are counted and
// skipped, each cause logged once.
func readV1(ctx context.Context, js jetstream.JetStream, bucket string, log *slog.Logger) (v1Registry, bool, error) {
	var r v1Registry
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return r, false, nil
	}
	if err != nil {
		return r, false, fmt.Errorf("store: v1 registry bucket %q: %w", bucket, err)
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return r, true, fmt.Errorf("store: read v1 registry bucket %q: %w", bucket, err)
	}
	defer func() { _ = w.Stop() }()
	bad := map[string]int{}
	skip := func(key, why string) {
		r.Skipped++
		if bad[why]++; bad[why] == 1 && len(bad) <= 8 {
			log.Warn("v1 registry: skipping an entry", "entry", lograte.Clip(key, 200), "reason", why)
		}
	}
	for {
		var e jetstream.KeyValueEntry
		select {
		case e = <-w.Updates():
		case <-ctx.Done():
			return r, true, fmt.Errorf("store: read v1 registry bucket %q: %w", bucket, ctx.Err())
		}
		if e == nil {
			return r, true, nil // every current value delivered
		}
		switch k := e.Key(); k {
		case v1IDKey:
			r.ID = string(e.Value())
		case v1HighWaterKey:
			hw, err := strconv.ParseUint(string(e.Value()), 10, 64)
			if err != nil {
				skip(k, "high-water mark is not a number")
				continue
			}
			r.HighWater = hw
		default:
			rest, ok := strings.CutPrefix(k, v1BackendPrefix)
			if !ok {
				skip(k, "entry name not written by idle-worker")
				continue
			}
			key, ok := bus.ParseStoreKey(rest)
			if !ok || v1BackendPrefix+bus.StoreKey(key) != k {
				skip(k, "entry name not written by idle-worker")
				continue
			}
			rec, err := bus.ParseRecord(key, e.Value())
			if err != nil {
				skip(k, err.Error())
				continue
			}
			r.Records = append(r.Records, entry{rec: rec})
		}
	}
}
