package bus

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/internal/lograte"
)

// DefaultPeerTimeout is WorkerConfig.PeerTimeout's default: how long an
// admin request waits for the other members' answers.
const DefaultPeerTimeout = time.Second

// Peers is what a worker knows of the other workers of its prefix (package
// member's Membership, adapted by cmd/idle-worker). With Peers, the admin
// service answers for every partition: the worker that receives a request
// answers for its own partitions and asks the other members for theirs on
// P.store.peer.<verb>. Its methods are called from the admin service's
// goroutines and must be safe for concurrent use.
type Peers interface {
	// Self returns this worker's name among the members.
	Self() string
	// Members returns the live members (not leaving) and the partitions
	// each reports owning; this worker may be among them.
	Members() []MemberInfo
}

// MemberInfo is one worker of the prefix and the partitions it owns: an
// entry of Peers.Members and of the P.admin.members reply.
type MemberInfo struct {
	// Name is the worker's name (IDLE_WORKER_NAME).
	Name string `json:"name"`
	// Partitions are the partitions it owns, ascending.
	Partitions []int `json:"partitions"`
}

// errPeerShutdown is a member's answer while it stops.
var errPeerShutdown = fmt.Errorf("%w: not answering for its partitions", ErrShuttingDown)

// newPeerReplyFilter returns the filter of the reply subjects of the other
// members' questions: a member asks from its connection's inbox (nats.go's
// _INBOX. unless the member's connection has a prefix of its own, which
// then is among the reply prefixes), never from this worker's own.
func newPeerReplyFilter(cfg WorkerConfig, replies replyFilter) (replyFilter, error) {
	prefixes := append([]string{"_INBOX."}, cfg.ReplyPrefixes...)
	if cfg.ReplyPrefixes == nil {
		prefixes = append(prefixes, DefaultReplyPrefixes...)
	}
	f, err := newReplyFilter(prefixes, cfg.Subjects)
	if err != nil {
		return replyFilter{}, fmt.Errorf("bus: peer reply prefixes: %w", err)
	}
	f.inbox = replies.inbox
	return f, nil
}

// subscribePeers subscribes to the peer verbs, one subscription each: the
// requests of one verb are answered one at a time, like an admin
// endpoint's. Nothing without Peers.
func (w *Worker) subscribePeers() error {
	if w.cfg.Peers == nil {
		return nil
	}
	for _, verb := range peerVerbs {
		sub, err := w.nc.Subscribe(w.subj.Store("peer."+verb), func(m *nats.Msg) { w.servePeer(verb, m) })
		if err != nil {
			return fmt.Errorf("bus: subscribe %s: %w", w.subj.Store("peer."+verb), err)
		}
		w.subsMu.Lock()
		w.peerSubs = append(w.peerSubs, sub)
		w.subsMu.Unlock()
	}
	return nil
}

// unsubscribePeers stops answering peer requests.
func (w *Worker) unsubscribePeers() {
	w.subsMu.Lock()
	subs := w.peerSubs
	w.peerSubs = nil
	w.subsMu.Unlock()
	for _, sub := range subs {
		if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			w.log.Debug("unsubscribe", "subject", sub.Subject, "error", err)
		}
	}
}

// servePeer answers another member's request for this worker's part of an
// admin request: from its own partitions only, never asking further.
func (w *Worker) servePeer(verb string, m *nats.Msg) {
	if m.Header.Get(hdrPeerFrom) == w.cfg.Peers.Self() {
		return // this worker's own question, answered locally
	}
	if !w.peerReplies.allow(m.Reply) {
		if err := w.do(func() { w.refuseReply(m.Reply) }); err != nil {
			w.stats.rejected[rejectBadReply].Add(1)
		}
		return
	}
	a, err := w.answerPeer(verb, m.Data)
	if errors.Is(err, ErrBadPayload) || errors.Is(err, ErrBadKey) {
		w.badPeerMessage(m.Subject, err)
	}
	if err != nil {
		a = peerAnswer{Error: err.Error()}
	}
	a.Name = w.cfg.Peers.Self()
	b := encodePeerAnswer(a)
	if int64(len(b)) > w.nc.MaxPayload() {
		b = encodePeerAnswer(peerAnswer{Name: a.Name, Error: fmt.Sprintf("bus: answer of %d bytes exceeds the server's max payload; narrow match or lower limit", len(b))})
	}
	w.publishReply(m.Reply, b)
}

// answerPeer parses a peer request of verb and answers it from this
// worker's own partitions.
func (w *Worker) answerPeer(verb string, body []byte) (peerAnswer, error) {
	var a peerAnswer
	var err error
	switch verb {
	case peerList:
		lr, pat, perr := ParseListRequest(body)
		if perr != nil {
			return a, perr
		}
		a, err = w.listLocal(lr, pat)
	case peerGet:
		key, perr := ParseGetRequest(body)
		if perr != nil {
			return a, perr
		}
		a, err = w.getLocal(key)
	case peerQuiesce:
		pat, reason, perr := ParseQuiesceRequest(body)
		if perr != nil {
			return a, perr
		}
		a, err = w.quiesceLocal(pat, reason)
	case peerForget:
		pat, perr := ParseForgetRequest(body)
		if perr != nil {
			return a, perr
		}
		a, err = w.forgetLocal(pat)
	}
	if errors.Is(err, ErrShuttingDown) {
		err = errPeerShutdown
	}
	return a, err
}

