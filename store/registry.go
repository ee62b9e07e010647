package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/internal/lograte"
)

// DefaultRegistryBucket is the JetStream KV bucket of the registry.
const DefaultRegistryBucket = "idle_registry"

// KV entry names: a backend's record is b.<bus.StoreKey(key)>; the
// registry's id and generation high-water mark are meta entries.
const (
	kvBackendPrefix = "b."
	kvIDKey         = "m.id"
	kvHighWaterKey  = "m.hwm"
)

func kvKey(key string) string { return kvBackendPrefix + bus.StoreKey(key) }

// backendKey returns the backend key of a KV entry name, and false when the
// name is not a backend's.
func backendKey(kv string) (string, bool) {
	rest, ok := strings.CutPrefix(kv, kvBackendPrefix)
	if !ok {
		return "", false
	}
	return bus.ParseStoreKey(rest)
}

// KVRegistry is a bus.Registry in a JetStream key-value bucket. Writes are
// coalesced per key and published asynchronously by one writer goroutine,
// a batch at a time, so two writes of one key are never in flight together
// and the latest always wins.
type KVRegistry struct {
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	subj   string // "$KV.<bucket>."
	log    *slog.Logger
	wake   chan struct{}
	stop   chan struct{}
	done   chan struct{}
	closed atomic.Bool

	mu      sync.Mutex
	pending map[string][]byte // KV key -> value; nil value: delete
	failed  []string
	lastErr error            // the cause of the last failed write
	why     *lograte.Limiter // rate of the failure log

	writes atomic.Uint64
	errs   atomic.Uint64
}

// OpenKVRegistry creates or opens the bucket and starts the writer.
func OpenKVRegistry(ctx context.Context, nc *nats.Conn, bucket string, logger *slog.Logger) (*KVRegistry, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &KVRegistry{
		log:     logger.With("component", "registry"),
		subj:    "$KV." + bucket + ".",
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		pending: make(map[string][]byte),
		why:     lograte.New(time.Second, nil),
	}
	js, err := jetstream.New(nc,
		// A deep window keeps a registration wave flowing: idle-bench -only
		// durable -durable-register 400000, answered -> stored p99 1249 and
		// 958 ms with 8192, 693 and 475 ms with 65536.
		jetstream.WithPublishAsyncMaxPending(65536),
		jetstream.WithPublishAsyncTimeout(5*time.Second),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
			r.errs.Add(1)
			r.mu.Lock()
			r.failed = append(r.failed, strings.TrimPrefix(m.Subject, r.subj))
			r.lastErr = err
			r.mu.Unlock()
		}))
	if err != nil {
		return nil, fmt.Errorf("store: registry: %w", err)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "idle-worker registry of tracked backends",
		History:     1,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("store: registry bucket %q: %w", bucket, err)
	}
	r.js, r.kv = js, kv
	go r.writer()
	return r, nil
}

// Load reads every record, the registry id (creating it on first use) and
// the generation high-water mark.
func (r *KVRegistry) Load(ctx context.Context) (bus.RegistryState, error) {
	var st bus.RegistryState
	bad := map[string]int{} // skipped entries by cause, so each is logged once
	w, err := r.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return st, fmt.Errorf("store: registry load: %w", err)
	}
	defer func() { _ = w.Stop() }()
	for {
		var e jetstream.KeyValueEntry
		select {
		case e = <-w.Updates():
		case <-ctx.Done():
			return st, fmt.Errorf("store: registry load: %w", ctx.Err())
		}
		if e == nil {
			break // initial values delivered
		}
		switch k := e.Key(); k {
		case kvIDKey:
			st.ID = string(e.Value())
		case kvHighWaterKey:
			hw, err := strconv.ParseUint(string(e.Value()), 10, 64)
			if err != nil {
				st.Unreadable = "high-water mark is not a number"
				continue
			}
			st.HighWater = hw
		default:
			key, ok := backendKey(k)
			if !ok || kvKey(key) != k {
				// Not a name this registry writes: a second spelling of a
				// key would outlive the key's deletion and bring it back
				// at every start. Delete it.
				st.Skipped++
				bad["entry name not written by idle-worker"]++
				r.queue(k, nil)
				continue
			}
			rec, err := bus.ParseRecord(key, e.Value())
			if err != nil {
				st.Skipped++
				if bad[err.Error()]++; len(bad) <= 8 && bad[err.Error()] == 1 {
					r.log.Warn("skipping bad registry record", "backend", lograte.Clip(key, 200), "error", err)
				}
				continue
			}
			st.Records = append(st.Records, rec)
		}
	}
	if n := bad["entry name not written by idle-worker"]; n > 0 {
		r.log.Warn("deleting registry entries whose names idle-worker does not write", "entries", n)
	}
	// Removed backends leave delete markers; drop the old ones so the
	// bucket does not grow with every key ever seen.
	if err := r.kv.PurgeDeletes(ctx, jetstream.DeleteMarkersOlderThan(time.Hour)); err != nil {
		r.log.Warn("purging old delete markers", "error", err)
	}
	if st.ID == "" {
		id := nuid.Next()
		if _, err := r.kv.Create(ctx, kvIDKey, []byte(id)); err != nil {
			// Another writer may have won the race: read theirs.
			e, gerr := r.kv.Get(ctx, kvIDKey)
			if gerr != nil {
				return st, fmt.Errorf("store: registry id: %w", errors.Join(err, gerr))
			}
			id = string(e.Value())
		}
		st.ID, st.NewID = id, true
	}
	return st, nil
}

