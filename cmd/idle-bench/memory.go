package main

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
)

// liveHeap returns the live heap after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// measureMemory tracks n backends in a coordinator and divides the growth of
// the live heap by n. The coordinator keeps its own copy of each key; what
// those copies cost is measured apart, by cloning every key once.
func measureMemory(n int) memoryResult {
	keys := ingestKeys("mem", n)
	keyLen := 0
	for _, k := range keys {
		keyLen += len(k)
	}

	clones := make([]string, n)
	before := liveHeap()
	for i, k := range keys {
		clones[i] = strings.Clone(k)
	}
	keyHeap := liveHeap() - before
	runtime.KeepAlive(clones)
	clones = nil

	before = liveHeap()
	c := coordinator.New(coordinator.Policy{DefaultIdleTimeout: time.Hour})
	t0 := time.Now()
	for i, k := range keys {
		if _, err := c.MarkActivity(k, t0.Add(time.Duration(i))); err != nil {
			panic(err) // no backend limit: cannot happen
		}
	}
	total := liveHeap() - before
	runtime.KeepAlive(c)
	runtime.KeepAlive(keys)

	per := float64(total) / float64(n)
	keyPer := float64(keyHeap) / float64(n)
	return memoryResult{
		Backends:        n,
		HeapBytes:       total,
		BytesPerBackend: per,
		KeyBytes:        float64(keyLen) / float64(n),
		KeyHeapBytes:    keyPer,
		BeyondKey:       per - keyPer,
	}
}

// measureShutdown fills a worker with cfg.ShutdownBackends backends through
// NATS, then times its shutdown.
func measureShutdown(ctx context.Context, url string, cfg config) (shutdownResult, error) {
	n := cfg.ShutdownBackends
	r := shutdownResult{Backends: n}
	rw, err := startWorker(url, cfg, time.Hour, nil)
	if err != nil {
		return r, err
	}
	subj := bus.MustSubjects(bus.DefaultPrefix)
	subjects := make([]string, n)
	for i := range subjects {
		subjects[i] = subj.Activity("sd-" + strconv.Itoa(i%1000) + ".gopls." + strconv.Itoa(i))
	}
	fill := cfg
	fill.Keys, fill.Messages = n, n
	applied := func() uint64 { return rw.w.Stats().Heartbeats }
	droppedN := func() uint64 { return rw.w.Stats().Dropped }
	if _, err := pump(ctx, url, fill, subjects, nil, applied, droppedN); err != nil {
		rw.stop()
		return r, fmt.Errorf("filling the worker: %w", err)
	}
	for deadline := time.Now().Add(waitBound); rw.w.Stats().Running != int64(n); {
		if time.Now().After(deadline) {
			rw.stop()
			return r, fmt.Errorf("worker tracks %d backends; want %d", rw.w.Stats().Running, n)
		}
		time.Sleep(time.Millisecond)
	}
	runDone, closed, err := rw.stop()
	if err != nil {
		return r, err
	}
	r.RunReturnMS, r.ClosedMS = ms(runDone), ms(closed)
	return r, nil
}
