package store

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/internal/natstest"
)

func TestRetryWait(t *testing.T) {
	tests := []struct {
		tries int
		want  time.Duration
	}{
		{0, 10 * time.Millisecond},
		{1, 10 * time.Millisecond},
		{2, 20 * time.Millisecond},
		{4, 80 * time.Millisecond},
		{7, 640 * time.Millisecond},
		{8, 640 * time.Millisecond},
		{maxPublishTries, 640 * time.Millisecond},
		{1 << 20, 640 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := retryWait(tt.tries); got != tt.want {
			t.Errorf("retryWait(%d) = %v; want %v", tt.tries, got, tt.want)
		}
	}
}

// TestRetriesStoreEveryEvent: events handed to the retrier after a failure
// are all stored, once each, and counted as failed, none abandoned.
func TestRetriesStoreEveryEvent(t *testing.T) {
	s := natstest.Start(t, natstest.JetStream())
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	subj := bus.MustSubjects("idle")
	q, err := OpenQuiesceStream(ctx, nc, subj, StreamConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	const n = 100
	for i := range n {
		ev := bus.QuiesceEvent{ID: "r-" + strconv.Itoa(i), Key: "k." + strconv.Itoa(i), Reason: "idle_timeout", At: time.Now(), Attempt: 1}
		m := &nats.Msg{Subject: subj.Quiesce(ev.Key), Data: ev.AppendJSON(nil), Header: nats.Header{bus.HeaderMsgID: []string{ev.ID}}}
		q.retry(m, errors.New("injected failure"))
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, DefaultStreamName)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream holds %d events; want %d", info.State.Msgs, n)
		}
	}
	if err := q.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if c := q.Counters(); c.Failed != n || c.Abandoned != 0 {
		t.Errorf("counters %+v; want %d failed, none abandoned", c, n)
	}
}
