//go:build durableresearch

package durable

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// partitionBatch builds n events with their draining records for partition
// p, every message fenced by token on P.own.<p> when fenceAll, else only the
// first.
func partitionBatch(p, from, n int, token uint64, fenceAll bool, idTag string) []batchMsg {
	claimSubj := fmt.Sprintf("P.own.%d", p)
	msgs := make([]batchMsg, 0, 2*n)
	for i := from; i < from+n; i++ {
		k := keyOf(i)
		id := fmt.Sprintf("p%d.%d.%d", p, token, i)
		h := nats.Header{hdrMsgID: {id + "." + idTag}}
		if fenceAll || len(msgs) == 0 {
			for k, v := range fence(token, claimSubj) {
				h[k] = v
			}
		}
		msgs = append(msgs, batchMsg{subject: fmt.Sprintf("P.qout.%d.%s", p, k), hdr: h, data: eventPayload(id, k)})
		var rh nats.Header
		if fenceAll {
			rh = fence(token, claimSubj)
		}
		msgs = append(msgs, batchMsg{subject: fmt.Sprintf("P.reg.%d.%s", p, k), hdr: rh, data: recordPayload(i, "draining")})
	}
	return msgs
}

// counter counts core messages on a subject pattern.
type counter struct {
	mu   sync.Mutex
	seen map[string]int
	last *nats.Msg
	n    int
}

