//go:build durableresearch

package durable

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func cpuNow() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// tpRun is one throughput measurement.
type tpRun struct {
	name     string
	events   int // events per batch (each with its record when pairs)
	pairs    bool
	inflight int  // batches in flight together (different partitions)
	single   bool // no batch: every message its own async fenced publish
	noAck    bool // single, but core publish without a reply (no ack at all)
}

// TestBatchThroughput measures events stored per second through fenced
// atomic batches on one R1 file-storage server, against single async
// fenced publishes of the same messages (the "limit"). The
// clock stops when a core subscriber of P.quiesce.> on its own connection
// has seen the last republished event and every commit is acknowledged.
// TOTAL events per run (default 100000).
func TestBatchThroughput(t *testing.T) {
	total := envInt("TOTAL", 100000)
	s := startServer(t, os.Getenv("STOREDIR"), func(o *server.Options) {
		o.JetStreamLimits.MaxBatchSize = 2000 // to try 1000 events with their records
	})
	nc, js := connect(t, s.ClientURL())
	createStream(t, js, idleStreamConfig(1))
	snc, _ := connect(t, s.ClientURL())
	var seen atomic.Int64
	sub, err := snc.Subscribe("P.quiesce.>", func(*nats.Msg) { seen.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	_ = snc.Flush()

	const parts = 64
	toks := make([]uint64, parts)
	for p := range parts {
		toks[p], _ = claim(t, nc, p, 0, "w")
	}
	runs := []tpRun{
		{name: "single async, events only", single: true},
		{name: "single async, event+record", single: true, pairs: true},
		{name: "core publish, no reply, events only", single: true, noAck: true},
		{name: "batch 100 ev, 1 in flight", events: 100, inflight: 1},
		{name: "batch 100 ev, 8 in flight", events: 100, inflight: 8},
		{name: "batch 100 ev+rec, 8 in flight", events: 100, pairs: true, inflight: 8},
		{name: "batch 500 ev+rec, 1 in flight", events: 500, pairs: true, inflight: 1},
		{name: "batch 500 ev+rec, 4 in flight", events: 500, pairs: true, inflight: 4},
		{name: "batch 1000 ev, 1 in flight", events: 1000, inflight: 1},
		{name: "batch 1000 ev, 4 in flight", events: 1000, inflight: 4},
		{name: "batch 1000 ev+rec, 4 in flight (max_batch_size 2000)", events: 1000, pairs: true, inflight: 4},
	}
	base := 0
	t.Logf("load before: %s; %d events per run", load(), total)
	only := regexp.MustCompile(os.Getenv("RUNS"))
	for ri, r := range runs {
		if !only.MatchString(r.name) {
			continue
		}
		// Fresh keys per run so every message is a new subject, as a burst of
		// first quiesces is.
		from := base
		base += total
		seen.Store(0)
		cpu0, t0 := cpuNow(), time.Now()
		if r.single {
			ajs, _ := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(16384))
			for i := from; i < from+total; i++ {
				p := i % parts
				k := keyOf(i)
				id := fmt.Sprintf("p%d.%d.%d.1", p, toks[p], i)
				h := fence(toks[p], fmt.Sprintf("P.own.%d", p))
				h.Set(hdrMsgID, id)
				em := &nats.Msg{Subject: fmt.Sprintf("P.qout.%d.%s", p, k), Header: h, Data: eventPayload(id, k)}
				if r.noAck {
					if err := nc.PublishMsg(em); err != nil {
						t.Fatal(err)
					}
					continue
				}
				if _, err := ajs.PublishMsgAsync(em); err != nil {
					t.Fatal(err)
				}
				if r.pairs {
					if _, err := ajs.PublishMsgAsync(&nats.Msg{Subject: fmt.Sprintf("P.reg.%d.%s", p, k), Header: fence(toks[p], fmt.Sprintf("P.own.%d", p)), Data: recordPayload(i, "draining")}); err != nil {
						t.Fatal(err)
					}
				}
			}
			select {
			case <-ajs.PublishAsyncComplete():
			case <-time.After(60 * time.Second):
				t.Fatal("async publishes not complete")
			}
		} else {
			b := newBatcher(t, nc)
			sem := make(chan struct{}, r.inflight)
			errs := make(chan error, total/r.events+1)
			var acked atomic.Int64
			nb := 0
			for i := from; i < from+total; i += r.events {
				n := min(r.events, from+total-i)
				p := (i / r.events) % parts
				msgs := partitionBatch(p, i, n, toks[p], false, "1")
				if !r.pairs {
					ev := msgs[:0]
					for j := 0; j < len(msgs); j += 2 {
						ev = append(ev, msgs[j])
					}
					ev[0].hdr = msgs[0].hdr
					msgs = ev
				}
				sem <- struct{}{}
				ch, err := b.start(fmt.Sprintf("r%d-%d", ri, i), msgs)
				if err != nil {
					t.Fatal(err)
				}
				nb++
				go func() {
					defer func() { <-sem }()
					select {
					case m := <-ch:
						if a := parseAck(m); a.Error != nil {
							errs <- fmt.Errorf("batch: %s", a)
							return
						}
						acked.Add(1)
					case <-time.After(30 * time.Second):
						errs <- fmt.Errorf("batch: no answer")
					}
				}()
			}
			for range r.inflight {
				sem <- struct{}{}
			}
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			if int(acked.Load()) != nb {
				t.Fatalf("%d of %d batches acknowledged", acked.Load(), nb)
			}
			_ = b.sub.Unsubscribe()
		}
		acked := time.Since(t0)
		waitFor(t, 30*time.Second, "all republished", func() bool { return seen.Load() >= int64(total) })
		el := time.Since(t0)
		cpu := cpuNow() - cpu0
		t.Logf("%-56s %8.0f events/s (acked %6.0f ms, seen %6.0f ms) cpu %5.2f us/event  load %s",
			r.name, float64(total)/el.Seconds(), float64(acked.Milliseconds()), float64(el.Milliseconds()),
			float64(cpu.Microseconds())/float64(total), load())
	}
	ctx := context.Background()
	info, _ := js.Stream(ctx, stream)
	if info != nil {
		st := streamState(t, info)
		t.Logf("stream: %d msgs, %d subjects", st.Msgs, st.NumSubjects)
	}
}
