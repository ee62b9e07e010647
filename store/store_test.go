package store_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/internal/natstest"
	"github.com/idle-worker/idle-worker/store"
)

const bound = 10 * time.Second

func connect(t *testing.T, s *natstest.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func ctxBound(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	t.Cleanup(cancel)
	return ctx
}

// TestOpenWithoutJetStream: a server without JetStream is reported with
// ErrNoJetStream, so IDLE_PERSIST=auto can fall back to memory.
func TestOpenWithoutJetStream(t *testing.T) {
	nc := connect(t, natstest.Start(t))
	_, err := store.Open(ctxBound(t), nc, bus.MustSubjects("idle"), store.Config{}, nil)
	if !errors.Is(err, store.ErrNoJetStream) {
		t.Fatalf("Open on a server without JetStream: %v; want ErrNoJetStream", err)
	}
}

// TestRegistryRoundTrip: what one registry writes, a new one loads: records
// (the newest value of each key), deletions, the high-water mark, and the
// same registry id.
func TestRegistryRoundTrip(t *testing.T) {
	s := natstest.Start(t, natstest.JetStream())
	ctx := ctxBound(t)
	st, err := store.Open(ctx, connect(t, s), bus.MustSubjects("idle"), store.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	first, err := st.Registry.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if first.ID == "" || len(first.Records) != 0 {
		t.Fatalf("fresh registry: id %q, %d records; want an id and none", first.ID, len(first.Records))
	}
	want := map[string]coordinator.Record{}
	for i := range 100 {
		rec := coordinator.Record{Key: "dev-7.svc." + strconv.Itoa(i), IdleTimeout: time.Second, State: coordinator.Running, Generation: uint64(i + 1)}
		st.Registry.Put(rec)
		want[rec.Key] = rec
	}
	// Newer values win, deletions stick, odd keys are escaped.
	upd := coordinator.Record{Key: "dev-7.svc.3", IdleTimeout: time.Minute, State: coordinator.Draining, Generation: 4, Reason: coordinator.IdleTimeout}
	st.Registry.Put(upd)
	want[upd.Key] = upd
	st.Registry.Delete("dev-7.svc.4")
	delete(want, "dev-7.svc.4")
	odd := coordinator.Record{Key: `a=b.c%2F"q"`, IdleTimeout: time.Millisecond, State: coordinator.Quiesced, Generation: 200, Reason: coordinator.Maintenance}
	st.Registry.Put(odd)
	want[odd.Key] = odd
	st.Registry.SetHighWater(1 << 20)
	if err := st.Registry.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if c := st.Registry.Counters(); c.Failed != 0 || c.Written == 0 {
		t.Errorf("counters %+v; want writes and no failures", c)
	}
	_ = st.Stream.Close(ctx)

	again, err := store.Open(ctx, connect(t, s), bus.MustSubjects("idle"), store.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = again.Registry.Close(context.Background()); _ = again.Stream.Close(context.Background()) })
	got, err := again.Registry.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != first.ID || got.HighWater != 1<<20 || got.Skipped != 0 {
		t.Errorf("reloaded id %q, high water %d, skipped %d; want %q, %d, 0", got.ID, got.HighWater, got.Skipped, first.ID, 1<<20)
	}
	if len(got.Records) != len(want) {
		t.Errorf("reloaded %d records; want %d", len(got.Records), len(want))
	}
	for _, rec := range got.Records {
		if want[rec.Key] != rec {
			t.Errorf("reloaded %+v; want %+v", rec, want[rec.Key])
		}
	}
}

// TestRegistrySkipsBadRecords: entries that do not decode are skipped and
// counted, never loaded.
func TestRegistrySkipsBadRecords(t *testing.T) {
	s := natstest.Start(t, natstest.JetStream())
	ctx := ctxBound(t)
	nc := connect(t, s)
	reg, err := store.OpenKVRegistry(ctx, nc, store.DefaultRegistryBucket, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close(context.Background()) })
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, store.DefaultRegistryBucket)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{
		"b.good":     `{"timeout_ms":1000,"state":"running","generation":1}`,
		"b.bad-json": `{"timeout_ms":`,
		"b.bad=ZZ":   `{"timeout_ms":1000,"state":"running","generation":1}`,
		"b.state":    `{"timeout_ms":1000,"state":"asleep","generation":1}`,
		"x.unknown":  `{}`,
	} {
		if _, err := kv.PutString(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	st, err := reg.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Records) != 1 || st.Records[0].Key != "good" || st.Skipped != 4 {
		t.Errorf("loaded %+v, skipped %d; want only \"good\", 4 skipped", st.Records, st.Skipped)
	}
}

// TestStreamStoresEvents: the publisher stores each event under its
// subject with its id, once even when published twice, and core
// subscribers see it.
func TestStreamStoresEvents(t *testing.T) {
	s := natstest.Start(t, natstest.JetStream())
	ctx := ctxBound(t)
	nc := connect(t, s)
	subj := bus.MustSubjects("idle")
	live, err := connect(t, s).SubscribeSync(subj.Quiesce(">"))
	if err != nil {
		t.Fatal(err)
	}
	q, err := store.OpenQuiesceStream(ctx, nc, subj, store.StreamConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ev := bus.QuiesceEvent{ID: "reg-7", Key: "dev-7.svc.1", Reason: "idle_timeout", At: time.Now(), Attempt: 1}
	for range 2 {
		if err := q.Publish(subj.Quiesce(ev.Key), &ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if c := q.Counters(); c.Failed != 0 || c.Abandoned != 0 {
		t.Errorf("counters %+v; want none failed", c)
	}
	m, err := live.NextMsg(bound)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := bus.ParseQuiesceEvent(m.Data); err != nil || got.ID != ev.ID || m.Header.Get(bus.HeaderMsgID) != ev.ID {
		t.Errorf("live event %s (%v) with id header %q; want id %s", m.Data, err, m.Header.Get(bus.HeaderMsgID), ev.ID)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, store.DefaultStreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Errorf("stream holds %d messages; want 1 (the second publish is a duplicate)", info.State.Msgs)
	}
}
