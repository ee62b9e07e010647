package integration

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
)

// Peer messages come over NATS: a bad answer from a member is counted and
// ignored (the member counts as missing), a bad question is answered with
// an error and counted, a question with a reply subject outside the
// inboxes is not answered, and a worker ignores its own questions.
func TestPeersHostileMessages(t *testing.T) {
	t.Parallel()
	g := startPeerGroup(t, 1, 4, 300*time.Millisecond)
	w := g.workers[0]
	keys := g.track(t, 5)
	s := bus.MustSubjects(prefix)

	// A ghost member, played by the test, answers each list question
	// with what answers says.
	g.peers.set("ghost", nil)
	ghost := connect(t, g.srv.ClientURL())
	answers := make(chan string, 1)
	questions := make(chan *nats.Msg, 16)
	if _, err := ghost.Subscribe(s.Store("peer.list"), func(m *nats.Msg) {
		questions <- m
		for _, a := range strings.Split(<-answers, "\n") {
			_ = ghost.Publish(m.Reply, []byte(a))
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := ghost.Flush(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		match   string
		answers string // one answer a line
		bad     uint64
		partial bool
	}{
		{name: "garbage", match: ">", answers: "not json\n{\"name\":\"ghost\",\"count\":-1}\n{\"name\":\"ghost\",\"partitions\":[9]}",
			bad: 3, partial: true},
		{name: "a key outside the match", match: "host0.>",
			answers: `{"name":"ghost","partitions":[],"count":1,"backends":[{"key":"other.key","state":"running"}]}`, bad: 1, partial: true},
		{name: "in the asking worker's name", match: ">", answers: `{"name":"w0","partitions":[0,1,2,3],"count":0}`, bad: 1, partial: true},
		{name: "an error", match: ">", answers: `{"name":"ghost","error":"bus: worker shutting down"}`, partial: true},
		{name: "good", match: ">", answers: `{"name":"ghost","partitions":[],"count":1,"backends":[{"key":"zz.ghost","state":"quiesced"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := w.Stats().Rejected["bad_peer_message"]
			answers <- tt.answers
			var r bus.ListReply
			var p partialReply
			m := adminRequest(t, g.nc, "list", `{"match":"`+tt.match+`"}`, &r)
			decodeOK(t, m, &p)
			q := <-questions
			if got := q.Header.Get("Idle-Peer-From"); got != "w0" {
				t.Errorf("question header Idle-Peer-From: got %q; want w0", got)
			}
			if p.Partial != tt.partial || tt.partial && !slices.Equal(p.Missing, []string{"ghost"}) || len(p.MissingPartitions) != 0 {
				t.Errorf("list %s: got %+v; want partial %v, ghost missing", m.Data, p, tt.partial)
			}
			if got := w.Stats().Rejected["bad_peer_message"] - before; got != tt.bad {
				t.Errorf("bad_peer_message: got %d more; want %d", got, tt.bad)
			}
			if tt.name == "good" && !slices.Contains(listKeys(r), "zz.ghost") {
				t.Errorf("list %s: want the ghost's backend merged in", m.Data)
			}
		})
	}
	g.peers.set("ghost", []int{}) // still a member; it answers no more questions below
	_ = ghost.Drain()

	// Questions to the worker, as another member would ask them.
	ask := func(t *testing.T, verb, body, reply, from string) *nats.Msg {
		t.Helper()
		inbox := g.nc.NewInbox()
		sub, err := g.nc.SubscribeSync(inbox)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = sub.Unsubscribe() }()
		if reply == "" {
			reply = inbox
		}
		msg := &nats.Msg{Subject: s.Store("peer." + verb), Reply: reply, Data: []byte(body), Header: nats.Header{}}
		msg.Header.Set("Idle-Peer-From", from)
		if err := g.nc.PublishMsg(msg); err != nil {
			t.Fatal(err)
		}
		m, err := sub.NextMsg(300 * time.Millisecond)
		if err != nil {
			return nil
		}
		return m
	}
	questionTests := []struct {
		name, verb, body, reply, from string
		wantErr                       string // in the answer; "" for a good answer
		noAnswer                      bool
		bad, badReply                 uint64
	}{
		{name: "list", verb: "list", body: `{"limit":2}`, from: "other"},
		{name: "get", verb: "get", body: `{"key":"` + keys[0] + `"}`, from: "other"},
		{name: "bad body", verb: "list", body: `{"limit":-1}`, from: "other", wantErr: "limit", bad: 1},
		{name: "bad key", verb: "get", body: `{"key":"a..b"}`, from: "other", wantErr: "empty token", bad: 1},
		{name: "bad json", verb: "forget", body: `{`, from: "other", wantErr: "forget request", bad: 1},
		{name: "reply outside the inboxes", verb: "list", body: ``, reply: prefix + ".quiesce.x", from: "other", noAnswer: true, badReply: 1},
		{name: "its own question", verb: "list", body: ``, from: "w0", noAnswer: true},
	}
	for _, tt := range questionTests {
		t.Run(tt.name, func(t *testing.T) {
			before := w.Stats()
			m := ask(t, tt.verb, tt.body, tt.reply, tt.from)
			after := w.Stats()
			if tt.noAnswer {
				if m != nil {
					t.Fatalf("got answer %s; want none", m.Data)
				}
			} else {
				if m == nil {
					t.Fatal("no answer")
				}
				var a map[string]any
				if err := json.Unmarshal(m.Data, &a); err != nil || a["name"] != "w0" {
					t.Fatalf("answer %s: want a JSON object named w0 (%v)", m.Data, err)
				}
				errText, _ := a["error"].(string)
				if tt.wantErr == "" && (errText != "" || a["partitions"] == nil) || tt.wantErr != "" && !strings.Contains(errText, tt.wantErr) {
					t.Errorf("answer %s: want error containing %q", m.Data, tt.wantErr)
				}
			}
			waitFor(t, bound, func() bool { return w.Stats().Rejected["bad_reply"]-before.Rejected["bad_reply"] >= tt.badReply })
			if got := after.Rejected["bad_peer_message"] - before.Rejected["bad_peer_message"]; got != tt.bad {
				t.Errorf("bad_peer_message: got %d more; want %d", got, tt.bad)
			}
		})
	}
}
