package main

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/partition"
)

// replyOK starts a heartbeat reply that reports success; a refused one
// (the store could not store the record, say) is {"ok":false,...}.
var replyOK = []byte(`{"ok":true`)

// requestAll sends a heartbeat request with body on each of subjects from
// nc, all at once, and waits until every reply has arrived (failing after
// waitBound). A durable worker answers a new backend only once its record
// is stored. It returns how many replies were refusals.
func requestAll(ctx context.Context, nc *nats.Conn, subjects []string, body []byte) (refused int, err error) {
	inbox := nc.NewInbox() + "."
	all := make(chan struct{})
	var replies, bad atomic.Int64
	sub, err := nc.Subscribe(inbox+"*", func(m *nats.Msg) {
		if !bytes.HasPrefix(m.Data, replyOK) {
			bad.Add(1)
		}
		if replies.Add(1) == int64(len(subjects)) {
			close(all)
		}
	})
	if err != nil {
		return 0, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return 0, err
	}
	if len(subjects) == 0 {
		return 0, nil
	}
	for i, s := range subjects {
		if err := nc.PublishRequest(s, inbox+strconv.Itoa(i), body); err != nil {
			return 0, err
		}
	}
	t := time.NewTimer(waitBound)
	defer t.Stop()
	select {
	case <-all:
		return int(bad.Load()), nil
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-t.C:
		return 0, fmt.Errorf("%d of %d heartbeat requests answered in %v", replies.Load(), len(subjects), waitBound)
	}
}

// syncKeys returns one backend key sync.<tag>.<j> in each of parts
// partitions.
func syncKeys(tag string, parts int) []string {
	keys := make([]string, parts)
	found := 0
	for j := 0; found < parts && j < 1000*parts; j++ {
		k := "sync." + tag + "." + strconv.Itoa(j)
		if p := partition.Of(k, parts); keys[p] == "" {
			keys[p], found = k, found+1
		}
	}
	return keys
}

// syncStore waits until a durable worker has stored every record changed
// by the heartbeats nc sent before: it sends a first heartbeat request for
// a new key in each of the store's parts partitions and waits for the
// replies. The worker applies nc's heartbeats in order and answers each
// only once its partition's log message is acknowledged, and a partition's
// messages are acknowledged in order (unless one failed: see the store's
// failure counter), so each reply says its partition holds what came
// before. The keys (sync.<tag>.<j>) ask for an hour: none falls due.
func syncStore(ctx context.Context, nc *nats.Conn, subj bus.Subjects, parts int, tag string) error {
	keys := syncKeys(tag, parts)
	subjects := make([]string, 0, len(keys))
	for _, k := range keys {
		if k != "" {
			subjects = append(subjects, subj.Activity(k))
		}
	}
	if len(subjects) != parts {
		return fmt.Errorf("sync keys cover %d of %d partitions", len(subjects), parts)
	}
	refused, err := requestAll(ctx, nc, subjects, []byte(registerBody))
	if err == nil && refused > 0 {
		err = fmt.Errorf("%d of %d sync heartbeats refused", refused, parts)
	}
	if err != nil {
		return fmt.Errorf("store sync: %w", err)
	}
	return nil
}