func countOn(tb testing.TB, nc *nats.Conn, subj string) *counter {
	tb.Helper()
	c := &counter{seen: map[string]int{}}
	sub, err := nc.Subscribe(subj, func(m *nats.Msg) {
		c.mu.Lock()
		c.seen[m.Subject]++
		c.last = m
		c.n++
		c.mu.Unlock()
	})
	if err != nil {
		tb.Fatal(err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		tb.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		tb.Fatal(err)
	}
	return c
}

func (c *counter) count() int { c.mu.Lock(); defer c.mu.Unlock(); return c.n }

// TestBatchFencing: a batch with the current token is stored whole and
// republished once per event; with a stale token nothing is stored or
// republished; a duplicate Nats-Msg-Id refuses the whole batch.
func TestBatchFencing(t *testing.T) {
	s := startServer(t, "")
	nc, js := connect(t, s.ClientURL())
	str := createStream(t, js, idleStreamConfig(1))
	sub := countOn(t, nc, "P.quiesce.>")
	b := newBatcher(t, nc)

	const p = 7
	tokA, a := claim(t, nc, p, 0, "worker-a")
	t.Logf("claim A on P.own.%d expecting 0: %s", p, a)
	if a.Error != nil {
		t.Fatal(a)
	}

	// 1. Right token: 100 events + 100 records, fence on every message.
	ack, err := b.send("ok-1", partitionBatch(p, 0, 100, tokA, true, "1"), 5*time.Second)
	if err != nil || ack.Error != nil {
		t.Fatalf("batch with right token: %v %s", err, ack)
	}
	t.Logf("batch of 200 (100 events + 100 records) with token %d: %s", tokA, ack)
	waitFor(t, 2*time.Second, "100 republished", func() bool { return sub.count() == 100 })
	st := streamState(t, str)
	t.Logf("stream after batch 1: msgs=%d subjects=%d last_seq=%d", st.Msgs, st.NumSubjects, st.LastSeq)
	if st.Msgs != 201 {
		t.Fatalf("stored %d messages; want 201 (claim + 200)", st.Msgs)
	}

	// 1b. Fence only on the first message: the commit checks every message
	// before storing any (stream.go:7882-7939), so one fenced message fences
	// the batch.
	ack, err = b.send("ok-2", partitionBatch(p, 100, 100, tokA, false, "1"), 5*time.Second)
	if err != nil || ack.Error != nil {
		t.Fatalf("batch fenced on first message only: %v %s", err, ack)
	}
	t.Logf("batch fenced on its first message only: %s", ack)
	waitFor(t, 2*time.Second, "200 republished", func() bool { return sub.count() == 200 })

	// 2. Another writer bumps the claim; A's next batch carries a stale token.
	tokB, bAck := claim(t, nc, p, tokA, "worker-b")
	t.Logf("claim B expecting %d: %s", tokA, bAck)
	_, stale := claim(t, nc, p, tokA, "worker-a-again")
	t.Logf("claim expecting the stale %d again: %s", tokA, stale)
	before := streamState(t, str)
	for _, fenceAll := range []bool{true, false} {
		ack, err = b.send(fmt.Sprintf("stale-%v", fenceAll), partitionBatch(p, 200, 100, tokA, fenceAll, "1"), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("batch with stale token %d (current %d, fence on every message %v): %s", tokA, tokB, fenceAll, ack)
		if ack.Error == nil {
			t.Fatal("stale batch accepted")
		}
	}
	time.Sleep(200 * time.Millisecond) // a republish would be sent within microseconds of the store
	after := streamState(t, str)
	if after.LastSeq != before.LastSeq || sub.count() != 200 {
		t.Fatalf("stale batch left traces: last_seq %d -> %d, republished %d (want 200)", before.LastSeq, after.LastSeq, sub.count())
	}
	ctx := context.Background()
	if _, err := str.GetLastMsgForSubject(ctx, fmt.Sprintf("P.qout.%d.%s", p, keyOf(200))); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatalf("event of the stale batch: %v; want not found", err)
	}
	t.Logf("after stale batches: last_seq unchanged at %d, republished still 200", after.LastSeq)

	// A refused batch leaves no Nats-Msg-Id behind: the same ids, now with
	// the current token, are stored.
	retry := partitionBatch(p, 200, 100, tokA, true, "1") // ids p7.<tokA>.<i>.1, as the stale batch
	for i := range retry {
		for k, v := range fence(tokB, fmt.Sprintf("P.own.%d", p)) {
			if retry[i].hdr == nil {
				retry[i].hdr = nats.Header{}
			}
			retry[i].hdr[k] = v
		}
	}
	ack, err = b.send("retry-same-ids", retry, 5*time.Second)
	if err != nil || ack.Error != nil {
		t.Fatalf("retry with the stale batch's ids: %v %s", err, ack)
	}
	t.Logf("the stale batch's Nats-Msg-Ids with the current token %d: %s", tokB, ack)
	waitFor(t, 2*time.Second, "300 republished", func() bool { return sub.count() == 300 })
	after = streamState(t, str)

	// 3. Duplicate Nats-Msg-Id: inside one batch, and against a stored event.
	dupIn := partitionBatch(p, 300, 3, tokB, true, "1")
	dupIn[4].hdr = nats.Header{hdrMsgID: dupIn[0].hdr[hdrMsgID]}
	dupIn[4].subject = dupIn[0].subject + "x"
	ack, _ = b.send("dup-in", dupIn, 5*time.Second)
	t.Logf("batch with a Nats-Msg-Id twice inside it: %s", ack)
	dupOld := partitionBatch(p, 0, 1, tokA, true, "1") // id p7.<tokA>.0.1 is stored (batch 1)
	fresh := partitionBatch(p, 400, 2, tokB, true, "1")
	for i := range dupOld {
		dupOld[i].hdr = fence(tokB, fmt.Sprintf("P.own.%d", p))
	}
	dupOld[0].hdr[hdrMsgID] = []string{fmt.Sprintf("p%d.%d.0.1", p, tokA)}
	ack, _ = b.send("dup-old", append(fresh, dupOld...), 5*time.Second)
	t.Logf("batch with a Nats-Msg-Id already stored: %s", ack)
	time.Sleep(100 * time.Millisecond)
	if got := streamState(t, str).LastSeq; got != after.LastSeq {
		t.Fatalf("duplicate batches stored something: last_seq %d -> %d", after.LastSeq, got)
	}
	// The same duplicate published alone is not an error but a
	// {"duplicate":true} ack (stream.go:7030-7036).
	m := &nats.Msg{Subject: dupOld[0].subject, Header: dupOld[0].hdr, Data: dupOld[0].data}
	r, err := nc.RequestMsg(m, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the same duplicate published alone: %s (republished %d)", parseAck(r), sub.count())
}

// TestBatchProtocol records what the server answers to each way of getting
// a batch wrong.
func TestBatchProtocol(t *testing.T) {
	s := startServer(t, "")
	nc, js := connect(t, s.ClientURL())
	createStream(t, js, idleStreamConfig(1))
	off := idleStreamConfig(1)
	off.Name, off.Subjects, off.AllowAtomicPublish, off.RePublish = "OFF", []string{"off.>"}, false, nil
	createStream(t, js, off)
	b := newBatcher(t, nc)
	tok, _ := claim(t, nc, 1, 0, "w")

	try := func(name string, msgs []batchMsg) {
		t.Helper()
		ack, err := b.send(name, msgs, 3*time.Second)
		if err != nil {
			t.Logf("%-52s -> %v", name, err)
			return
		}
		t.Logf("%-52s -> %s", name, ack)
	}
	ev := func(i int, h nats.Header) batchMsg {
		return batchMsg{subject: fmt.Sprintf("P.qout.1.%s", keyOf(i)), hdr: h, data: eventPayload("x", keyOf(i))}
	}
	try("stream without AllowAtomicPublish", []batchMsg{{subject: "off.a", data: []byte("x")}, {subject: "off.b", data: []byte("y")}})
	try("single message batch (seq 1 + commit)", []batchMsg{ev(1, fence(tok, "P.own.1"))})

	// A gap: message 2 of 3 never sent.
	gap := []batchMsg{ev(2, nil), ev(3, nil), ev(4, nil)}
	id := "gap"
	for i, bm := range gap {
		if i == 1 {
			continue
		}
		h := nats.Header{hdrBatchID: {id}, hdrBatchSeq: {fmt.Sprint(i + 1)}}
		msg := &nats.Msg{Subject: bm.subject, Header: h, Data: bm.data}
		if i == 2 {
			h.Set(hdrBatchCommit, "1")
			r, err := nc.RequestMsg(msg, 3*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%-52s -> %s", "gap (message 2 of 3 missing)", parseAck(r))
		} else if err := nc.PublishMsg(msg); err != nil {
			t.Fatal(err)
		}
	}

	big := make([]batchMsg, 1001)
	for i := range big {
		big[i] = ev(1000+i, nil)
	}
	try("1001 messages (limit 1000, stream.go:532)", big)
	try("1000 messages", big[:1000])
	try("Nats-Expected-Last-Msg-Id inside a batch", []batchMsg{ev(5, nats.Header{"Nats-Expected-Last-Msg-Id": {"x"}}), ev(6, nil)})
	try("batch writes the claim subject and fences on it", []batchMsg{
		{subject: "P.own.1", hdr: fence(tok, "P.own.1"), data: []byte("w")}, ev(7, fence(tok, "P.own.1"))})
	try("fence with two different tokens in one batch", []batchMsg{ev(8, fence(tok, "P.own.1")), ev(9, fence(tok+1, "P.own.1"))})
	try("two messages on one subject", []batchMsg{ev(10, nil), ev(10, nil)})
	try("Nats-TTL 24h on an event", []batchMsg{ev(11, nats.Header{"Nats-TTL": {"24h"}}), ev(12, nil)})
	try("Nats-Rollup sub in a batch (AllowRollup off)", []batchMsg{ev(13, nats.Header{"Nats-Rollup": {"sub"}}), ev(14, nil)})

	// Commit value other than "1"/"eob".
	msg := &nats.Msg{Subject: "P.qout.1.c", Header: nats.Header{hdrBatchID: {"badcommit"}, hdrBatchSeq: {"1"}, hdrBatchCommit: {"yes"}}, Data: []byte("x")}
	if r, err := nc.RequestMsg(msg, 3*time.Second); err == nil {
		t.Logf("%-52s -> %s", "Nats-Batch-Commit: yes", parseAck(r))
	}
	// Commit by an end-of-batch marker: the marker is not stored.
	for i, subj := range []string{"P.qout.1.e1", "P.qout.1.e2", "P.qout.1.e3"} {
		h := nats.Header{hdrBatchID: {"eob"}, hdrBatchSeq: {fmt.Sprint(i + 1)}}
		m := &nats.Msg{Subject: subj, Header: h, Data: []byte("x")}
		if i == 2 {
			h.Set(hdrBatchCommit, "eob")
			r, err := nc.RequestMsg(m, 3*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%-52s -> %s", "commit by eob marker (3rd message not stored)", parseAck(r))
		} else if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	// The empty ack of a staged (non-commit) message that asks for a reply.
	m := &nats.Msg{Subject: "P.qout.1.s", Header: nats.Header{hdrBatchID: {"staged"}, hdrBatchSeq: {"1"}}, Data: []byte("x")}
	r, err := nc.RequestMsg(m, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%-52s -> %d bytes of data, headers %v", "reply to a staged first message", len(r.Data), r.Header)

}

// TestBatchInflight checks how many batches of one partition and of one
// stream may be open or in flight together (R1).
func TestBatchInflight(t *testing.T) {
	s := startServer(t, "")
	nc, js := connect(t, s.ClientURL())
	createStream(t, js, idleStreamConfig(1))
	b := newBatcher(t, nc)
	tok, _ := claim(t, nc, 2, 0, "w")

	// 20 batches of one partition, all fenced on P.own.2, sent back to back
	// without waiting: R1 checks them one after another (no in-process lock).
	var chans []<-chan *nats.Msg
	for i := range 20 {
		ch, err := b.start(fmt.Sprintf("pipe-%d", i), partitionBatch(2, i*50, 50, tok, true, "1"))
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
	t.Logf("R1: 20 fenced batches of one partition pipelined: %d ok, errors %v", ok, codes)

	// 60 batches open at once (first message sent, none committed): the 51st
	// is refused (streamDefaultMaxAtomicBatchInflightPerStream = 50).
	var refused []string
	for i := range 60 {
		m := &nats.Msg{Subject: fmt.Sprintf("P.qout.3.k%d", i), Header: nats.Header{hdrBatchID: {fmt.Sprintf("open-%d", i)}, hdrBatchSeq: {"1"}}, Data: []byte("x")}
		r, err := nc.RequestMsg(m, 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Data) > 0 {
			refused = append(refused, fmt.Sprintf("#%d %s", i+1, parseAck(r)))
		}
	}
	t.Logf("60 batches opened and left open: %d refused; first refusal: %v", len(refused), refused[:min(1, len(refused))])
}
