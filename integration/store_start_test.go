package integration

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/internal/natstest"
	"github.com/idle-worker/idle-worker/partition"
	"github.com/idle-worker/idle-worker/store"
)

// v1Bucket writes a registry bucket as idle-worker v1 left it: one entry
// b.<bus.StoreKey(key)> per backend holding bus.EncodeRecord, m.id and
// m.hwm, plus raw entries as given. It returns the bucket.
func v1Bucket(t *testing.T, js jetstream.JetStream, id string, hwm uint64, recs []coordinator.Record, raw map[string]string) jetstream.KeyValue {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: store.V1RegistryBucket, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatalf("create the v1 bucket: %v", err)
	}
	put := func(k string, v []byte) {
		if _, err := kv.Put(ctx, k, v); err != nil {
			t.Fatalf("v1 bucket put %s: %v", k, err)
		}
	}
	put("m.id", []byte(id))
	put("m.hwm", strconv.AppendUint(nil, hwm, 10))
	for _, r := range recs {
		put("b."+bus.StoreKey(r.Key), bus.EncodeRecord(r))
	}
	for k, v := range raw {
		put(k, []byte(v))
	}
	return kv
}

// v1Entries returns every entry of kv: key -> revision and value.
func v1Entries(t *testing.T, kv jetstream.KeyValue) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatalf("v1 bucket keys: %v", err)
	}
	out := map[string]string{}
	for k := range keys.Keys() {
		e, err := kv.Get(ctx, k)
		if err != nil {
			t.Fatalf("v1 bucket get %s: %v", k, err)
		}
		out[k] = strconv.FormatUint(e.Revision(), 10) + ":" + string(e.Value())
	}
	return out
}

// A v1 registry bucket found on the first start is migrated into the
// stream: its records are restored (an undecodable one counted), its id
// kept, so a drain sent by v1 is re-sent with its id and a running backend
// is drained with the id v1 would have used; its high-water mark kept. The
// bucket is left as it was. A second start reads the stream alone: what was
// written to the bucket since is not migrated again.
func TestV1RegistryMigrated(t *testing.T) {
	t.Parallel()
	const (
		v1ID  = "V1registry7"
		v1HWM = 70000
		retry = 200 * time.Millisecond
	)
	s := startServer(t, natstest.JetStream())
	nc := connect(t, s.ClientURL())
	recs := []coordinator.Record{
		rec("mig.run", time.Hour, coordinator.Running, 5, 0),
		// Its timeout under the retry interval: a restored drain's idle_for
		// counts from the restart.
		rec("mig.drain", retry/2, coordinator.Draining, 6, coordinator.IdleTimeout),
		rec("mig.quiet", time.Minute, coordinator.Quiesced, 7, 0),
		rec("mig.odd%2F=x", time.Hour, coordinator.Running, 8, 0), // escaped in the entry's name
	}
	kv := v1Bucket(t, relJetStream(t, nc), v1ID, v1HWM, recs, map[string]string{"b.mig.bad": `{"timeout_ms":`})
	bucket := v1Entries(t, kv)
	events := subscribe(t, nc, prefix+".quiesce.>")
	opts := relOptions{policy: coordinator.Policy{DefaultIdleTimeout: longTimeout, RetryInterval: retry, RetryMaxInterval: retry}, store: true}

	w, _ := relStartWorker(t, s.ClientURL(), opts)
	if st := w.Stats(); st.Restored != 4 || st.RestoreSkipped != 1 {
		t.Errorf("first start: restored %d, skipped %d; want 4, 1 (b.mig.bad)", st.Restored, st.RestoreSkipped)
	}
	for _, want := range []struct {
		key, state string
		attempts   int
	}{{"mig.run", "running", 0}, {"mig.drain", "draining", 1}, {"mig.quiet", "quiesced", 0}, {"mig.odd%2F=x", "running", 0}} {
		if b, ok := adminGet(t, nc, want.key); !ok || b.State != want.state || b.Attempts != want.attempts {
			t.Errorf("%s after the migration: got %+v (tracked %v); want %s, attempts %d", want.key, b, ok, want.state, want.attempts)
		}
	}
	if ev := nextEvent(t, events, retry+bound); ev.Key != "mig.drain" || ev.ID != v1ID+"-6" || ev.Attempt != 2 {
		t.Errorf("re-sent event: got %s id %q attempt %d; want mig.drain id %s-6 attempt 2 (v1's id)", ev.Key, ev.ID, ev.Attempt, v1ID)
	}
	reportState(t, nc, "mig.drain", "quiesced")
	if n := adminQuiesce(t, nc, `{"match":"mig.run"}`); n != 1 {
		t.Fatalf("admin quiesce mig.run: got %d; want 1", n)
	}
	for {
		ev := nextEvent(t, events, bound)
		if ev.Key == "mig.drain" { // a re-send published before the report
			continue
		}
		if ev.Key != "mig.run" || ev.ID != v1ID+"-5" || ev.Attempt != 1 {
			t.Errorf("drain of mig.run: got %s id %q attempt %d; want mig.run id %s-5 attempt 1 (v1's generation)", ev.Key, ev.ID, ev.Attempt, v1ID)
		}
		break
	}

	v := openStoreView(t, nc)
	if m := v.waitMeta(); m.ID != v1ID || m.MigratedFrom != store.V1RegistryBucket || m.Partitions != store.DefaultPartitions {
		t.Errorf("store meta: got %+v; want id %s, migrated from %s, %d partitions", m, v1ID, store.V1RegistryBucket, store.DefaultPartitions)
	}
	if hw, err := strconv.ParseUint(v.highWater(), 10, 64); err != nil || hw < v1HWM {
		t.Errorf("high-water mark: got %d (%v); want at least v1's %d", hw, err, v1HWM)
	}
	if v.last(storeSnap(partition.Of("mig.quiet", store.DefaultPartitions))) == nil {
		t.Errorf("no snapshot of mig.quiet's partition; want the migrated records stored as snapshots")
	}
	if r := v.record("mig.quiet"); r.State != "quiesced" {
		t.Errorf("stored record of mig.quiet: got %v; want quiesced", r)
	}
	if got := v1Entries(t, kv); !maps.Equal(got, bucket) {
		t.Errorf("v1 bucket after the migration: got %v; want it untouched, %v", got, bucket)
	}
	if err := w.stop(bound); err != nil {
		t.Fatal(err)
	}

	// Written to the bucket after the migration: never read.
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	if _, err := kv.Put(ctx, "b.mig.late", bus.EncodeRecord(rec("mig.late", time.Hour, coordinator.Running, 9, 0))); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "m.id", []byte("Another")); err != nil {
		t.Fatal(err)
	}
	again, _ := relStartWorker(t, s.ClientURL(), opts)
	if st := again.Stats(); st.Restored != 4 || st.RestoreSkipped != 0 {
		t.Errorf("second start: restored %d, skipped %d; want 4 (from the stream), 0", st.Restored, st.RestoreSkipped)
	}
	if b, ok := adminGet(t, nc, "mig.late"); ok {
		t.Errorf("mig.late, written to the bucket after the migration, restored: %+v; want the bucket no longer read", b)
	}
	if m := v.waitMeta(); m.ID != v1ID {
		t.Errorf("store id after the second start: got %q; want %q", m.ID, v1ID)
	}
}