// badPeerMessage counts and logs (rate-limited, on the loop) a peer
// message that did not parse.
func (w *Worker) badPeerMessage(subject string, err error) {
	w.stats.rejected[rejectBadPeer].Add(1)
	_ = w.do(func() { w.rl.log(w.now(), rejectBadPeer, subject, err) })
}

// peerCall is one admin request put to the other members: their answers
// arrive on an inbox of its own until every member asked has answered or
// the deadline passes.
type peerCall struct {
	w        *Worker
	q        peerQuery
	sub      *nats.Subscription
	msgs     chan *nats.Msg
	deadline time.Time
	waiting  []string // members asked that have not answered, sorted
	answers  []peerAnswer
	failed   []string // members that answered with an error, or were not asked
}

// askPeers puts an admin request of q.verb with body to the other live
// members; it returns nil without Peers, and a call with no one to wait
// for when this worker is the only member.
func (w *Worker) askPeers(q peerQuery, body []byte) *peerCall {
	if w.cfg.Peers == nil {
		return nil
	}
	self := w.cfg.Peers.Self()
	c := &peerCall{w: w, q: q, deadline: time.Now().Add(w.cfg.PeerTimeout)}
	for _, m := range w.cfg.Peers.Members() {
		if m.Name != self && !slices.Contains(c.waiting, m.Name) {
			c.waiting = append(c.waiting, m.Name)
		}
	}
	slices.Sort(c.waiting)
	if len(c.waiting) == 0 {
		return c
	}
	inbox := w.nc.NewInbox()
	c.msgs = make(chan *nats.Msg, len(c.waiting)+16)
	sub, err := w.nc.ChanSubscribe(inbox, c.msgs)
	if err == nil {
		c.sub = sub
		msg := &nats.Msg{Subject: w.subj.Store("peer." + q.verb), Reply: inbox, Data: body, Header: nats.Header{}}
		msg.Header.Set(hdrPeerFrom, self)
		err = w.nc.PublishMsg(msg)
	}
	if err != nil {
		w.log.Warn("asking the other members", "verb", q.verb, "error", err)
		c.failed, c.waiting = c.waiting, nil
		c.stop()
	}
	return c
}

// wait collects answers until every member asked has answered, the
// deadline passes, the worker stops, or enough, when not nil, says the
// answers so far suffice. It returns the answers that carry no error.
func (c *peerCall) wait(enough func([]peerAnswer) bool) []peerAnswer {
	if c == nil || c.sub == nil {
		return nil
	}
	defer c.stop()
	timer := time.NewTimer(time.Until(c.deadline))
	defer timer.Stop()
	for len(c.waiting) > 0 && (enough == nil || !enough(c.answers)) {
		select {
		case m := <-c.msgs:
			c.take(m)
		case <-timer.C:
			return c.answers
		case <-c.w.stopping:
			return c.answers
		}
	}
	return c.answers
}

// take records one answer; one that does not parse is counted and
// dropped, a second one from the same member ignored.
func (c *peerCall) take(m *nats.Msg) {
	a, err := parsePeerAnswer(m.Data, c.q)
	if err == nil && a.Name == c.w.cfg.Peers.Self() {
		err = fmt.Errorf("%w: an answer in this worker's own name %q", ErrBadPayload, a.Name)
	}
	if err != nil {
		c.w.badPeerMessage(m.Subject, err)
		return
	}
	if slices.ContainsFunc(c.answers, func(b peerAnswer) bool { return b.Name == a.Name }) || slices.Contains(c.failed, a.Name) {
		return
	}
	c.waiting = slices.DeleteFunc(c.waiting, func(n string) bool { return n == a.Name })
	if a.Error != "" {
		c.w.log.Warn("a member could not answer", "verb", c.q.verb, "member", a.Name, "error", lograte.Clip(a.Error, 300))
		c.failed = append(c.failed, a.Name)
		return
	}
	c.answers = append(c.answers, a)
}

// cancel stops waiting for answers; nil is fine.
func (c *peerCall) cancel() {
	if c != nil {
		c.stop()
	}
}

// stop ends the subscription of the call's inbox.
func (c *peerCall) stop() {
	if c.sub != nil {
		_ = c.sub.Unsubscribe()
	}
}

// missing returns the members that did not answer, or could not, sorted.
func (c *peerCall) missing() []string {
	if c == nil {
		return nil
	}
	m := append(slices.Clone(c.waiting), c.failed...)
	slices.Sort(m)
	return m
}
