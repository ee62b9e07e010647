//go:build durableresearch

// Package scratch holds the experiments behind docs/durable-research.md.
// They are not part of the product or of `make test`: every file carries the
// build tag durableresearch. Run one with
//
//	go test -tags durableresearch -run TestName -count=1 -v ./scratch/
package durable

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idle-worker/idle-worker/internal/natstest"
)

// Header names of ADR-50 atomic batch publish (nats-server stream.go:756-758)
// and of subject-scoped optimistic concurrency (nats.go jetstream/message.go:192,198).
const (
	hdrBatchID     = "Nats-Batch-Id"
	hdrBatchSeq    = "Nats-Batch-Sequence"
	hdrBatchCommit = "Nats-Batch-Commit"
	hdrExpSeq      = "Nats-Expected-Last-Subject-Sequence"
	hdrExpSubj     = "Nats-Expected-Last-Subject-Sequence-Subject"
	hdrMsgID       = "Nats-Msg-Id"
)

// stream is the name of the proposed single stream per prefix.
const stream = "IDLE"

// startServer starts an embedded JetStream server whose store is dir (a
// fresh temporary one when dir is empty), so a test can restart it on the
// same store.
func startServer(tb testing.TB, dir string, more ...func(*server.Options)) *natstest.Server {
	tb.Helper()
	if dir == "" {
		dir = tb.TempDir()
	}
	return natstest.Start(tb, natstest.JetStream(), natstest.Configure(func(o *server.Options) {
		o.StoreDir = dir
		for _, f := range more {
			f(o)
		}
	}))
}

func connect(tb testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	tb.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(16384))
	if err != nil {
		tb.Fatal(err)
	}
	return nc, js
}

// idleStreamConfig is the stream of ha-on-nats.md section 5.
func idleStreamConfig(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:               stream,
		Subjects:           []string{"P.own.>", "P.reg.>", "P.log.>", "P.qout.>"},
		Storage:            jetstream.FileStorage,
		Replicas:           replicas,
		MaxMsgsPerSubject:  1,
		AllowAtomicPublish: true,
		AllowMsgTTL:        true,
		AllowDirect:        true,
		Duplicates:         2 * time.Minute,
		RePublish:          &jetstream.RePublish{Source: "P.qout.*.>", Destination: "P.quiesce.>"},
	}
}

func createStream(tb testing.TB, js jetstream.JetStream, cfg jetstream.StreamConfig) jetstream.Stream {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := js.CreateStream(ctx, cfg)
	if err != nil {
		tb.Fatalf("create stream %s: %v", cfg.Name, err)
	}
	return s
}

// apiErr is the error object of a JetStream API response.
type apiErr struct {
	Code        int    `json:"code"`
	ErrCode     int    `json:"err_code"`
	Description string `json:"description"`
}

// pubAck is the JSON answer to a JetStream publish, batch commits included
// (stream.go:7302-7308, 8009-8012).
type pubAck struct {
	Stream    string  `json:"stream"`
	Seq       uint64  `json:"seq"`
	Duplicate bool    `json:"duplicate"`
	Batch     string  `json:"batch"`
	Count     int     `json:"count"`
	Error     *apiErr `json:"error"`
}

func (a pubAck) String() string {
	if a.Error != nil {
		return fmt.Sprintf("error %d (%d): %s", a.Error.ErrCode, a.Error.Code, a.Error.Description)
	}
	return fmt.Sprintf("ok seq=%d batch=%q count=%d dup=%v", a.Seq, a.Batch, a.Count, a.Duplicate)
}

func parseAck(m *nats.Msg) pubAck {
	var a pubAck
	if len(m.Data) == 0 {
		a.Error = &apiErr{Description: "empty (staged) ack, status " + m.Header.Get("Status")}
		return a
	}
	if err := json.Unmarshal(m.Data, &a); err != nil {
		a.Error = &apiErr{Description: "unparsable ack: " + string(m.Data)}
	}
	return a
}

// batcher sends ADR-50 atomic batches over one connection with one reply
// subscription (a wildcard inbox), so many batches may be in flight.
type batcher struct {
	nc     *nats.Conn
	prefix string
	sub    *nats.Subscription
	n      atomic.Uint64
	mu     sync.Mutex
	wait   map[string]chan *nats.Msg
	// replyFirst also asks for a reply to the first message (the empty
	// "staged" ack of stream.go:7804-7807) and waits for it before sending
	// the rest; otherwise only the commit carries a reply.
	replyFirst bool
}

func newBatcher(tb testing.TB, nc *nats.Conn) *batcher {
	tb.Helper()
	b := &batcher{nc: nc, prefix: nc.NewInbox(), wait: map[string]chan *nats.Msg{}}
	sub, err := nc.Subscribe(b.prefix+".*", func(m *nats.Msg) {
		b.mu.Lock()
		ch := b.wait[m.Subject]
		b.mu.Unlock()
		if ch != nil {
			ch <- m
		}
	})
	if err != nil {
		tb.Fatal(err)
	}
	b.sub = sub
	return b
}

