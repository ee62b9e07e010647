//go:build durableresearch

package durable

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestStoreLayout writes N registry records in one layout, measures the
// process's memory (server and client share it, as in the embedded
// default), restarts the server on the same store, and times reading every
// record back. One layout per process run:
//
//	LAYOUT=stream N=200000  P.reg.<p>.<K>, MaxMsgsPerSubject 1, 64 partitions
//	LAYOUT=kv     N=200000  today's bucket: $KV.idle_registry.b.<K>
//	LAYOUT=snap   N=200000  per-partition snapshots: P.snap.<p>.<chunk>, 256 partitions
//
// Reads: stream → (a) one ordered consumer DeliverLastPerSubject on P.reg.>
// and (a8) eight of them, each on 8 partitions; kv → (b) KV WatchAll with
// IgnoreDeletes; snap → (c) direct get last-by-subject of every chunk, 32
// in parallel.
func TestStoreLayout(t *testing.T) {
	layout := os.Getenv("LAYOUT")
	if layout == "" {
		layout = "stream"
	}
	n := envInt("N", 200000)
	dir := t.TempDir()
	rss0, heap0 := memNow()
	s := startServer(t, dir)
	nc, js := connect(t, s.ClientURL())
	ctx := context.Background()
	rss1, heap1 := memNow()
	t.Logf("layout %s, N %d, load %s", layout, n, load())
	t.Logf("baseline: before server RSS %.0f MB heap %.0f MB; server up RSS %.0f heap %.0f", rss0, heap0, rss1, heap1)

	t0 := time.Now()
	switch layout {
	case "stream0": // no partition token: P.reg.<K>
		createStream(t, js, jetstream.StreamConfig{
			Name: stream, Subjects: []string{"P.own.>", "P.reg.>", "P.qout.>"}, Storage: jetstream.FileStorage,
			MaxMsgsPerSubject: 1, AllowDirect: true, AllowAtomicPublish: true, Duplicates: 2 * time.Minute,
		})
		publishAll(t, js, n, func(i int) *nats.Msg {
			return &nats.Msg{Subject: "P.reg." + keyOf(i), Data: recordPayload(i, "running")}
		})
	case "stream":
		createStream(t, js, jetstream.StreamConfig{
			Name: stream, Subjects: []string{"P.own.>", "P.reg.>", "P.qout.>"}, Storage: jetstream.FileStorage,
			MaxMsgsPerSubject: 1, AllowDirect: true, AllowAtomicPublish: true, Duplicates: 2 * time.Minute,
		})
		publishAll(t, js, n, func(i int) *nats.Msg {
			k := keyOf(i)
			return &nats.Msg{Subject: fmt.Sprintf("P.reg.%d.%s", part(k, 64), k), Data: recordPayload(i, "running")}
		})
	case "kv":
		if _, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "idle_registry", History: 1, Storage: jetstream.FileStorage}); err != nil {
			t.Fatal(err)
		}
		publishAll(t, js, n, func(i int) *nats.Msg {
			return &nats.Msg{Subject: "$KV.idle_registry.b." + keyOf(i), Data: recordPayload(i, "running")}
		})
	case "snap":
		createStream(t, js, jetstream.StreamConfig{
			Name: stream, Subjects: []string{"P.own.>", "P.snap.>", "P.log.>", "P.qout.>"}, Storage: jetstream.FileStorage,
			MaxMsgsPerSubject: 1, AllowDirect: true, Duplicates: 2 * time.Minute, MaxMsgSize: 1 << 20,
		})
		chunks := snapshotChunks(n, 256, 256<<10)
		publishAll(t, js, len(chunks), func(i int) *nats.Msg { return chunks[i] })
		t.Logf("snapshot: %d chunk messages (256 partitions, chunks <= 256 KiB)", len(chunks))
	default:
		t.Fatalf("LAYOUT %q", layout)
	}
	wrote := time.Since(t0)
	rss2, heap2 := memNow()
	t.Logf("wrote %d records in %v; RSS %.0f MB (+%.0f) heap %.0f MB (+%.0f) -> %.0f B/record RSS, %.0f B/record heap",
		n, wrote.Round(time.Millisecond), rss2, rss2-rss1, heap2, heap2-heap1, (rss2-rss1)*(1<<20)/float64(n), (heap2-heap1)*(1<<20)/float64(n))
	if idle := envInt("IDLE_S", 0); idle > 0 {
		time.Sleep(time.Duration(idle) * time.Second)
		rss3, heap3 := memNow()
		t.Logf("after %d s idle: RSS %.0f MB (+%.0f) heap %.0f MB (+%.0f)", idle, rss3, rss3-rss1, heap3, heap3-heap1)
	}
	t.Logf("store on disk: %.1f MB", float64(dirSize(dir))/(1<<20))

	// Restart on the same store. DIRTY=1 restarts on a copy taken while
	// the server runs (as after a kill -9: the index is not written on
	// shutdown).
	if envInt("DIRTY", 0) == 1 {
		cp := t.TempDir()
		if out, err := exec.Command("cp", "-a", dir+"/.", cp).CombinedOutput(); err != nil {
			t.Fatalf("copy store: %v %s", err, out)
		}
		dir = cp
		t.Logf("restarting on a copy of the running server's store (crash-like)")
	}
	nc.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	rss4, heap4 := memNow()
	t0 = time.Now()
	s = startServer(t, dir)
	started := time.Since(t0)
	nc, js = connect(t, s.ClientURL())
	name := stream
	if layout == "kv" {
		name = "KV_idle_registry"
	}
	str, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	ready := time.Since(t0)
	rss5, heap5 := memNow()
	t.Logf("restart: server ready for connections in %v, stream info in %v; RSS %.0f MB (+%.0f over no server) heap %.0f MB (+%.0f)",
		started.Round(time.Millisecond), ready.Round(time.Millisecond), rss5, rss5-rss4, heap5, heap5-heap4)

	switch layout {
	case "stream0":
		readOrdered(t, js, "(a) 1 ordered consumer, DeliverLastPerSubject, P.reg.>", n, [][]string{{"P.reg.>"}})
	case "stream":
		readOrdered(t, js, "(a) 1 ordered consumer, DeliverLastPerSubject, P.reg.>", n, [][]string{{"P.reg.>"}})
		var groups [][]string
		for g := range 8 {
			var f []string
			for p := g; p < 64; p += 8 {
				f = append(f, fmt.Sprintf("P.reg.%d.>", p))
			}
			groups = append(groups, f)
		}
		readOrdered(t, js, "(a8) 8 ordered consumers, 8 partitions each", n, groups)
	case "kv":
		kv, err := js.KeyValue(ctx, "idle_registry")
		if err != nil {
			t.Fatal(err)
		}
		t0 = time.Now()
		w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for e := range w.Updates() {
			if e == nil {
				break
			}
			got++
		}
		_ = w.Stop()
		t.Logf("(b) KV WatchAll: %d records in %v (%.0f/s)", got, time.Since(t0).Round(time.Millisecond), float64(got)/time.Since(t0).Seconds())
		readOrdered(t, js, "(a on the KV stream) 1 ordered consumer, DeliverLastPerSubject", n, [][]string{{"$KV.idle_registry.>"}})
	case "snap":
		readSnapshots(t, nc, str, n, 32)
	}
	rss6, heap6 := memNow()
	t.Logf("after the read: RSS %.0f MB heap %.0f MB; load %s", rss6, heap6, load())
}

