package integration

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/internal/natstest"
	"github.com/idle-worker/idle-worker/store"
)

// With a store, brokers see an event only once it is stored: every event
// seen live, re-sends included, is in the stream exactly once, in the
// order seen (one stored message per Nats-Msg-Id: the id for the first
// emission, <id>.<attempt>.<run> for a re-send), and a durable consumer
// created after the events reads each of them once, then the ones that
// come later.
func TestQuiesceStreamStoresOncePerID(t *testing.T) {
	t.Parallel()
	const idle, retry = 100 * time.Millisecond, 100 * time.Millisecond
	s := startServer(t, natstest.JetStream())
	relStartWorker(t, s.ClientURL(), relOptions{
		policy: coordinator.Policy{DefaultIdleTimeout: longTimeout, RetryInterval: retry, RetryMaxInterval: retry},
		store:  true,
	})
	nc := connect(t, s.ClientURL())
	events := subscribe(t, nc, prefix+".quiesce.>")
	js := relJetStream(t, nc)
	v := openStoreView(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := v.stream.Info(ctx)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	c := info.Config
	wantSubjects := []string{storeBase + "own.*", storeBase + "log.*", storeBase + "snap.*", storeBase + "chunk.>", storeBase + "qout.>", storeBase + "meta", storeBase + "hwm"}
	if !slices.Equal(c.Subjects, wantSubjects) || c.Duplicates != time.Minute || c.Storage != jetstream.FileStorage || c.MaxMsgs != -1 || c.MaxBytes != -1 {
		t.Errorf("stream config: got subjects %v, duplicates %v, storage %v, max msgs %d, max bytes %d; want %v (not the membership heartbeats), 1m0s, file, no limits (claims and snapshots must not be discarded)",
			c.Subjects, c.Duplicates, c.Storage, c.MaxMsgs, c.MaxBytes, wantSubjects)
	}
	if tr, rp := c.SubjectTransform, c.RePublish; tr == nil || tr.Source != storeBase+"qout.*.>" || tr.Destination != prefix+".quiesce.>" ||
		rp == nil || rp.Source != prefix+".quiesce.>" || rp.Destination != prefix+".quiesce.>" || rp.HeadersOnly {
		t.Errorf("stream config: got transform %+v, republish %+v; want %sqout.*.> stored as %s.quiesce.>, republished whole there", tr, rp, storeBase, prefix)
	}

	var live []event // as core subscribers see them, in order
	attempts := map[string]int{}
	take := func(m *nats.Msg) {
		t.Helper()
		ev := checkEvent(t, m, prefix, time.Now())
		for _, prev := range live {
			if prev.Key == ev.Key && prev.ID != ev.ID {
				t.Fatalf("%s: got id %q; want the same id %q on every re-send", ev.Key, ev.ID, prev.ID)
			}
		}
		live = append(live, ev)
		attempts[ev.Key] = max(attempts[ev.Key], ev.Attempt)
	}
	wait := func(n int, keys ...string) {
		t.Helper()
		deadline := time.Now().Add(time.Duration(n)*retry + bound)
		for slices.ContainsFunc(keys, func(k string) bool { return attempts[k] < n }) {
			m, err := events.NextMsg(time.Until(deadline))
			if err != nil {
				t.Fatalf("waiting for %d attempts of %v: %v (got %v)", n, keys, err, attempts)
			}
			take(m)
		}
		for _, k := range keys { // no more re-sends
			reportState(t, nc, k, "quiesced")
		}
	}
	// settle reads live events until they match what the stream holds on
	// filter (re-sends published before the reports may be in flight) and
	// returns the stored ones.
	settle := func(filter string) []jetstream.Msg {
		t.Helper()
		var stored []jetstream.Msg
		deadline := time.Now().Add(bound)
		for {
			m, err := events.NextMsg(3 * retry)
			if err == nil {
				take(m)
				continue
			}
			if !errors.Is(err, nats.ErrTimeout) {
				t.Fatalf("events: %v", err)
			}
			stored = v.read(filter)
			seen := 0
			for _, ev := range live {
				if strings.HasPrefix(ev.msg.Subject, strings.TrimSuffix(filter, ">")) {
					seen++
				}
			}
			if seen == len(stored) {
				return stored
			}
			if time.Now().After(deadline) {
				t.Fatalf("stream holds %d events on %s; seen live %d: want each stored event seen once", len(stored), filter, seen)
			}
		}
	}
	// checkStored checks that stored, read from the stream, are the events
	// seen live on the same subjects, in the same order, each once.
	checkStored := func(stored []jetstream.Msg, filter string) {
		t.Helper()
		var seen []string
		for _, ev := range live {
			if strings.HasPrefix(ev.msg.Subject, strings.TrimSuffix(filter, ">")) {
				seen = append(seen, ev.msg.Header.Get(bus.HeaderMsgID))
			}
		}
		var got []string
		once := map[string]bool{}
		for _, m := range stored {
			ev, err := bus.ParseQuiesceEvent(m.Data())
			if err != nil {
				t.Fatalf("stored event %s: %v", m.Data(), err)
			}
			h := m.Headers().Get(bus.HeaderMsgID)
			if !msgIDMatches(h, ev.ID, ev.Attempt, true) {
				t.Errorf("stored event of %s attempt %d: got Nats-Msg-Id %q; want %q, or %s.%d.<run> for a re-send", ev.Key, ev.Attempt, h, ev.ID, ev.ID, ev.Attempt)
			}
			if once[h] {
				t.Errorf("stored event with Nats-Msg-Id %q: stored twice; want once", h)
			}
			once[h] = true
			got = append(got, h)
		}
		if !slices.Equal(got, seen) {
			t.Errorf("stream on %s: got %v; want the events seen live, in order: %v", filter, got, seen)
		}
	}

	keys := []string{"st.0", "st.1", "st.2", "st.3", "st.4"}
	for _, k := range keys {
		heartbeat(t, nc, k, timeoutBody(idle))
	}
	wait(4, keys...)
	heartbeat(t, nc, "st.new", "")
	if n := adminQuiesce(t, nc, `{"match":"st.new"}`); n != 1 {
		t.Fatalf("admin quiesce st.new: got %d; want 1", n)
	}
	wait(1, "st.new")
	stored := settle(prefix + ".quiesce.>")
	checkStored(stored, prefix+".quiesce.>")
	for _, k := range append(keys, "st.new") {
		n := 0
		for _, ev := range live {
			if ev.Key == k {
				n++
				if ev.Attempt != n {
					t.Errorf("%s: got attempt %d as its event %d; want each attempt once, in order", k, ev.Attempt, n)
				}
			}
		}
	}

	cons, err := js.CreateOrUpdateConsumer(ctx, store.DefaultStreamName, jetstream.ConsumerConfig{
		Durable: "broker", AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
		FilterSubject: prefix + ".quiesce.st.>",
	})
	if err != nil {
		t.Fatalf("create consumer: %v", err)
	}
	// fetch reads what the consumer has, up to want messages, waiting at
	// most wait for them.
	fetch := func(want int, wait time.Duration) []string {
		t.Helper()
		var out []string
		for deadline := time.Now().Add(wait); len(out) < want && time.Now().Before(deadline); {
			batch, err := cons.Fetch(want-len(out), jetstream.FetchMaxWait(time.Until(deadline)))
			if err != nil {
				t.Fatalf("fetch: %v", err)
			}
			for m := range batch.Messages() {
				if _, err := bus.ParseQuiesceEvent(m.Data()); err != nil {
					t.Fatalf("stored event %s: %v", m.Data(), err)
				}
				if err := m.Ack(); err != nil {
					t.Fatalf("ack: %v", err)
				}
				out = append(out, m.Headers().Get(bus.HeaderMsgID))
			}
			if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
				t.Fatalf("fetch: %v", err)
			}
		}
		return out
	}
	msgIDs := func(ms []jetstream.Msg) []string {
		var out []string
		for _, m := range ms {
			out = append(out, m.Headers().Get(bus.HeaderMsgID))
		}
		return out
	}
	// Then nothing more: the wait for a message too many is short.
	if got, want := append(fetch(len(stored), bound), fetch(1, 3*retry)...), msgIDs(stored); !slices.Equal(got, want) {
		t.Errorf("consumer created after the events: got %v; want each stored event once: %v", got, want)
	}

	// Later emissions reach the consumer once each, re-sends included.
	heartbeat(t, nc, "st.later", timeoutBody(idle))
	wait(3, "st.later")
	later := settle(prefix + ".quiesce.st.later")
	checkStored(later, prefix+".quiesce.st.later")
	if got, want := append(fetch(len(later), bound), fetch(1, 3*retry)...), msgIDs(later); len(want) < 3 || !slices.Equal(got, want) {
		t.Errorf("consumer after st.later was sent %d times: got %v; want %v, each once", attempts["st.later"], got, want)
	}
}

// msgIDMatches reports whether header is the Nats-Msg-Id of an event with
// id and attempt: the id itself, or, for a re-send through the store, the
// id, the attempt and the sending process's token: <id>.<attempt>.<run>.
func msgIDMatches(header, id string, attempt int, stored bool) bool {
	if header == id {
		return true
	}
	if !stored || attempt < 2 {
		return false
	}
	run, ok := strings.CutPrefix(header, id+"."+strconv.Itoa(attempt)+".")
	return ok && run != "" && !strings.Contains(run, ".")
}
