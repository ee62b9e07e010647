package store_test

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/internal/logtest"
	"github.com/idle-worker/idle-worker/internal/natstest"
	"github.com/idle-worker/idle-worker/store"
)

// TestReplicatedStream: on a 3-node cluster with 3 replicas, many records
// and events of a few partitions written at once are all stored, without a
// single refused write: fenced writes of one partition go one at a time
// (the server refuses a second while the first is replicated), and a
// second store reads everything back.
func TestReplicatedStream(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	c := natstest.StartCluster(t, 3)
	nc, err := nats.Connect(c.URLs())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var logs logtest.Buffer
	cfg := store.Config{Partitions: 4, Replicas: 3, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	defer func() {
		if t.Failed() {
			t.Logf("store log:\n%s", logs.String())
		}
	}()
	st, err := store.Open(ctx, nc, subj, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close(context.Background())
	rs, err := st.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Claim(ctx, []int{0, 1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	const n = 600
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		key := "r3.k" + strconv.Itoa(i)
		if i%3 == 0 {
			ev := bus.QuiesceEvent{ID: rs.ID + "-" + strconv.Itoa(i+1), Key: key, Reason: "idle_timeout", Attempt: 1, At: time.Now()}
			if err := st.Publish(&ev, draining(key, uint64(i+1))); err != nil {
				t.Fatal(err)
			}
			continue
		}
		wg.Add(1)
		st.Put(running(key, uint64(i+1)), func(err error) { errs <- err; wg.Done() })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a record not stored: %v", err)
		}
	}
	if err := st.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// Without one fenced write per partition at a time, thousands are
	// refused and retried; a few may fail while the new stream's leader
	// settles.
	if f := st.Counters().Failed; f > n/20 {
		t.Errorf("%d writes failed and were retried; want at most a few (one fenced write per partition at a time)", f)
	}
	nc2, err := nats.Connect(c.URLs())
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	st2, err := store.Open(ctx, nc2, subj, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close(context.Background())
	if _, err := st2.Load(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := st2.Claim(ctx, []int{0, 1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Records) != n {
		t.Fatalf("read back %d records; want %d", len(got.Records), n)
	}
}
