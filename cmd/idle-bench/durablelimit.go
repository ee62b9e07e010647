package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/store"
)

// limitWindow is the bare publisher's window of unacknowledged publishes:
// the store's own bound on writes in flight (store's maxInflight).
const limitWindow = 1 << 16

// limitResult is the store's limit: a bare async JetStream publisher
// storing the durable burst's events into a stream store.Open created (so
// configured exactly as the worker's), on the subjects the store publishes
// events on.
type limitResult struct {
	Events int `json:"events"`
	Rounds int `json:"rounds"`
	// BodyBytes is the mean event body, the JSON the worker would send for
	// the same key.
	BodyBytes float64 `json:"body_bytes"`
	// SeenMS is the best round's time from the first publish until a core
	// subscriber saw the last event; StoredMS until every acknowledgement
	// had arrived, in that round.
	SeenMS   float64 `json:"seen_ms"`
	StoredMS float64 `json:"stored_ms"`
	// PerSecond is Events / SeenMS.
	PerSecond float64 `json:"events_per_second"`
	// StreamMsgs is what the stream held after the best round (want
	// Events); Missing, Duplicates and AckErrors count the subscriber's
	// gaps, its repeats and failed acknowledgements over every round.
	StreamMsgs uint64    `json:"stream_msgs"`
	Missing    int       `json:"missing"`
	Duplicates int       `json:"duplicates"`
	AckErrors  uint64    `json:"ack_errors"`
	RoundsMS   []float64 `json:"rounds_seen_ms"`
}

// measureLimit runs limitRound rounds times; the round whose last event a
// core subscriber saw soonest counts.
func measureLimit(ctx context.Context, url string, n, rounds int) (limitResult, error) {
	r := limitResult{Events: n, Rounds: rounds}
	for round := range rounds {
		seen, stored, msgs, err := limitRound(ctx, url, n, &r)
		if err != nil {
			return r, fmt.Errorf("round %d: %w", round+1, err)
		}
		r.RoundsMS = append(r.RoundsMS, ms(seen))
		if r.SeenMS == 0 || ms(seen) < r.SeenMS {
			r.SeenMS, r.StoredMS, r.StreamMsgs = ms(seen), ms(stored), msgs
		}
	}
	if r.SeenMS > 0 {
		r.PerSecond = float64(n) / (r.SeenMS / 1000)
	}
	return r, nil
}

// limitEvents builds the n events of keys dur.<i> as the durable worker
// publishes them: the same JSON body, on the store's event subject
// P.store.qout.<p>.<K> (p: the key's partition among parts), with the
// event id as Nats-Msg-Id. Unlike the worker's, they are not fenced and
// carry no draining record. It returns them and their mean body size.
func limitEvents(subj bus.Subjects, n, parts int) ([]*nats.Msg, float64) {
	incarn := nuid.Next()
	at := time.Now()
	msgs := make([]*nats.Msg, n)
	total := 0
	for i := range msgs {
		key := "dur." + strconv.Itoa(i)
		ev := bus.QuiesceEvent{
			ID:     incarn + "-" + strconv.Itoa(i+1),
			Key:    key,
			Reason: coordinator.IdleTimeout.String(),
			// What a burst backend reports: idle for its timeout, about
			// the section's lead.
			IdleForMS: 3000, ConfiguredTimeoutMS: 3000,
			At: at, Attempt: 1,
		}
		body := ev.AppendJSON(nil)
		total += len(body)
		msgs[i] = &nats.Msg{Subject: store.EventSubject(subj, parts, key), Data: body,
			Header: nats.Header{bus.HeaderMsgID: []string{ev.ID}}}
	}
	return msgs, float64(total) / float64(max(n, 1))
}

// limitRound is one round of measureLimit: a fresh stream made by
// store.Open (the store itself closed at once, leaving the stream), n
// events published from a bare jetstream.PublishMsgAsync publisher with
// window limitWindow, and a core subscriber on P.quiesce.>. It adds the
// subscriber's gaps and repeats and the failed acknowledgements to r.
func limitRound(ctx context.Context, url string, n int, r *limitResult) (seen, stored time.Duration, msgs uint64, err error) {
	names := freshStore()
	defer removeStore(url, names)
	subj := bus.MustSubjects(bus.DefaultPrefix)
	nc, err := nats.Connect(url, nats.Name("idle-bench limit publisher"))
	if err != nil {
		return 0, 0, 0, err
	}
	defer nc.Close()
	octx, cancel := context.WithTimeout(ctx, waitBound)
	defer cancel()
	st, err := store.Open(octx, nc, subj, names)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("store: %w", err)
	}
	parts := st.Partitions()
	if err := st.Close(octx); err != nil { // the stream stays; only the store goes
		return 0, 0, 0, fmt.Errorf("store: %w", err)
	}
	var ackErrs atomic.Uint64
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(limitWindow),
		jetstream.WithPublishAsyncTimeout(5*time.Second),
		jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *nats.Msg, error) { ackErrs.Add(1) }))
	if err != nil {
		return 0, 0, 0, err
	}
	events, body := limitEvents(subj, n, parts)
	r.BodyBytes = body
	got := newArrivals(n)
	prefix := subj.Quiesce("dur.")
	rs, err := rawSubscribe(url, subj.Quiesce(">"), func(subject []byte, at time.Time) {
		i, ok := keyIndex(subject, prefix)
		got.record(i, ok, at)
	})
	if err != nil {
		return 0, 0, 0, err
	}
	defer rs.Close()
	t0 := time.Now()
	for i, m := range events {
		if _, err := js.PublishMsgAsync(m, jetstream.WithStallWait(waitBound)); err != nil {
			return 0, 0, 0, fmt.Errorf("publish %d: %w", i, err)
		}
	}
	werr := got.wait(ctx, t0.Add(waitBound))
	select {
	case <-js.PublishAsyncComplete():
		stored = time.Since(t0)
	case <-time.After(waitBound):
		return 0, 0, 0, errors.New("acknowledgements not all in")
	}
	if werr != nil {
		return 0, 0, 0, werr
	}
	got.mu.Lock()
	var last time.Time
	for _, at := range got.at {
		last = maxTime(last, at)
	}
	missing := n - got.got
	r.Missing, r.Duplicates = r.Missing+missing, r.Duplicates+got.dups+got.unexpected
	got.mu.Unlock()
	seen = stored // when something never arrived, the acknowledgements bound it
	if missing == 0 {
		seen = last.Sub(t0)
	}
	r.AckErrors += ackErrs.Load()
	s, err := js.Stream(octx, names.Stream)
	if err != nil {
		return 0, 0, 0, err
	}
	info, err := s.Info(octx)
	if err != nil {
		return 0, 0, 0, err
	}
	return seen, stored, info.State.Msgs, nil
}
