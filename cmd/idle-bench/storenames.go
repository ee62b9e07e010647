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

// freshStore returns store.Open's default configuration under a stream
// name no earlier measurement used. A stream deleted on a file store is
// removed from disk in the background, and deleting it again under the
// same name before that finishes can leave its directory behind and fail
// the next create (err_code 10049, seen on a loaded 2-core machine); fresh
// names keep measurements independent. Every such stream has the same
// subjects (P.store.>), so only one exists at a time: each measurement
// removes its own with removeStore.
func freshStore() store.Config {
	return store.Config{Stream: fmt.Sprintf("%s_%d", store.DefaultStreamName, storeSeq.Add(1))}
}

// removeStore deletes the stream of names, so the server is left as it
// was; best effort.
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
	_ = js.DeleteStream(ctx, names.Stream)
}
