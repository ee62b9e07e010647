//go:build durableresearch

package durable

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// singleStreamConfig turns today's IDLE_QUIESCE into the one stream of the
// durable layer: the worker writes claims, records and events on internal
// subjects; an input SubjectTransform stores events under P.quiesce.<K>
// (where brokers' durable consumers already look) and RePublish sends each
// stored event to the same subject for core subscribers.
func singleStreamConfig() jetstream.StreamConfig {
	cfg := quiesceStreamConfig()
	cfg.Subjects = []string{"P.own.>", "P.log.>", "P.snap.>", "P.qout.>"}
	cfg.SubjectTransform = &jetstream.SubjectTransformConfig{Source: "P.qout.*.>", Destination: "P.quiesce.>"}
	cfg.RePublish = &jetstream.RePublish{Source: "P.quiesce.>", Destination: "P.quiesce.>"}
	cfg.AllowAtomicPublish = true
	cfg.AllowMsgTTL = true
	cfg.AllowDirect = true
	return cfg
}

// TestTransformSingleStream: today's IDLE_QUIESCE with a broker's durable
// consumer, updated in place to singleStreamConfig. Then fenced batches
// [log message, events]: stored where the consumer reads, republished once,
// refused whole when stale.
func TestTransformSingleStream(t *testing.T) {
	s := startServer(t, "")
	nc, js := connect(t, s.ClientURL())
	ctx := context.Background()
	q := createStream(t, js, quiesceStreamConfig())
	for i := range 10 {
		if _, err := js.Publish(ctx, fmt.Sprintf("P.quiesce.legacy.%d", i), []byte("old")); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := q.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "broker", FilterSubject: "P.quiesce.>", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.UpdateStream(ctx, singleStreamConfig()); err != nil {
		t.Fatalf("update IDLE_QUIESCE in place: %v", err)
	}
	info, _ := q.Info(ctx)
	ci, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("IDLE_QUIESCE updated in place: subjects %v, transform %v, republish %v; %d messages kept; consumer %q filter %q pending %d",
		info.Config.Subjects, *info.Config.SubjectTransform, *info.Config.RePublish, info.State.Msgs, ci.Name, ci.Config.FilterSubject, ci.NumPending)

	var got atomic.Int64
	var sample atomic.Value
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if got.Add(1) == 11 {
			sample.Store(m.Subject() + " " + headerList(m.Headers()))
		}
		_ = m.Ack()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Stop()
	snc, _ := connect(t, s.ClientURL())
	core := countOn(t, snc, "P.quiesce.>")
	own := countOn(t, snc, "P.>") // anything else republished?

	b := newBatcher(t, nc)
	tok, _ := claim(t, nc, 5, 0, "a")
	batch := func(id string, tok uint64, from, n int) pubAck {
		msgs := []batchMsg{{subject: fmt.Sprintf("P.log.5.%s", id), hdr: fence(tok, "P.own.5"), data: []byte("records of the events below")}}
		for i := from; i < from+n; i++ {
			msgs = append(msgs, batchMsg{subject: "P.qout.5." + keyOf(i), hdr: nats.Header{hdrMsgID: {fmt.Sprintf("p5.%d.%d.1", tok, i)}, "Nats-TTL": {"24h"}}, data: eventPayload(fmt.Sprint(i), keyOf(i))})
		}
		a, err := b.send(id, msgs, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	a := batch("b1", tok, 0, 100)
	t.Logf("fenced batch [log + 100 events] with the right token: %s", a)
	waitFor(t, 3*time.Second, "consumed", func() bool { return got.Load() == 110 })
	waitFor(t, 3*time.Second, "republished", func() bool { return core.count() == 100 })
	if _, err := q.GetLastMsgForSubject(ctx, "P.quiesce."+keyOf(7)); err != nil {
		t.Fatalf("event stored under P.quiesce.<K>: %v", err)
	}
	if _, err := q.GetLastMsgForSubject(ctx, "P.qout.5."+keyOf(7)); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatalf("event under P.qout: %v", err)
	}
	t.Logf("stored under P.quiesce.<K>, not P.qout; consumer got 10 legacy + 100; core saw %d on P.quiesce.> and %d on P.> in all", core.count(), own.count())
	t.Logf("as the broker's consumer sees an event: %v", sample.Load())

	tok2, _ := claim(t, nc, 5, tok, "b")
	a = batch("b2", tok, 100, 100)
	t.Logf("same batch with the stale token (claim now %d): %s", tok2, a)
	time.Sleep(200 * time.Millisecond)
	if got.Load() != 110 || core.count() != 100 {
		t.Fatalf("stale batch leaked: consumed %d, republished %d", got.Load(), core.count())
	}
	a = batch("b3", tok2, 100, 100)
	t.Logf("with the new token: %s", a)
	waitFor(t, 3*time.Second, "consumed", func() bool { return got.Load() == 210 })

	// A core publish straight to P.quiesce.K (an old worker, or anyone with
	// the permission) is no longer stored: the stream does not listen there.
	if err := nc.Publish("P.quiesce.direct", []byte("x")); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	time.Sleep(100 * time.Millisecond)
	_, err = q.GetLastMsgForSubject(ctx, "P.quiesce.direct")
	t.Logf("a core publish to P.quiesce.direct is stored: %v", err == nil)
}

// TestTTLNeverUnderMaxAge: with the stream's MaxAge, do claims and records
// published with Nats-TTL: never outlive it, while events expire?
func TestTTLNeverUnderMaxAge(t *testing.T) {
	s := startServer(t, "")
	nc, js := connect(t, s.ClientURL())
	cfg := singleStreamConfig()
	cfg.MaxAge, cfg.Duplicates = 2*time.Second, time.Second
	q := createStream(t, js, cfg)
	ctx := context.Background()
	pub := func(subj string, h nats.Header) {
		r, err := nc.RequestMsg(&nats.Msg{Subject: subj, Header: h, Data: []byte("x")}, 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if a := parseAck(r); a.Error != nil {
			t.Fatalf("%s: %s", subj, a)
		}
	}
	pub("P.own.1", nats.Header{"Nats-TTL": {"never"}})
	pub("P.snap.1.0", nats.Header{"Nats-TTL": {"never"}})
	pub("P.qout.1.k", nil)
	time.Sleep(3500 * time.Millisecond)
	for _, subj := range []string{"P.own.1", "P.snap.1.0", "P.quiesce.k"} {
		_, err := q.GetLastMsgForSubject(ctx, subj)
		t.Logf("MaxAge 2s, after 3.5s: %-12s present %v", subj, err == nil)
	}
}

// TestSnapshotRollup: in the single stream (no MaxMsgsPerSubject), a
// partition snapshot replaces the previous one by Nats-Rollup: sub on each
// chunk, inside a fenced atomic batch.
func TestSnapshotRollup(t *testing.T) {
	s := startServer(t, "")
	nc, js := connect(t, s.ClientURL())
	cfg := singleStreamConfig()
	cfg.AllowRollup = true
	q := createStream(t, js, cfg)
	b := newBatcher(t, nc)
	tok, _ := claim(t, nc, 3, 0, "w")
	for round := range 3 {
		msgs := []batchMsg{
			{subject: "P.snap.3.0", hdr: nats.Header{hdrExpSeq: {fmt.Sprint(tok)}, hdrExpSubj: {"P.own.3"}, "Nats-Rollup": {"sub"}, "Nats-TTL": {"never"}}, data: []byte(fmt.Sprintf("chunk 0 of snapshot %d", round))},
			{subject: "P.snap.3.1", hdr: nats.Header{"Nats-Rollup": {"sub"}, "Nats-TTL": {"never"}}, data: []byte(fmt.Sprintf("chunk 1 of snapshot %d", round))},
		}
		a, err := b.send(fmt.Sprintf("snap-%d", round), msgs, 5*time.Second)
		if err != nil || a.Error != nil {
			t.Fatalf("snapshot batch %d: %v %s", round, err, a)
		}
	}
	info, err := q.Info(context.Background(), jetstream.WithSubjectFilter("P.snap.>"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after 3 fenced snapshot batches with Nats-Rollup: sub: subjects %v (stream msgs %d)", info.State.Subjects, info.State.Msgs)
}
