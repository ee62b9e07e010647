package member_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/internal/natstest"
	"github.com/idle-worker/idle-worker/member"
)

// TestMembershipHostileInput: junk on the subject is counted and ignored;
// the membership keeps working.
func TestMembershipHostileInput(t *testing.T) {
	s := natstest.Start(t)
	a := startMembers(t, s.ClientURL(), "a")[0]
	pub := connect(t, s.ClientURL())
	subject := member.Subject(testSubjects)
	junk := []struct {
		data   string
		reason string
	}{
		{`not json`, "bad_payload"},
		{`{"name":"x","instance":"X","partitions":[1,`, "bad_payload"},
		{`{"name":"x y","instance":"X"}`, "bad_name"},
		{`{"name":"` + strings.Repeat("x", 100) + `","instance":"X"}`, "bad_name"},
		{`{"name":"x","instance":""}`, "bad_name"},
		{`{"name":"x","instance":"X","partitions":[99999999]}`, "bad_partition"},
		{`{"name":"x","instance":"X","partitions":[-5]}`, "bad_partition"},
		{`{"name":"x","instance":"X","partitions":[1,1]}`, "bad_partition"},
		{`{"name":"x","instance":"X","pad":"` + strings.Repeat("p", member.MaxHeartbeatBytes) + `"}`, "too_large"},
	}
	want := map[string]uint64{}
	for _, j := range junk {
		if err := pub.Publish(subject, []byte(j.data)); err != nil {
			t.Fatal(err)
		}
		want[j.reason]++
	}
	// A sane heartbeat from a member that never sends another: it joins,
	// then dies after the timeout.
	if err := pub.Publish(subject, []byte(`{"name":"ghost","instance":"G1","partitions":[7]}`)); err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, waitBound, "the ghost joining", func() bool { return a.View().Owners()[7] == "ghost" })
	if got := a.Stats().Rejected; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("rejected %v; want %v", got, want)
	}
	natstest.WaitFor(t, waitBound, "the ghost dying", func() bool { return slices.Equal(live(a), []string{"a"}) })
}

func TestStartBadConfig(t *testing.T) {
	s := natstest.Start(t)
	nc := connect(t, s.ClientURL())
	noEcho, err := nats.Connect(s.ClientURL(), nats.NoEcho())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(noEcho.Close)
	tests := []struct {
		name string
		nc   *nats.Conn
		edit func(*member.Config)
		want error
	}{
		{"empty name", nc, func(c *member.Config) { c.Name = "" }, member.ErrBadName},
		{"bad name", nc, func(c *member.Config) { c.Name = "a b" }, member.ErrBadName},
		{"timeout under two intervals", nc, func(c *member.Config) { c.Timeout = c.Interval }, member.ErrBadConfig},
		{"negative interval", nc, func(c *member.Config) { c.Interval = -1 }, member.ErrBadConfig},
		{"no partitions", nc, func(c *member.Config) { c.Partitions = 0 }, member.ErrBadConfig},
		{"too many partitions", nc, func(c *member.Config) { c.Partitions = 1 << 20 }, member.ErrBadConfig},
		{"no connection", nil, func(*member.Config) {}, member.ErrBadConfig},
		{"no echo", noEcho, func(*member.Config) {}, member.ErrBadConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig("a")
			tt.edit(&cfg)
			m, err := member.Start(context.Background(), tt.nc, testSubjects, cfg)
			if !errors.Is(err, tt.want) {
				if m != nil {
					m.Stop()
				}
				t.Fatalf("Start: %v; want %v", err, tt.want)
			}
		})
	}
}

func TestStartCancelled(t *testing.T) {
	s := natstest.Start(t)
	nc := connect(t, s.ClientURL())
	ctx, cancel := context.WithCancel(context.Background())
	cfg := testConfig("a")
	cfg.Interval, cfg.Timeout = time.Second, time.Minute
	done := make(chan error, 1)
	go func() {
		m, err := member.Start(ctx, nc, testSubjects, cfg)
		if m != nil {
			m.Stop()
		}
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Start: %v; want context.Canceled", err)
		}
	case <-time.After(waitBound):
		t.Fatal("Start did not return after its context was cancelled")
	}
	if n := nc.NumSubscriptions(); n != 0 {
		t.Errorf("%d subscriptions left; want 0", n)
	}
}
