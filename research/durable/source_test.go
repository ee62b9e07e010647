//go:build durableresearch

package durable

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestSourcedQuiesce: today's IDLE_QUIESCE (subjects P.quiesce.>) with a
// broker's durable consumer is updated in place to have no subjects and
// source the events from IDLE, mapping P.qout.*.> to P.quiesce.>. Does the
// update keep the consumer and the old events; how far behind the core
// republish does the sourced copy (and the durable consumer) run for a
// burst of fenced batches?
func TestSourcedQuiesce(t *testing.T) {
	s := startServer(t, "")
	nc, js := connect(t, s.ClientURL())
	ctx := context.Background()
	q := createStream(t, js, quiesceStreamConfig())
	for i := range 10 {
		if _, err := js.Publish(ctx, fmt.Sprintf("P.quiesce.legacy.%d", i), []byte("old")); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := q.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "broker", FilterSubject: "P.quiesce.>", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 100000})
	if err != nil {
		t.Fatal(err)
	}
	createStream(t, js, idleStreamConfig(1))

	cfg := quiesceStreamConfig()
	cfg.Subjects = nil
	cfg.Sources = []*jetstream.StreamSource{{Name: stream, SubjectTransforms: []jetstream.SubjectTransformConfig{{Source: "P.qout.*.>", Destination: "P.quiesce.>"}}}}
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatalf("update IDLE_QUIESCE to a sourced stream: %v", err)
	}
	info, err := q.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ci, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("IDLE_QUIESCE updated in place: subjects %v, %d messages kept, consumer %q filter %q pending %d",
		info.Config.Subjects, info.State.Msgs, ci.Name, ci.Config.FilterSubject, ci.NumPending)

	// Broker side: the durable consumer, acking each message.
	var got atomic.Int64
	var firstHdr atomic.Value
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if got.Add(1) == 11 {
			firstHdr.Store(headerList(m.Headers()) + " subject=" + m.Subject())
		}
		_ = m.Ack()
	}, jetstream.PullMaxMessages(4096))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Stop()
	waitFor(t, 5*time.Second, "legacy events consumed", func() bool { return got.Load() == 10 })

	// Core side.
	snc, _ := connect(t, s.ClientURL())
	var core atomic.Int64
	sub, _ := snc.Subscribe("P.quiesce.>", func(*nats.Msg) { core.Add(1) })
	_ = sub.SetPendingLimits(-1, -1)
	_ = snc.Flush()

	const parts, total, per = 64, 50000, 500
	toks := make([]uint64, parts)
	for p := range parts {
		toks[p], _ = claim(t, nc, p, 0, "w")
	}
	b := newBatcher(t, nc)
	var coreAt, srcAt, consAt time.Duration
	t0 := time.Now()
	async := envInt("ASYNC", 0) == 1
	go func() {
		if async {
			ajs, _ := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(65536))
			for i := range total {
				p := i % parts
				h := fence(toks[p], fmt.Sprintf("P.own.%d", p))
				h.Set(hdrMsgID, fmt.Sprintf("a%d", i))
				if _, err := ajs.PublishMsgAsync(&nats.Msg{Subject: fmt.Sprintf("P.qout.%d.%s", p, keyOf(i)), Header: h, Data: eventPayload("x", keyOf(i))}); err != nil {
					t.Error(err)
					return
				}
			}
			return
		}
		for i := 0; i < total; i += per {
			p := (i / per) % parts
			msgs := partitionBatch(p, i, per, toks[p], false, "1")
			ev := msgs[:0]
			for j := 0; j < len(msgs); j += 2 {
				ev = append(ev, msgs[j])
			}
			ev[0].hdr = msgs[0].hdr
			if a, err := b.send(fmt.Sprintf("s-%d", i), ev, 10*time.Second); err != nil || a.Error != nil {
				t.Errorf("batch: %v %s", err, a)
				return
			}
		}
	}()
	deadline := time.Now().Add(60 * time.Second)
	for (coreAt == 0 || srcAt == 0 || consAt == 0) && time.Now().Before(deadline) {
		if coreAt == 0 && core.Load() >= total {
			coreAt = time.Since(t0)
		}
		if srcAt == 0 {
			if st := streamState(t, q); st.Msgs >= total+10 {
				srcAt = time.Since(t0)
			}
		}
		if consAt == 0 && got.Load() >= total+10 {
			consAt = time.Since(t0)
		}
		time.Sleep(2 * time.Millisecond)
	}
	how := fmt.Sprintf("fenced batches of %d, one at a time", per)
	if async {
		how = "single async fenced publishes"
	}
	t.Logf("%d events in %s: core subscriber saw all after %v, IDLE_QUIESCE (sourced) held all after %v, the durable consumer had all after %v; load %s",
		total, how, coreAt.Round(time.Millisecond), srcAt.Round(time.Millisecond), consAt.Round(time.Millisecond), load())
	t.Logf("a sourced event as the broker's consumer sees it: %v", firstHdr.Load())
	if st := streamState(t, q); st.Msgs != total+10 {
		t.Errorf("IDLE_QUIESCE holds %d; want %d", st.Msgs, total+10)
	}
}
