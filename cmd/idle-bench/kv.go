// The NATS-native alternative of the timeliness section: backends as keys of
// a KV bucket with per-key TTLs, watched for their expiry markers.

package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// kvBucket is the KV alternative's bucket, deleted after use.
const kvBucket = "idle_bench_ttl"

// measureKV tracks the same number of backends as keys with per-key TTLs
// in a KV bucket with limit markers, all deadlines within one second, and
// measures when the expiry markers reach a watcher.
func measureKV(ctx context.Context, url string, cfg config) (kvResult, error) {
	n := cfg.KVKeys
	r := kvResult{Keys: n, Concurrency: cfg.KVConcurrency, Storage: cfg.KVStorage}
	nc, err := nats.Connect(url, nats.Name("idle-bench kv writer"))
	if err != nil {
		return r, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return r, err
	}
	storage := jetstream.MemoryStorage
	if cfg.KVStorage == "file" {
		storage = jetstream.FileStorage
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:         kvBucket,
		History:        1,
		Storage:        storage,
		LimitMarkerTTL: time.Minute,
	})
	if err != nil {
		return r, err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), waitBound)
		defer cancel()
		_ = js.DeleteKeyValue(dctx, kvBucket)
	}()

	wnc, err := nats.Connect(url, nats.Name("idle-bench kv watcher"))
	if err != nil {
		return r, err
	}
	defer wnc.Close()
	wjs, err := jetstream.New(wnc)
	if err != nil {
		return r, err
	}
	wkv, err := wjs.KeyValue(ctx, kvBucket)
	if err != nil {
		return r, err
	}
	watcher, err := wkv.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		return r, err
	}
	defer watcher.Stop()
	got := newArrivals(n)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for e := range watcher.Updates() {
			if e == nil {
				continue
			}
			if op := e.Operation(); op == jetstream.KeyValuePurge || op == jetstream.KeyValueDelete {
				at := time.Now()
				i, ok := keyIndex(e.Key(), "tl.")
				got.record(i, ok, at)
			}
		}
	}()

	// Every deadline is put at target, then rounded up to a whole second of
	// TTL (the server's unit): all fall within [target, target+1s).
	deadlines := make([]time.Time, n)
	value := []byte("running")
	base := time.Now()
	target := base.Add(cfg.KVLead)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, cfg.KVConcurrency)
	for range cfg.KVConcurrency {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				pub := time.Now()
				ttl := max(time.Second, ceilTo(target.Sub(pub), time.Second))
				deadlines[i] = pub.Add(ttl)
				if _, err := kv.Create(ctx, "tl."+strconv.Itoa(i), value, jetstream.KeyTTL(ttl)); err != nil {
					errs <- fmt.Errorf("create key %d: %w", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return r, err
	}
	put := time.Since(base)
	r.PutSeconds = put.Seconds()
	r.PutsPerSecond = float64(n) / put.Seconds()
	var lastDL time.Time
	for _, dl := range deadlines {
		if dl.After(lastDL) {
			lastDL = dl
		}
	}
	if err := got.wait(ctx, lastDL.Add(30*time.Second)); err != nil {
		return r, err
	}
	late, missing := got.lateness(deadlines)
	r.Lateness = summarize(late)
	r.Lateness.Missing = missing
	got.mu.Lock()
	r.Lateness.Duplicates, r.Lateness.Unexpected = got.dups, got.unexpected
	got.mu.Unlock()
	r.Lateness.DeadlineSpanMS = ms(span(deadlines))
	if err := watcher.Stop(); err != nil && !errors.Is(err, nats.ErrBadSubscription) {
		return r, err
	}
	select {
	case <-watched:
	case <-time.After(waitBound):
	}
	return r, nil
}

// ceilTo rounds d up to a multiple of unit.
func ceilTo(d, unit time.Duration) time.Duration {
	if r := d % unit; r > 0 {
		return d - r + unit
	}
	return d - d%unit
}
