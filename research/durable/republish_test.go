//go:build durableresearch

package durable

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// quiesceStreamConfig is today's IDLE_QUIESCE (store/stream.go:99-109) with
// P = "P".
func quiesceStreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:       "IDLE_QUIESCE",
		Subjects:   []string{"P.quiesce.>"},
		Storage:    jetstream.FileStorage,
		Retention:  jetstream.LimitsPolicy,
		Discard:    jetstream.DiscardOld,
		Duplicates: 2 * time.Minute,
		MaxAge:     24 * time.Hour,
		MaxBytes:   1 << 30,
	}
}

// TestRePublishCapture: is the RePublish destination accepted, what does a
// core subscriber of P.quiesce.K see, and does IDLE_QUIESCE (subjects
// P.quiesce.>) store the republished messages, for each way of writing the
// event?
func TestRePublishCapture(t *testing.T) {
	s := startServer(t, "")
	nc, js := connect(t, s.ClientURL())
	createStream(t, js, idleStreamConfig(1))
	t.Logf("RePublish {Source: P.qout.*.>, Destination: P.quiesce.>} accepted")
	q := createStream(t, js, quiesceStreamConfig())
	// The alternative to capture: a stream that sources the events from IDLE
	// and maps their subjects (sourcing strips Nats-Expected-* and
	// Nats-Batch-*, stream.go:4952-4956). It has no subjects of its own.
	srcd := createStream(t, js, jetstream.StreamConfig{
		Name:       "IDLE_QUIESCE_SOURCED",
		Storage:    jetstream.FileStorage,
		Duplicates: 2 * time.Minute,
		Sources: []*jetstream.StreamSource{{
			Name:              stream,
			FilterSubject:     "",
			SubjectTransforms: []jetstream.SubjectTransformConfig{{Source: "P.qout.*.>", Destination: "P.quiesce.>"}},
		}},
	})
	sub := countOn(t, nc, "P.quiesce.>")
	b := newBatcher(t, nc)
	tok, _ := claim(t, nc, 3, 0, "w")
	tok2, _ := claim(t, nc, 4, 0, "w") // P.own.4 is claim 2: token 2

	cases := []struct {
		name string
		key  string
		send func(key string) string
	}{
		{"plain publish, no headers", "k.plain", func(k string) string {
			r, err := nc.Request("P.qout.3."+k, eventPayload("e1", k), 3*time.Second)
			return ackOrErr(r, err)
		}},
		{"publish with Nats-Msg-Id", "k.msgid", func(k string) string {
			r, err := nc.RequestMsg(&nats.Msg{Subject: "P.qout.3." + k, Header: nats.Header{hdrMsgID: {"e2.1"}}, Data: eventPayload("e2", k)}, 3*time.Second)
			return ackOrErr(r, err)
		}},
		{"fenced publish (token 1 on P.own.3)", "k.fence1", func(k string) string {
			r, err := nc.RequestMsg(&nats.Msg{Subject: "P.qout.3." + k, Header: fence(tok, "P.own.3"), Data: eventPayload("e3", k)}, 3*time.Second)
			return ackOrErr(r, err)
		}},
		{"fenced publish (token 2 on P.own.4)", "k.fence2", func(k string) string {
			r, err := nc.RequestMsg(&nats.Msg{Subject: "P.qout.4." + k, Header: fence(tok2, "P.own.4"), Data: eventPayload("e4", k)}, 3*time.Second)
			return ackOrErr(r, err)
		}},
		{"atomic batch (2 events, unfenced)", "k.batch", func(k string) string {
			a, err := b.send("rp-batch", []batchMsg{
				{subject: "P.qout.3." + k, data: eventPayload("e5", k)},
				{subject: "P.qout.3." + k + ".2", data: eventPayload("e5b", k)}}, 3*time.Second)
			if err != nil {
				return err.Error()
			}
			return a.String()
		}},
		{"stale fenced publish (token 99)", "k.stale", func(k string) string {
			r, err := nc.RequestMsg(&nats.Msg{Subject: "P.qout.3." + k, Header: fence(99, "P.own.3"), Data: eventPayload("e6", k)}, 3*time.Second)
			return ackOrErr(r, err)
		}},
	}
	ctx := context.Background()
	for _, c := range cases {
		k := c.key
		subK := countOn(t, nc, "P.quiesce."+k+".>")
		one, err := nc.SubscribeSync("P.quiesce." + k)
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		res := c.send(k)
		m, err := one.NextMsg(500 * time.Millisecond)
		core := "not received"
		if err == nil {
			core = "received; headers: " + headerList(m.Header)
		}
		_ = subK
		time.Sleep(100 * time.Millisecond)
		_, errQ := q.GetLastMsgForSubject(ctx, "P.quiesce."+k)
		_, errS := srcd.GetLastMsgForSubject(ctx, "P.quiesce."+k)
		t.Logf("%s\n\tpublish: %s\n\tcore P.quiesce.%s: %s\n\tIDLE_QUIESCE stored it: %v\n\tIDLE_QUIESCE_SOURCED stored it: %v",
			c.name, res, k, core, errQ == nil, errS == nil)
	}
	t.Logf("core subscriber on P.quiesce.> saw %d messages", sub.count())
	waitFor(t, 3*time.Second, "sourced all 6 stored events", func() bool { return streamState(t, srcd).Msgs == 6 })
	t.Logf("IDLE_QUIESCE_SOURCED holds all 6 stored events after a wait (k.plain was sourced late: the source consumer starts asynchronously)")
	if m, err := srcd.GetLastMsgForSubject(ctx, "P.quiesce.k.fence2"); err == nil {
		t.Logf("sourced copy headers: %s", headerList(m.Header))
	}
}