// Put queues rec for writing.
func (r *KVRegistry) Put(rec coordinator.Record) { r.queue(kvKey(rec.Key), bus.EncodeRecord(rec)) }

// Delete queues the removal of key.
func (r *KVRegistry) Delete(key string) { r.queue(kvKey(key), nil) }

// SetHighWater queues the generation high-water mark.
func (r *KVRegistry) SetHighWater(gen uint64) {
	r.queue(kvHighWaterKey, strconv.AppendUint(nil, gen, 10))
}

// StoreID replaces the registry id and waits until it is stored.
func (r *KVRegistry) StoreID(ctx context.Context, id string) error {
	if _, err := r.kv.Put(ctx, kvIDKey, []byte(id)); err != nil {
		return fmt.Errorf("store: registry id: %w", err)
	}
	return nil
}

// StoreHighWater stores the generation high-water mark and waits for it.
func (r *KVRegistry) StoreHighWater(ctx context.Context, gen uint64) error {
	if _, err := r.kv.Put(ctx, kvHighWaterKey, strconv.AppendUint(nil, gen, 10)); err != nil {
		return fmt.Errorf("store: registry high-water mark: %w", err)
	}
	return nil
}

func (r *KVRegistry) queue(k string, v []byte) {
	r.mu.Lock()
	r.pending[k] = v
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Counters returns how many writes were acknowledged and how many failed
// (and were retried).
func (r *KVRegistry) Counters() bus.RegistryCounters {
	return bus.RegistryCounters{Written: r.writes.Load(), Failed: r.errs.Load()}
}

// Pending returns the number of keys waiting to be written.
func (r *KVRegistry) Pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pending)
}

func (r *KVRegistry) writer() {
	defer close(r.done)
	backoff := time.Duration(0)
	for {
		var retry <-chan time.Time
		if backoff > 0 {
			retry = time.After(backoff)
		}
		select {
		case <-r.wake:
		case <-retry:
		case <-r.stop:
			r.flush()
			return
		}
		if r.flush() {
			backoff = 0
		} else {
			backoff = min(max(2*backoff, 10*time.Millisecond), time.Second)
		}
	}
}

// flush writes one batch and waits for its acknowledgements. Failed writes
// go back to pending unless a newer value is already there. It reports
// whether everything was written.
func (r *KVRegistry) flush() bool {
	r.mu.Lock()
	batch := r.pending
	r.pending = make(map[string][]byte)
	r.mu.Unlock()
	if len(batch) == 0 {
		return true
	}
	sent := 0
	for k, v := range batch {
		m := nats.NewMsg(r.subj + k)
		if v == nil {
			m.Header.Set("KV-Operation", "DEL")
		} else {
			m.Data = v
		}
		if _, err := r.js.PublishMsgAsync(m); err != nil {
			r.errs.Add(1)
			r.mu.Lock()
			r.failed = append(r.failed, k)
			r.lastErr = err
			r.mu.Unlock()
			continue
		}
		sent++
	}
	select {
	case <-r.js.PublishAsyncComplete():
	case <-time.After(10 * time.Second):
		r.log.Warn("registry writes not acknowledged in 10s", "batch", len(batch))
	}
	r.mu.Lock()
	failed, cause := r.failed, r.lastErr
	r.failed, r.lastErr = nil, nil
	for _, k := range failed {
		if _, newer := r.pending[k]; !newer {
			if v, ok := batch[k]; ok {
				r.pending[k] = v
			}
		}
	}
	r.mu.Unlock()
	r.writes.Add(uint64(sent - min(sent, len(failed))))
	if len(failed) > 0 {
		if ok, n := r.why.Allow("write failed"); ok {
			r.log.Warn("registry writes failed; retrying", "failed", len(failed), "batch", len(batch), "error", cause, "suppressed", n)
		}
		return false
	}
	return true
}

// Close writes what is pending, bounded by ctx, and stops the writer.
func (r *KVRegistry) Close(ctx context.Context) error {
	if r.closed.Swap(true) {
		return nil
	}
	close(r.stop)
	select {
	case <-r.done:
	case <-ctx.Done():
		return fmt.Errorf("store: registry close: %w", ctx.Err())
	}
	if n := r.Pending(); n > 0 {
		return fmt.Errorf("store: registry close: %d writes not stored", n)
	}
	return nil
}
