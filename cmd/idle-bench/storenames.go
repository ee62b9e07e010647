package main

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idle-worker/idle-worker/store"
)

// storeSeq numbers the stores the bench creates within one process.
var storeSeq atomic.Uint64

// freshStore returns store.Open's default configuration under a registry
// bucket and quiesce stream name no earlier measurement used. A stream
// deleted on a file store is removed from disk in the background, and
// deleting it again under the same name before that finishes can leave
// its directory behind and fail the next create (err_code 10049, seen on
// a loaded 2-core machine); fresh names keep measurements independent.
func freshStore() store.Config {
	n := storeSeq.Add(1)
	return store.Config{
		RegistryBucket: fmt.Sprintf("%s_%d", store.DefaultRegistryBucket, n),
		Stream:         store.StreamConfig{Name: fmt.Sprintf("%s_%d", store.DefaultStreamName, n)},
	}
}

// removeStore deletes the quiesce stream and registry bucket of names, so
// the server is left as it was; best effort.
func removeStore(url string, names store.Config) {
	nc, err := nats.Connect(url, nats.Name("idle-bench store cleanup"))
	if err != nil {
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()
	_ = js.DeleteStream(ctx, names.Stream.Name)
	_ = js.DeleteKeyValue(ctx, names.RegistryBucket)
}