func ackOrErr(r *nats.Msg, err error) string {
	if err != nil {
		return err.Error()
	}
	return parseAck(r).String()
}

func headerList(h nats.Header) string {
	var ks []string
	for k, v := range h {
		ks = append(ks, k+"="+strings.Join(v, ","))
	}
	sort.Strings(ks)
	return strings.Join(ks, " ")
}

// TestRePublishExactlyOnce: N events in fenced atomic batches over several
// partitions, interleaved with stale and duplicate batches; a core
// subscriber must see every stored event exactly once and none of the
// refused ones. Also: does the republish reach the publisher's connection
// before the commit's ack?
func TestRePublishExactlyOnce(t *testing.T) {
	s := startServer(t, "")
	nc, js := connect(t, s.ClientURL())
	createStream(t, js, idleStreamConfig(1))
	// The subscriber on its own connection.
	snc, _ := connect(t, s.ClientURL())
	var mu sync.Mutex
	seen := map[string]int{}
	sub, err := snc.Subscribe("P.quiesce.>", func(m *nats.Msg) {
		mu.Lock()
		seen[m.Subject]++
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	_ = snc.Flush()

	// Republish vs ack on ONE connection, in socket order: the publish's
	// reply subject is under P.quiesce.ack.> so one synchronous
	// subscription receives both, in the order the server wrote them.
	ord, err := nc.SubscribeSync("P.quiesce.o.>")
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	first := map[string]int{}
	for i := range 200 {
		if err := nc.PublishRequest(fmt.Sprintf("P.qout.9.o.ev.%d", i), fmt.Sprintf("P.quiesce.o.ack.%d", i), []byte("x")); err != nil {
			t.Fatal(err)
		}
		m1, err := ord.NextMsg(3 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ord.NextMsg(3 * time.Second); err != nil {
			t.Fatal(err)
		}
		first[strings.Split(m1.Subject, ".")[3]]++
	}
	t.Logf("single publishes, same connection, socket order: first to arrive %v (ev = republished event, ack = pub ack)", first)

	const parts, per = 16, 200
	b := newBatcher(t, nc)
	toks := make([]uint64, parts)
	for p := range parts {
		toks[p], _ = claim(t, nc, p, 0, "w")
	}
	stored := map[string]bool{}
	refused := 0
	for round := range 3 {
		for p := range parts {
			from := (round*parts + p) * per
			a, err := b.send(fmt.Sprintf("r%d-p%d", round, p), partitionBatch(p, from, per, toks[p], true, "1"), 5*time.Second)
			if err != nil || a.Error != nil {
				t.Fatalf("good batch: %v %s", err, a)
			}
			for i := from; i < from+per; i++ {
				stored[fmt.Sprintf("P.quiesce.%s", keyOf(i))] = true
			}
			// A stale one and a duplicate one, both refused.
			st, _ := b.send(fmt.Sprintf("r%d-p%d-stale", round, p), partitionBatch(p, 900000+from, per, toks[p]-1+1000, true, "1"), 5*time.Second)
			dp, _ := b.send(fmt.Sprintf("r%d-p%d-dup", round, p), partitionBatch(p, from, per, toks[p], true, "1"), 5*time.Second)
			if st.Error == nil || dp.Error == nil {
				t.Fatalf("refused batches accepted: %s / %s", st, dp)
			}
			refused += 2 * per
		}
	}
	waitFor(t, 5*time.Second, "all republished", func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for subj := range stored {
			if seen[subj] > 0 {
				n++
			}
		}
		return n == len(stored)
	})
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	dup, extra := 0, 0
	for subj, n := range seen {
		if strings.HasPrefix(subj, "P.quiesce.o.") {
			continue
		}
		if !stored[subj] {
			extra++
		} else if n > 1 {
			dup++
		}
	}
	t.Logf("stored events %d, refused %d: subscriber saw %d distinct, %d more than once, %d never stored", len(stored), refused, len(seen)-400, dup, extra)
	if dup != 0 || extra != 0 {
		t.Fatal("not exactly once")
	}
}
