package integration

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/internal/natstest"
	"github.com/idle-worker/idle-worker/partition"
)

// mappingsConfig writes the mappings of s and n as a nats-server
// configuration file and returns its path.
func mappingsConfig(t *testing.T, s bus.Subjects, n int) string {
	t.Helper()
	b, err := partition.Mappings(s, n)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "mappings.conf")
	if err := os.WriteFile(path, []byte(b.Config()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// randomKeys returns count distinct valid keys, of every length from 1 to
// bus.MaxKeyTokens tokens in turn, of any printable ASCII but ".".
func randomKeys(t *testing.T, count int) []string {
	t.Helper()
	seed := rand.Uint64()
	t.Logf("random keys: seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	seen := map[string]bool{}
	keys := make([]string, 0, count)
	for len(keys) < count {
		k := len(keys)%bus.MaxKeyTokens + 1
		toks := make([]string, k)
		for i := range toks {
			tok := make([]byte, 1+rng.IntN(12))
			for j := range tok {
				c := byte(0x21 + rng.IntN(0x7e-0x21+1))
				if c == '.' {
					c = '_'
				}
				tok[j] = c
			}
			toks[i] = string(tok)
		}
		key := strings.Join(toks, ".")
		if bus.ValidateKey(key) != nil || seen[key] {
			continue // too long, or a "*" or ">" token
		}
		seen[key] = true
		keys = append(keys, key)
	}
	return keys
}

// tooLongKey has one token more than a key may have.
var tooLongKey = strings.TrimSuffix(strings.Repeat("t.", bus.MaxKeyTokens+1), ".")

// routed is what a subscriber under P.p. and on the unmapped subjects
// received, checked message by message.
type routed struct {
	// got counts the messages of each verb and key that arrived under
	// P.p. on the key's partition, key intact.
	got map[partition.Verb]map[string]int
	// unmapped are the subjects that arrived unchanged, on P.activity.>
	// or P.state.>.
	unmapped []string
	// perPartition counts the activity messages of each partition.
	perPartition []int
}

// collect reads msgs until every sentinel key's state report has arrived
// (each publisher sends its sentinel last, so by then all its messages
// have arrived), checking each message: under P.p., on partition
// partition.Of(key, n), with the key intact in the subject and the body
// (which is the key), and on that partition's subscription if it came
// through one.
func collect(t *testing.T, s bus.Subjects, n int, msgs <-chan *nats.Msg, sentinels []string) routed {
	t.Helper()
	r := routed{got: map[partition.Verb]map[string]int{partition.Activity: {}, partition.State: {}}, perPartition: make([]int, n)}
	pending := map[string]bool{}
	for _, k := range sentinels {
		pending[k] = true
	}
	deadline := time.After(4 * bound)
	for len(pending) > 0 {
		var m *nats.Msg
		select {
		case m = <-msgs:
		case <-deadline:
			t.Fatalf("sentinels %v not received within %v", pending, 4*bound)
		}
		_, activity := s.ActivityKey(m.Subject)
		if _, state := s.StateKey(m.Subject); activity || state {
			r.unmapped = append(r.unmapped, m.Subject)
			continue
		}
		v, p, key, ok := partition.ParseSubject(s, m.Subject)
		switch {
		case !ok:
			t.Errorf("a message on %q: neither a partition subject nor an unmapped one", m.Subject)
			continue
		case key != string(m.Data):
			t.Errorf("%q carries the key %q; want the published key %q intact", m.Subject, key, m.Data)
		case p != partition.Of(key, n):
			t.Errorf("%s of %q arrived on partition %d; want partition.Of = %d", v, key, p, partition.Of(key, n))
		}
		if want, ok := subscribedPartition(s, m); ok && want != p {
			t.Errorf("%q arrived on the subscription of partition %d", m.Subject, want)
		}
		r.got[v][key]++
		if v == partition.Activity {
			r.perPartition[p]++
		}
		if v == partition.State { // publish sends it after the activity
			delete(pending, key)
		}
	}
	return r
}

// subscribedPartition returns the partition p of the subscription that
// received m when it is a partition's, partition.Subject(s, v, p, ">").
func subscribedPartition(s bus.Subjects, m *nats.Msg) (int, bool) {
	if m.Sub == nil {
		return 0, false
	}
	_, p, key, ok := partition.ParseSubject(s, m.Sub.Subject)
	return p, ok && key == ">"
}

// check verifies that every key arrived exactly once per verb and nothing
// else did, that the only unmapped messages are the too-long key's
// (unmapped of them), and logs the spread over the partitions.
func (r routed) check(t *testing.T, s bus.Subjects, keys []string, unmapped int) {
	t.Helper()
	published := map[string]bool{}
	for _, k := range keys {
		published[k] = true
	}
	for _, v := range []partition.Verb{partition.Activity, partition.State} {
		missing := 0
		for _, k := range keys {
			if got := r.got[v][k]; got != 1 {
				missing++
				if missing <= 3 {
					t.Errorf("%s of %q: arrived %d times under P.p.; want once", v, k, got)
				}
			}
		}
		if missing > 3 {
			t.Errorf("%s: %d keys in all did not arrive once", v, missing)
		}
		for k := range r.got[v] {
			if !published[k] {
				t.Errorf("%s of %q arrived; it was not published", v, k)
			}
		}
	}
	wrong := 0
	for _, subj := range r.unmapped {
		if subj != s.Activity(tooLongKey) && subj != s.State(tooLongKey) {
			wrong++
			if wrong <= 3 {
				t.Errorf("unmapped: %q arrived on its own subject; want it mapped", subj)
			}
		}
	}
	if len(r.unmapped) != unmapped {
		t.Errorf("unmapped: got %d messages on their own subjects, %d of them not the %d-token key's; want %d, all the %d-token key's",
			len(r.unmapped), wrong, bus.MaxKeyTokens+1, unmapped, bus.MaxKeyTokens+1)
	}
	lo, hi := len(keys), 0
	for _, c := range r.perPartition {
		lo, hi = min(lo, c), max(hi, c)
	}
	t.Logf("%d keys over %d partitions: %d to %d per partition; the %d-token key arrived unmapped %d times, never under %s.%s.",
		len(keys), len(r.perPartition), lo, hi, bus.MaxKeyTokens+1, len(r.unmapped)-wrong, s.Prefix(), "p")
}

// publish sends each key's heartbeat and state report (the key as body),
// and the too-long key's, on nc.
func publish(t *testing.T, nc *nats.Conn, s bus.Subjects, keys ...string) {
	t.Helper()
	for _, k := range keys {
		for _, subj := range []string{s.Activity(k), s.State(k)} {
			if err := nc.Publish(subj, []byte(k)); err != nil {
				t.Fatalf("publish %q: %v", subj, err)
			}
		}
	}
}

// The block of idle-worker mappings, loaded into a nats-server from a
// configuration file, routes the heartbeat and the state report of every
// key of 1 to 16 tokens to the key's partition, partition.Of: the same for
// both verbs, key intact. A key of 17 tokens is not mapped: it arrives on
// its own subject only, nowhere under P.p.
func TestMappingsRoute(t *testing.T) {
	t.Parallel()
	const n = 64
	s := bus.MustSubjects("acme.idle")
	srv := startServer(t, natstest.ConfigFile(mappingsConfig(t, s, n)))
	keys := randomKeys(t, 3000)
	const sentinel = "zz.sentinel"
	msgs := make(chan *nats.Msg, 2*len(keys)+16)
	sub := connect(t, srv.ClientURL())
	for _, v := range []partition.Verb{partition.Activity, partition.State} {
		for p := range n {
			chanSubscribe(t, sub, partition.Subject(s, v, p, ">"), msgs)
		}
	}
	chanSubscribe(t, sub, s.Activity(">"), msgs)
	chanSubscribe(t, sub, s.State(">"), msgs)
	if err := sub.FlushTimeout(bound); err != nil {
		t.Fatal(err)
	}

	pub := connect(t, srv.ClientURL())
	publish(t, pub, s, keys...)
	publish(t, pub, s, tooLongKey, sentinel)
	r := collect(t, s, n, msgs, []string{sentinel})
	r.check(t, s, append(keys, sentinel), 2)
}

// chanSubscribe subscribes nc to subject into msgs, which must have room
// for every message the test expects (a full channel drops messages as a
// slow consumer).
func chanSubscribe(t *testing.T, nc *nats.Conn, subject string, msgs chan *nats.Msg) {
	t.Helper()
	if _, err := nc.ChanSubscribe(subject, msgs); err != nil {
		t.Fatalf("subscribe %s: %v", subject, err)
	}
}

// The same block on every node of a 3-node cluster routes the same way
// whichever node a message enters by: a mapping applies where a message
// enters, and the mapped subject travels the routes.
func TestMappingsRouteCluster(t *testing.T) {
	t.Parallel()
	const n = 16
	s := bus.MustSubjects("idle")
	c := natstest.StartCluster(t, 3, natstest.ConfigFile(mappingsConfig(t, s, n)))
	keys := randomKeys(t, 900)
	msgs := make(chan *nats.Msg, 2*len(keys)+16)
	sub := connect(t, c.Servers[0].ClientURL())
	chanSubscribe(t, sub, s.Prefix()+".p.>", msgs)
	chanSubscribe(t, sub, s.Activity(">"), msgs)
	chanSubscribe(t, sub, s.State(">"), msgs)
	if err := sub.FlushTimeout(bound); err != nil {
		t.Fatal(err)
	}
	// The subscriptions reach the other nodes over the routes.
	for _, node := range c.Servers {
		acc := node.GlobalAccount()
		waitFor(t, bound, func() bool {
			return acc.SubscriptionInterest(partition.Subject(s, partition.State, n-1, "k")) &&
				acc.SubscriptionInterest(s.Activity(tooLongKey)) && acc.SubscriptionInterest(s.State(tooLongKey))
		})
	}

	var sentinels []string
	for i, node := range c.Servers {
		pub := connect(t, node.ClientURL())
		var mine []string
		for j := i; j < len(keys); j += len(c.Servers) {
			mine = append(mine, keys[j])
		}
		sentinel := fmt.Sprintf("zz.sentinel.%s", node.Name())
		sentinels = append(sentinels, sentinel)
		publish(t, pub, s, mine...)
		publish(t, pub, s, tooLongKey, sentinel)
	}
	r := collect(t, s, n, msgs, sentinels)
	r.check(t, s, append(keys, sentinels...), 2*len(c.Servers))
}