// part is the partition of key among n.
func part(key string, n int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum32() % uint32(n))
}

// publishAll publishes n messages asynchronously and waits for every ack.
func publishAll(tb testing.TB, js jetstream.JetStream, n int, msg func(i int) *nats.Msg) {
	tb.Helper()
	for i := range n {
		if _, err := js.PublishMsgAsync(msg(i)); err != nil {
			tb.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(120 * time.Second):
		tb.Fatal("publishes not acknowledged")
	}
}

// snapshotChunks lays n records out as per-partition snapshot messages:
// each record is <u16 key length><key><u16 value length><value>, and a
// partition's records are cut into chunks of at most max bytes, published
// on P.snap.<p>.<chunk>.
func snapshotChunks(n, parts, max int) []*nats.Msg {
	bufs := make([][]*bytes.Buffer, parts)
	for i := range n {
		k := keyOf(i)
		p := part(k, parts)
		v := recordPayload(i, "running")
		if len(bufs[p]) == 0 || bufs[p][len(bufs[p])-1].Len()+4+len(k)+len(v) > max {
			bufs[p] = append(bufs[p], &bytes.Buffer{})
		}
		b := bufs[p][len(bufs[p])-1]
		_ = binary.Write(b, binary.BigEndian, uint16(len(k)))
		b.WriteString(k)
		_ = binary.Write(b, binary.BigEndian, uint16(len(v)))
		b.Write(v)
	}
	var msgs []*nats.Msg
	for p, cs := range bufs {
		for c, b := range cs {
			msgs = append(msgs, &nats.Msg{Subject: fmt.Sprintf("P.snap.%d.%d", p, c), Data: b.Bytes()})
		}
	}
	return msgs
}

// countRecords counts the records in a snapshot chunk.
func countRecords(b []byte) int {
	n := 0
	for len(b) >= 2 {
		kl := int(binary.BigEndian.Uint16(b))
		b = b[2+kl:]
		vl := int(binary.BigEndian.Uint16(b))
		b = b[2+vl:]
		n++
	}
	return n
}

// readOrdered reads the last message of every subject through one ordered
// consumer per filter group, in parallel, and logs the time.
func readOrdered(tb testing.TB, js jetstream.JetStream, name string, want int, groups [][]string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	t0 := time.Now()
	var got atomic.Int64
	var wg sync.WaitGroup
	for _, f := range groups {
		str := stream
		if len(f) == 1 && f[0] == "$KV.idle_registry.>" {
			str = "KV_idle_registry"
		}
		c, err := js.OrderedConsumer(ctx, str, jetstream.OrderedConsumerConfig{FilterSubjects: f, DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy})
		if err != nil {
			tb.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			it, err := c.Messages(jetstream.PullMaxMessages(4096))
			if err != nil {
				tb.Error(err)
				return
			}
			defer it.Stop()
			for {
				m, err := it.Next()
				if err != nil {
					tb.Error(err)
					return
				}
				got.Add(1)
				md, err := m.Metadata()
				if err == nil && md.NumPending == 0 {
					return
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(t0)
	tb.Logf("%s: %d records in %v (%.0f/s)", name, got.Load(), el.Round(time.Millisecond), float64(got.Load())/el.Seconds())
	if int(got.Load()) != want {
		tb.Errorf("%s: read %d; want %d", name, got.Load(), want)
	}
}

// readSnapshots reads every snapshot chunk by direct get last-by-subject,
// par requests at a time, and counts the records.
func readSnapshots(tb testing.TB, nc *nats.Conn, str jetstream.Stream, want, par int) {
	tb.Helper()
	ctx := context.Background()
	t0 := time.Now()
	// Which chunks exist: the stream's subject list for P.snap.> (a small
	// list: one subject per chunk).
	info, err := str.Info(ctx, jetstream.WithSubjectFilter("P.snap.>"))
	if err != nil {
		tb.Fatal(err)
	}
	var subjects []string
	for subj := range info.State.Subjects {
		subjects = append(subjects, subj)
	}
	listed := time.Since(t0)
	var got atomic.Int64
	var bytesRead atomic.Int64
	work := make(chan string)
	var wg sync.WaitGroup
	for range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for subj := range work {
				r, err := nc.Request("$JS.API.DIRECT.GET."+stream+"."+subj, nil, 5*time.Second)
				if err != nil {
					tb.Error(err)
					return
				}
				bytesRead.Add(int64(len(r.Data)))
				got.Add(int64(countRecords(r.Data)))
			}
		}()
	}
	for _, s := range subjects {
		work <- s
	}
	close(work)
	wg.Wait()
	el := time.Since(t0)
	tb.Logf("(c) %d snapshot chunks by direct get, %d in parallel: %d records, %.1f MB in %v (listing the chunks %v) (%.0f records/s)",
		len(subjects), par, got.Load(), float64(bytesRead.Load())/(1<<20), el.Round(time.Millisecond), listed.Round(time.Millisecond), float64(got.Load())/el.Seconds())
	if int(got.Load()) != want {
		tb.Errorf("snapshot read %d records; want %d", got.Load(), want)
	}
}

func dirSize(dir string) int64 {
	var n int64
	_ = filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return n
}
