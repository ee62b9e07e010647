package natstest_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idle-worker/idle-worker/internal/natstest"
)

// waitFor polls cond until it returns nil, failing t with its last error
// after d.
func waitFor(t *testing.T, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %v", d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// An R3 stream on a 3-node cluster keeps every acknowledged message when
// its leader fails: the survivors elect a new leader and serve them.
func TestClusterStreamFailover(t *testing.T) {
	const (
		stream = "ORDERS"
		n      = 5
	)
	c := natstest.StartCluster(t, 3)
	if got := strings.Count(c.URLs(), ",") + 1; got != 3 {
		t.Fatalf("URLs %q: got %d URLs; want 3", c.URLs(), got)
	}
	for i, s := range c.Servers {
		if want := fmt.Sprintf("n%d", i+1); s.Name() != want || !s.JetStreamIsClustered() {
			t.Errorf("node %d: named %q, clustered %v; want %q, clustered", i, s.Name(), s.JetStreamIsClustered(), want)
		}
	}
	nc, err := nats.Connect(c.URLs(), nats.Timeout(bound), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*bound)
	defer cancel()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{"orders.>"}, Replicas: 3})
	if err != nil {
		t.Fatalf("create R3 stream: %v", err)
	}
	for i := range n {
		if _, err := js.Publish(ctx, "orders.new", fmt.Appendf(nil, "order %d", i+1)); err != nil {
			t.Fatalf("publish %d: %v", i+1, err)
		}
	}

	var leader *natstest.Server
	waitFor(t, bound, func() error {
		if leader = c.StreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream); leader == nil {
			return fmt.Errorf("stream %s has no leader", stream)
		}
		return nil
	})
	if err := leader.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, bound, func() error {
		if l := c.StreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream); l == nil {
			return fmt.Errorf("stream %s has no leader since %s stopped", stream, leader.Name())
		}
		return nil
	})
	for seq := uint64(1); seq <= n; seq++ {
		var msg *jetstream.RawStreamMsg
		waitFor(t, bound, func() error { // the connection may be reconnecting
			var err error
			msg, err = st.GetMsg(ctx, seq)
			return err
		})
		if got, want := string(msg.Data), fmt.Sprintf("order %d", seq); got != want {
			t.Errorf("message %d after failover: got %q; want %q", seq, got, want)
		}
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != n || info.Cluster == nil || info.Cluster.Leader == leader.Name() {
		t.Errorf("stream after failover: %d messages, cluster %+v; want %d and a leader other than %s",
			info.State.Msgs, info.Cluster, n, leader.Name())
	}
}