// A stream keeps the partition count it was set up with: a worker started
// with another, or on a stream whose meta was rewritten with another, is
// refused with store.ErrPartitions naming the count to use, and the binary
// exits with status 1 saying so.
func TestStorePartitionCountFixed(t *testing.T) {
	t.Parallel()
	rewrite := func(t *testing.T, v *storeView) {
		m, _ := json.Marshal(storeMeta{Format: 2, ID: v.waitMeta().ID, Partitions: 7})
		v.put(storeMetaSubject, m, nil)
	}
	tests := []struct {
		name       string
		partitions int                              // the worker's; 0: the default
		rewrite    func(t *testing.T, v *storeView) // before it starts
		want       string
	}{
		{name: "worker started with another count", partitions: 8, want: "IDLE_PARTITIONS=64"},
		{name: "meta rewritten with another count", rewrite: rewrite, want: "IDLE_PARTITIONS=7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, _, _, v := storedStore(t)
			if tt.rewrite != nil {
				tt.rewrite(t, v)
			}
			st := relOpenStore(t, connect(t, s.ClientURL()), tt.partitions)
			ctx, cancel := context.WithTimeout(context.Background(), bound)
			defer cancel()
			if _, err := st.Load(ctx); !errors.Is(err, store.ErrPartitions) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load: got %v; want store.ErrPartitions naming %s", err, tt.want)
			}

			env := map[string]string{"IDLE_NATS_URL": s.ClientURL(), "IDLE_PERSIST": "on", "IDLE_HTTP_ADDR": ""}
			if tt.partitions != 0 {
				env["IDLE_PARTITIONS"] = strconv.Itoa(tt.partitions)
			}
			p := startBinary(t, env)
			if code := p.exitCode(t, 10*time.Second); code != 1 {
				t.Errorf("binary: exit status %d; want 1", code)
			}
			if stderr := p.stderr.String(); !strings.Contains(stderr, tt.want) {
				t.Errorf("binary: stderr %q; want it to name %s", stderr, tt.want)
			}
		})
	}
}