// batchMsg is one message of a batch.
type batchMsg struct {
	subject string
	hdr     nats.Header // extra headers (fence, msg id); may be nil
	data    []byte
}

// send publishes msgs as one atomic batch with id and returns the commit's
// answer. It waits at most timeout for it.
func (b *batcher) send(id string, msgs []batchMsg, timeout time.Duration) (pubAck, error) {
	done, err := b.start(id, msgs)
	if err != nil {
		return pubAck{}, err
	}
	select {
	case m := <-done:
		return parseAck(m), nil
	case <-time.After(timeout):
		return pubAck{}, fmt.Errorf("batch %s: no commit answer within %v", id, timeout)
	}
}

// start publishes the batch and returns the channel its commit answer will
// arrive on.
func (b *batcher) start(id string, msgs []batchMsg) (<-chan *nats.Msg, error) {
	n := b.n.Add(1)
	reply := b.prefix + "." + strconv.FormatUint(n, 10)
	ch := make(chan *nats.Msg, 2)
	b.mu.Lock()
	b.wait[reply] = ch
	b.mu.Unlock()
	var firstReply string
	var firstCh chan *nats.Msg
	if b.replyFirst {
		firstReply = b.prefix + ".f" + strconv.FormatUint(n, 10)
		firstCh = make(chan *nats.Msg, 1)
		b.mu.Lock()
		b.wait[firstReply] = firstCh
		b.mu.Unlock()
	}
	for i, bm := range msgs {
		h := nats.Header{}
		for k, v := range bm.hdr {
			h[k] = v
		}
		h.Set(hdrBatchID, id)
		h.Set(hdrBatchSeq, strconv.Itoa(i+1))
		m := &nats.Msg{Subject: bm.subject, Header: h, Data: bm.data}
		if i == len(msgs)-1 {
			h.Set(hdrBatchCommit, "1")
			m.Reply = reply
		} else if i == 0 && b.replyFirst {
			m.Reply = firstReply
		}
		if err := b.nc.PublishMsg(m); err != nil {
			return nil, fmt.Errorf("batch %s message %d: %w", id, i+1, err)
		}
		if i == 0 && b.replyFirst && len(msgs) > 1 {
			select {
			case fm := <-firstCh:
				if len(fm.Data) > 0 { // an error: the batch is already refused
					ch <- fm
					return ch, nil
				}
			case <-time.After(5 * time.Second):
				return nil, fmt.Errorf("batch %s: no answer to the first message", id)
			}
		}
	}
	return ch, nil
}

// fence returns the headers that make a write conditional on the claim
// subject's last sequence being token.
func fence(token uint64, claimSubject string) nats.Header {
	return nats.Header{hdrExpSeq: {strconv.FormatUint(token, 10)}, hdrExpSubj: {claimSubject}}
}

// claim CAS-publishes a claim on P.own.<p>, expecting prev as the claim
// subject's last sequence, and returns the new token.
func claim(tb testing.TB, nc *nats.Conn, p int, prev uint64, owner string) (uint64, pubAck) {
	tb.Helper()
	subj := fmt.Sprintf("P.own.%d", p)
	m := &nats.Msg{Subject: subj, Header: fence(prev, subj), Data: []byte(owner)}
	r, err := nc.RequestMsg(m, 5*time.Second)
	if err != nil {
		tb.Fatalf("claim %s: %v", subj, err)
	}
	a := parseAck(r)
	return a.Seq, a
}

// eventPayload is about the size of a bus.QuiesceEvent (~200 bytes).
func eventPayload(id, key string) []byte {
	return fmt.Appendf(nil, `{"id":%q,"key":%q,"reason":"idle_timeout","idle_for_ms":30012,"configured_timeout_ms":30000,"at":"2026-12-01T10:00:00.123456789Z","attempt":1,"pad":"%s"}`,
		id, key, strings.Repeat("x", 40))
}

// recordPayload is a bus record (~60 bytes).
func recordPayload(gen int, state string) []byte {
	return fmt.Appendf(nil, `{"timeout_ms":30000,"state":%q,"generation":%d}`, state, gen)
}

// keyOf is the i-th backend key, shaped like idle-bench's (cmd/idle-bench/ingest.go).
func keyOf(i int) string { return "ws-" + strconv.Itoa(i%1000) + ".gopls." + strconv.Itoa(i) }

// load returns /proc/loadavg's first three fields, to say whether the
// machine was busy while a measurement ran.
func load() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// memNow returns the process RSS and the Go heap in use after a full GC,
// in MB.
func memNow() (rssMB, heapMB float64) {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heapMB = float64(ms.HeapInuse) / (1 << 20)
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, heapMB
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			rssMB = kb / 1024
		}
	}
	return rssMB, heapMB
}

// waitFor polls cond every 5 ms until it holds or bound passes.
func waitFor(tb testing.TB, bound time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not within %v", what, bound)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// envInt reads an integer knob of an experiment.
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func streamState(tb testing.TB, s jetstream.Stream) jetstream.StreamState {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := s.Info(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	return info.State
}
