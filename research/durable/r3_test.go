//go:build durableresearch

package durable

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idle-worker/idle-worker/internal/natstest"
)

// TestR3Fencing repeats the pipelining checks on an R3 stream of a
// three-node cluster on loopback, where a fenced write holds its claim
// subject "in process" until applied (jetstream_batching.go:780-785), and
// measures the same throughput pair as TestBatchThroughput.
func TestR3Fencing(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	nc, js := connect(t, c.URLs())
	createStream(t, js, idleStreamConfig(3))
	b := newBatcher(t, nc)
	const parts = 64
	toks := make([]uint64, parts)
	for p := range parts {
		toks[p], _ = claim(t, nc, p, 0, "w")
	}

	// Ten fenced batches of one partition sent back to back.
	var chans []<-chan *nats.Msg
	for i := range 10 {
		ch, err := b.start(fmt.Sprintf("pipe-%d", i), partitionBatch(1, i*50, 50, toks[1], true, "1"))
		if err != nil {
			t.Fatal(err)
		}
		chans = append(chans, ch)
	}
	ok, codes := 0, map[int]int{}
	for _, ch := range chans {
		a := parseAck(<-ch)
		if a.Error == nil {
			ok++
		} else {
			codes[a.Error.ErrCode]++
		}
	}
	t.Logf("R3: 10 fenced batches of one partition pipelined: %d ok, errors %v", ok, codes)

	// 50 single fenced publishes of one partition, async.
	ajs, _ := jetstream.New(nc)
	var futs []jetstream.PubAckFuture
	for i := range 50 {
		f, err := ajs.PublishMsgAsync(&nats.Msg{Subject: fmt.Sprintf("P.reg.2.k%d", i), Header: fence(toks[2], "P.own.2"), Data: recordPayload(i, "running")})
		if err != nil {
			t.Fatal(err)
		}
		futs = append(futs, f)
	}
	ok, codes = 0, map[int]int{}
	for _, f := range futs {
		select {
		case <-f.Ok():
			ok++
		case err := <-f.Err():
			var ae *jetstream.APIError
			if e, isAPI := err.(*jetstream.APIError); isAPI {
				ae = e
				codes[int(ae.ErrorCode)]++
			} else {
				codes[-1]++
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no ack")
		}
	}
	t.Logf("R3: 50 async fenced single publishes of one partition: %d ok, errors %v", ok, codes)

	// Throughput, R3, 50k events.
	total := envInt("TOTAL", 50000)
	snc, _ := connect(t, c.URLs())
	var seen atomic.Int64
	sub, _ := snc.Subscribe("P.quiesce.>", func(*nats.Msg) { seen.Add(1) })
	_ = sub.SetPendingLimits(-1, -1)
	_ = snc.Flush()
	from := 1_000_000
	// Single async fenced events: 64 partitions round robin, so consecutive
	// publishes of one partition are 64 apart, and still collide.
	seen.Store(0)
	t0 := time.Now()
	errs := map[int]int{}
	var futs2 []jetstream.PubAckFuture
	for i := from; i < from+total; i++ {
		p := i % parts
		f, err := ajs.PublishMsgAsync(&nats.Msg{Subject: fmt.Sprintf("P.qout.%d.%s", p, keyOf(i)), Header: fence(toks[p], fmt.Sprintf("P.own.%d", p)), Data: eventPayload("x", keyOf(i))})
		if err != nil {
			t.Fatal(err)
		}
		futs2 = append(futs2, f)
	}
	<-ajs.PublishAsyncComplete()
	for _, f := range futs2 {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			if e, isAPI := err.(*jetstream.APIError); isAPI {
				errs[int(e.ErrorCode)]++
			} else {
				errs[-1]++
			}
		}
	}
	el := time.Since(t0)
	t.Logf("R3 single async fenced, 64 partitions: %d events in %v (%.0f/s offered), refused %v, republished %d; load %s",
		total, el.Round(time.Millisecond), float64(total)/el.Seconds(), errs, seen.Load(), load())

	// Unfenced single async, for the store's own rate.
	from += total
	seen.Store(0)
	t0 = time.Now()
	for i := from; i < from+total; i++ {
		if _, err := ajs.PublishMsgAsync(&nats.Msg{Subject: fmt.Sprintf("P.qout.%d.%s", i%parts, keyOf(i)), Data: eventPayload("x", keyOf(i))}); err != nil {
			t.Fatal(err)
		}
	}
	<-ajs.PublishAsyncComplete()
	waitFor(t, 30*time.Second, "republished", func() bool { return seen.Load() >= int64(total) })
	el = time.Since(t0)
	t.Logf("R3 single async unfenced: %.0f events/s; load %s", float64(total)/el.Seconds(), load())

	for _, cfg := range []struct{ events, inflight int }{{100, 1}, {100, 16}, {500, 16}} {
		from += total
		seen.Store(0)
		t0 = time.Now()
		sem := make(chan struct{}, cfg.inflight)
		var bad atomic.Int64
		var codes codeCount
		for i := from; i < from+total; i += cfg.events {
			p := (i / cfg.events) % parts
			msgs := partitionBatch(p, i, cfg.events, toks[p], false, "1")
			ev := msgs[:0]
			for j := 0; j < len(msgs); j += 2 {
				ev = append(ev, msgs[j])
			}
			ev[0].hdr = msgs[0].hdr
			sem <- struct{}{}
			ch, err := b.start(fmt.Sprintf("t-%d", i), ev)
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				defer func() { <-sem }()
				select {
				case m := <-ch:
					if a := parseAck(m); a.Error != nil {
						bad.Add(1)
						codes.add(a.Error.ErrCode)
					}
				case <-time.After(30 * time.Second):
					bad.Add(1)
				}
			}()
		}
		for range cfg.inflight {
			sem <- struct{}{}
		}
		el = time.Since(t0)
		t.Logf("R3 fenced batches of %d events, %d in flight over 64 partitions: %.0f events/s, %d batches refused %v, republished %d; load %s",
			cfg.events, cfg.inflight, float64(total)/el.Seconds(), bad.Load(), codes.get(), seen.Load(), load())
	}
}

type codeCount struct {
	mu sync.Mutex
	m  map[int]int
}

func (c *codeCount) add(code int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[int]int{}
	}
	c.m[code]++
}

func (c *codeCount) get() map[int]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m
}
