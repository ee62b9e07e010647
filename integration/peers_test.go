package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/internal/natstest"
)

// fakePeers is a membership table the test writes: every worker of the
// test reads it through its own peerView, as cmd/idle-worker's workers
// read package member's view.
type fakePeers struct {
	mu      sync.Mutex
	members map[string][]int
}

func newFakePeers() *fakePeers { return &fakePeers{members: map[string][]int{}} }

// set records that member name owns parts.
func (f *fakePeers) set(name string, parts []int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.members[name] = slices.Clone(parts)
}

// view is the table as member self sees it.
func (f *fakePeers) view(self string) bus.Peers { return peerView{f: f, self: self} }

type peerView struct {
	f    *fakePeers
	self string
}

func (v peerView) Self() string { return v.self }

func (v peerView) Members() []bus.MemberInfo {
	v.f.mu.Lock()
	defer v.f.mu.Unlock()
	var out []bus.MemberInfo
	for name, parts := range v.f.members {
		out = append(out, bus.MemberInfo{Name: name, Partitions: slices.Clone(parts)})
	}
	slices.SortFunc(out, func(a, b bus.MemberInfo) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// peerGroup is n in-process workers of one prefix on one JetStream server,
// each with its own connection and store, named w0, w1, …; worker i owns
// the partitions p with p % n == i.
type peerGroup struct {
	srv     *server.Server
	workers []*testWorker
	peers   *fakePeers
	nc      *nats.Conn // a client's connection
	parts   int
}

func startPeerGroup(t *testing.T, n, partitions int, peerTimeout time.Duration) *peerGroup {
	t.Helper()
	g := &peerGroup{srv: startServer(t, natstest.JetStream()), peers: newFakePeers(), parts: partitions}
	for i := range n {
		name := fmt.Sprintf("w%d", i)
		nc := connect(t, g.srv.ClientURL())
		w := startWorkerOn(t, nc, bus.WorkerConfig{
			Policy:      coordinator.Policy{DefaultIdleTimeout: longTimeout},
			Store:       relOpenStore(t, nc, partitions),
			Cluster:     true,
			Peers:       g.peers.view(name),
			PeerTimeout: peerTimeout,
		})
		var mine []int
		for p := i; p < partitions; p += n {
			mine = append(mine, p)
		}
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		err := w.Acquire(ctx, mine)
		cancel()
		if err != nil {
			t.Fatalf("%s: Acquire(%v): %v", name, mine, err)
		}
		g.peers.set(name, w.Owned())
		g.workers = append(g.workers, w)
	}
	g.nc = connect(t, g.srv.ClientURL())
	return g
}

// owner returns the index of the worker that owns key.
func (g *peerGroup) owner(key string) int {
	return bus.PartitionOf(key, g.parts) % len(g.workers)
}

// track heartbeats count keys (answered by their owners) and returns them
// sorted; every worker holds at least one.
func (g *peerGroup) track(t *testing.T, count int) []string {
	t.Helper()
	var keys []string
	held := make([]int, len(g.workers))
	for i := range count {
		k := fmt.Sprintf("host%d.svc.%d", i%7, i)
		heartbeat(t, g.nc, k, "")
		keys = append(keys, k)
		held[g.owner(k)]++
	}
	for i, n := range held {
		if n == 0 {
			t.Fatalf("worker w%d owns none of the %d keys; pick other keys", i, count)
		}
	}
	slices.Sort(keys)
	return keys
}

// endpointRequests returns how many requests the admin endpoint served, by
// service instance, once n instances have answered $SRV.STATS.
func endpointRequests(t *testing.T, nc *nats.Conn, endpoint string, n int) map[string]int {
	t.Helper()
	subject, err := micro.ControlSubject(micro.StatsVerb, bus.ServiceName, "")
	if err != nil {
		t.Fatal(err)
	}
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(subject, inbox, nil); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for len(got) < n {
		m, err := sub.NextMsg(bound)
		if err != nil {
			t.Fatalf("stats: %d of %d instances answered: %v", len(got), n, err)
		}
		var st micro.Stats
		if err := json.Unmarshal(m.Data, &st); err != nil {
			t.Fatalf("stats %s: %v", m.Data, err)
		}
		got[st.ID] = 0
		for _, e := range st.Endpoints {
			if e.Name == endpoint {
				got[st.ID] = e.NumRequests
			}
		}
	}
	return got
}

// adminRequest sends body to P.admin.<endpoint> and decodes an ok reply.
func adminRequest(t *testing.T, nc *nats.Conn, endpoint, body string, v any) *nats.Msg {
	t.Helper()
	m := request(t, nc, prefix+".admin."+endpoint, body)
	decodeOK(t, m, v)
	return m
}

// Three workers each own a third of the partitions; whichever of them an
// admin request reaches, list, get, quiesce and forget answer for all of
// them, and members lists every partition once.
func TestPeersAdminWholePrefix(t *testing.T) {
	t.Parallel()
	g := startPeerGroup(t, 3, 8, bound)
	keys := g.track(t, 30)

	t.Run("list reaches every worker", func(t *testing.T) {
		for try := 1; ; try++ {
			r := adminList(t, g.nc, "") // a complete reply: no partial, missing
			if got := listKeys(r); !slices.Equal(got, keys) || r.Total != len(keys) || r.Truncated {
				t.Fatalf("list: got %v total %d truncated %v; want %v total %d", got, r.Total, r.Truncated, keys, len(keys))
			}
			hits := endpointRequests(t, g.nc, "list", len(g.workers))
			if !slices.Contains(slices.Collect(maps.Values(hits)), 0) {
				break
			}
			if try == 100 {
				t.Fatalf("after %d lists some worker got none: %v", try, hits)
			}
		}
	})

	t.Run("list", func(t *testing.T) {
		host0 := slices.DeleteFunc(slices.Clone(keys), func(k string) bool { return !strings.HasPrefix(k, "host0.") })
		tests := []struct {
			body      string
			keys      []string
			total     int
			truncated bool
		}{
			{`{"limit":5}`, keys[:5], len(keys), true},
			{`{"limit":30}`, keys, len(keys), false},
			{`{"match":"host0.>"}`, host0, len(host0), false},
			{`{"match":"host0.>","limit":2}`, host0[:2], len(host0), true},
			{`{"match":"*.svc.12"}`, []string{"host5.svc.12"}, 1, false},
			{`{"match":"nobody.>"}`, []string{}, 0, false},
		}
		for _, tt := range tests {
			for range len(g.workers) {
				r := adminList(t, g.nc, tt.body)
				if got := listKeys(r); !slices.Equal(got, tt.keys) || r.Total != tt.total || r.Truncated != tt.truncated {
					t.Errorf("list %s: got %v total %d truncated %v; want %v total %d truncated %v",
						tt.body, got, r.Total, r.Truncated, tt.keys, tt.total, tt.truncated)
				}
			}
		}
	})

	t.Run("get", func(t *testing.T) {
		for _, k := range keys {
			if b, ok := adminGet(t, g.nc, k); !ok || b.Key != k || b.State != "running" {
				t.Errorf("get %s: got %+v, %v; want it running", k, b, ok)
			}
		}
		for range len(g.workers) {
			if b, ok := adminGet(t, g.nc, "nobody.here"); ok {
				t.Errorf("get nobody.here: got %+v; want 404", b)
			}
		}
	})

	t.Run("members", func(t *testing.T) {
		for range len(g.workers) {
			var r bus.MembersReply
			m := adminRequest(t, g.nc, "members", "", &r)
			wantMembers(t, m.Data, "ok", "partitions", "members")
			if r.Partitions != g.parts || len(r.Members) != len(g.workers) {
				t.Fatalf("members %s: want %d partitions over %d members", m.Data, g.parts, len(g.workers))
			}
			var all []int
			for i, mb := range r.Members {
				if mb.Name != fmt.Sprintf("w%d", i) || !slices.Equal(mb.Partitions, g.workers[i].Owned()) {
					t.Errorf("members %s: member %d: got %+v; want w%d with %v", m.Data, i, mb, i, g.workers[i].Owned())
				}
				all = append(all, mb.Partitions...)
			}
			slices.Sort(all)
			if want := seq(g.parts); !slices.Equal(all, want) {
				t.Errorf("members %s: partitions listed %v; want each of %v once", m.Data, all, want)
			}
		}
	})

	t.Run("quiesce", func(t *testing.T) {
		events := subscribe(t, g.nc, prefix+".quiesce.>")
		if n := adminQuiesce(t, g.nc, `{"match":"host0.>"}`); n != strings.Count(strings.Join(keys, " "), "host0.") {
			t.Errorf("quiesce host0.>: got %d", n)
		}
		var rest []string
		for _, k := range keys {
			if !strings.HasPrefix(k, "host0.") {
				rest = append(rest, k)
			}
		}
		if n := adminQuiesce(t, g.nc, `{"match":">"}`); n != len(rest) {
			t.Errorf("quiesce >: got %d; want %d (the running ones)", n, len(rest))
		}
		got := map[string]bool{}
		for len(got) < len(keys) {
			m, err := events.NextMsg(bound)
			if err != nil {
				t.Fatalf("events: got %d of %d: %v", len(got), len(keys), err)
			}
			key, _ := bus.MustSubjects(prefix).QuiesceKey(m.Subject)
			if got[key] {
				t.Errorf("second event for %s", key)
			}
			got[key] = true
		}
		for _, k := range keys {
			if s := state(t, g.nc, k); s != "draining" {
				t.Errorf("%s: got state %q after quiesce; want draining", k, s)
			}
		}
	})

	t.Run("forget", func(t *testing.T) {
		var r bus.ForgetReply
		m := adminRequest(t, g.nc, "forget", `{"match":">"}`, &r)
		wantMembers(t, m.Data, "ok", "forgotten")
		if r.Forgotten != len(keys) {
			t.Errorf("forget >: got %d; want %d", r.Forgotten, len(keys))
		}
		if r := adminList(t, g.nc, ""); r.Total != 0 {
			t.Errorf("list after forget: got %v", listKeys(r))
		}
	})
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

// partialReply is the members an incomplete reply adds.
type partialReply struct {
	Partial           bool     `json:"partial"`
	Missing           []string `json:"missing"`
	MissingPartitions []int    `json:"missing_partitions"`
}

// A member that stopped answering (it is still in the membership, as a
// frozen or just killed worker is until its timeout) leaves its
// partitions out: replies say partial and name it, and a get of one of
// its keys fails with 503 instead of a wrong 404.
func TestPeersMemberSilent(t *testing.T) {
	t.Parallel()
	g := startPeerGroup(t, 3, 6, 300*time.Millisecond)
	keys := g.track(t, 24)
	silent := g.workers[2]
	lost := silent.Owned()
	if err := silent.stop(bound); err != nil {
		t.Fatal(err)
	}
	var answered []string
	for _, k := range keys {
		if g.owner(k) != 2 {
			answered = append(answered, k)
		}
	}
	want := partialReply{Partial: true, Missing: []string{"w2"}, MissingPartitions: lost}

	for range 4 { // reaching either of the two that answer
		var r bus.ListReply
		var p partialReply
		m := adminRequest(t, g.nc, "list", "", &r)
		decodeOK(t, m, &p)
		if got := listKeys(r); !slices.Equal(got, answered) || r.Total != len(answered) {
			t.Errorf("list: got %v total %d; want %v (w2's keys missing)", got, r.Total, answered)
		}
		if !equalPartial(p, want) {
			t.Errorf("list %s: got %+v; want %+v", m.Data, p, want)
		}
	}

	for _, k := range keys {
		body, _ := json.Marshal(bus.GetRequest{Key: k})
		m := request(t, g.nc, prefix+".admin.get", string(body))
		code := m.Header.Get(micro.ErrorCodeHeader)
		switch {
		case g.owner(k) == 2 && (code != "503" || !strings.Contains(refusal(t, m), "answer incomplete")):
			t.Errorf("get %s (w2's): got %q %s; want 503, answer incomplete", k, code, m.Data)
		case g.owner(k) != 2 && code != "":
			t.Errorf("get %s: got %q %s; want it found", k, code, m.Data)
		}
	}

	var q bus.QuiesceReply
	var p partialReply
	m := adminRequest(t, g.nc, "quiesce", `{"match":">"}`, &q)
	decodeOK(t, m, &p)
	if q.Quiesced != len(answered) || !equalPartial(p, want) {
		t.Errorf("quiesce: got %s; want quiesced %d and %+v", m.Data, len(answered), want)
	}
	partial := uint64(0)
	for _, w := range g.workers[:2] {
		partial += w.Stats().AdminPartial
	}
	if want := uint64(4 + len(keys) - len(answered) + 1); partial != want {
		t.Errorf("admin_partial over the answering workers: got %d; want %d, one per incomplete reply", partial, want)
	}
}

func equalPartial(a, b partialReply) bool {
	return a.Partial == b.Partial && slices.Equal(a.Missing, b.Missing) && slices.Equal(a.MissingPartitions, b.MissingPartitions)
}
