package bus

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/idle-worker/idle-worker/coordinator"
)

// addService starts the admin micro service and its endpoints. With Peers,
// list, get, quiesce and forget answer for every partition of the prefix:
// the worker answers for its own partitions and gathers the other members'
// answers (peer.go); without, it answers from its own backends.
func (w *Worker) addService() (micro.Service, error) {
	svc, err := micro.AddService(w.nc, micro.Config{
		Name:         ServiceName,
		Version:      w.cfg.Version,
		Description:  "Decides when backends are idle and asks their brokers to drain them.",
		StatsHandler: func(*micro.Endpoint) any { return w.Stats() },
		Metadata:     map[string]string{metaPrefix: w.subj.Prefix(), metaStore: w.storeMode()},
	})
	if err != nil {
		return nil, fmt.Errorf("bus: admin service: %w", err)
	}
	g := svc.AddGroup(w.subj.AdminGroup())
	w.svcID = svc.Info().ID
	for name, h := range map[string]micro.HandlerFunc{
		"list": w.adminList, "quiesce": w.adminQuiesce, "get": w.adminGet, "forget": w.adminForget,
		"members": w.adminMembers,
	} {
		if err := g.AddEndpoint(name, h); err != nil {
			_ = svc.Stop()
			return nil, fmt.Errorf("bus: admin endpoint %s: %w", name, err)
		}
	}
	return svc, nil
}

// do runs f on the loop goroutine and waits for it.
func (w *Worker) do(f func()) error {
	done := make(chan struct{})
	select {
	case w.calls <- func() { f(); close(done) }:
		<-done
		return nil
	case <-w.stopping:
		return ErrShuttingDown
	}
}

// adminError answers req with an error, counting it under r (none when r is
// negative).
func (w *Worker) adminError(req micro.Request, code string, r rejectReason, err error) {
	if r >= 0 {
		w.stats.rejected[r].Add(1)
	}
	if !w.adminMayReply(req) {
		return
	}
	if rerr := req.Error(code, err.Error(), errorReply(err)); rerr != nil {
		w.log.Warn("admin reply", "error", rerr)
	}
}

// adminMayReply reports whether req's reply subject is an allowed inbox; a
// refused one is counted and logged on the loop, like a data message's.
func (w *Worker) adminMayReply(req micro.Request) bool {
	if w.replies.allow(req.Reply()) {
		return true
	}
	if err := w.do(func() { w.refuseReply(req.Reply()) }); err != nil {
		w.stats.rejected[rejectBadReply].Add(1)
	}
	return false
}

// adminReply answers req with v as JSON.
func (w *Worker) adminReply(req micro.Request, v any) {
	b, err := json.Marshal(v)
	if err == nil && int64(len(b)) > w.nc.MaxPayload() {
		err = fmt.Errorf("bus: reply of %d bytes exceeds the server's max payload; narrow match or lower limit", len(b))
	}
	if err != nil {
		w.adminError(req, "500", -1, err)
		return
	}
	if !w.adminMayReply(req) {
		return
	}
	if rerr := req.Respond(b); rerr != nil {
		w.log.Warn("admin reply", "error", rerr)
	}
}

func info(b coordinator.Backend) BackendInfo {
	return BackendInfo{Key: b.Key, State: b.State.String(), IdleForMS: b.IdleFor.Milliseconds(),
		IdleTimeoutMS: b.IdleTimeout.Milliseconds(), Attempts: b.Attempts}
}

func (w *Worker) adminList(req micro.Request) {
	lr, pat, err := ParseListRequest(req.Data())
	if err != nil {
		w.adminError(req, "400", rejectBadRequest, err)
		return
	}
	call := w.askPeers(peerQuery{verb: peerList, partitions: w.partitionCount(), limit: lr.Limit, pat: pat}, req.Data())
	local, err := w.listLocal(lr, pat)
	if err != nil {
		call.cancel()
		w.adminError(req, "503", -1, err)
		return
	}
	answers := append(call.wait(nil), local)
	reply := mergeList(lr.Limit, answers)
	reply.Partial, reply.Missing, reply.MissingPartitions = w.gaps(call, answers)
	w.adminReply(req, reply)
}

// listLocal lists this worker's own backends that match pat: the first
// lr.Limit in key order, and how many match.
func (w *Worker) listLocal(lr ListRequest, pat Pattern) (peerAnswer, error) {
	_, owned := w.partitionsOwned()
	a := peerAnswer{Partitions: owned}
	// Gathered in slices, heartbeats handled between them (scan.go): the
	// count covers every match, the page keeps the first lr.Limit of them
	// in key order.
	err := w.scanMatching(pat, func(b coordinator.Backend) {
		if a.Count++; len(a.Backends) < lr.Limit {
			a.Backends = append(a.Backends, info(b))
		}
	}, func(done bool) {
		if done {
			a.Unacknowledged = w.coord.Unacknowledged()
		}
	})
	return a, err
}

func (w *Worker) adminGet(req micro.Request) {
	key, err := ParseGetRequest(req.Data())
	if err != nil {
		w.adminError(req, "400", rejectBadRequest, err)
		return
	}
	n, owned := w.partitionsOwned()
	p := PartitionOf(key, n)
	var call *peerCall
	if _, mine := slices.BinarySearch(owned, p); !mine {
		// Its owner answers; this worker holds nothing of p.
		call = w.askPeers(peerQuery{verb: peerGet, partitions: n, key: key}, req.Data())
	}
	local, err := w.getLocal(key)
	if err != nil {
		call.cancel()
		w.adminError(req, "503", -1, err)
		return
	}
	answers := append(call.wait(func(as []peerAnswer) bool { return ownerAnswered(as, p) }), local)
	if b, ok := found(answers); ok {
		w.adminReply(req, GetReply{OK: true, Backend: b})
		return
	}
	if w.cfg.Peers != nil && !ownerAnswered(answers, p) {
		w.stats.adminPartial.Add(1)
		err := fmt.Errorf("%w: %q is in partition %d, and no member that answered owns it (no answer in time from %v)",
			ErrIncomplete, key, p, call.missing())
		w.adminError(req, "503", -1, err)
		return
	}
	w.adminError(req, "404", rejectUnknownBackend, unknownBackend(key))
}

// ownerAnswered reports whether an answer covers partition p.
func ownerAnswered(answers []peerAnswer, p int) bool {
	return slices.ContainsFunc(answers, func(a peerAnswer) bool {
		_, ok := slices.BinarySearch(a.Partitions, p)
		return ok
	})
}

// getLocal looks key up among this worker's own backends.
func (w *Worker) getLocal(key string) (peerAnswer, error) {
	_, owned := w.partitionsOwned()
	a := peerAnswer{Partitions: owned}
	var b coordinator.Backend
	var ok bool
	if err := w.do(func() { b, ok = w.coord.Get(key, w.now()) }); err != nil {
		return a, err
	}
	if ok {
		a.Count, a.Backends = 1, []BackendInfo{info(b)}
	}
	return a, nil
}

func (w *Worker) adminQuiesce(req micro.Request) {
	pat, reason, err := ParseQuiesceRequest(req.Data())
	if err != nil {
		w.adminError(req, "400", rejectBadRequest, err)
		return
	}
	call := w.askPeers(peerQuery{verb: peerQuiesce, partitions: w.partitionCount()}, req.Data())
	local, err := w.quiesceLocal(pat, reason)
	answers := append(call.wait(nil), local)
	if err != nil {
		w.adminError(req, "503", -1, err)
		return
	}
	reply := QuiesceReply{OK: true, Quiesced: sumCounts(answers)}
	reply.Partial, reply.Missing, reply.MissingPartitions = w.gaps(call, answers)
	w.adminReply(req, reply)
}

// quiesceLocal drains this worker's own running backends that match pat.
func (w *Worker) quiesceLocal(pat Pattern, reason coordinator.Reason) (peerAnswer, error) {
	_, owned := w.partitionsOwned()
	// In slices (scan.go): a pattern over a million backends never holds
	// the loop for long.
	n := 0
	_, err := w.forEachMatching(pat, func(key string, now time.Time) {
		if w.coord.Force(key, now, reason) {
			n++
		}
	})
	if err != nil && n > 0 {
		w.log.Warn("forced quiesce cut short by shutdown", "match", pat.String(), "reason", reason.String(), "quiesced", n)
	}
	if err == nil && n > 0 {
		err = w.do(func() {
			w.log.Info("forced quiesce", "match", pat.String(), "reason", reason.String(), "quiesced", n)
			// Publish what the budget and a batch allow before replying;
			// the rest follows in order.
			w.fire()
		})
	}
	return peerAnswer{Partitions: owned, Count: n}, err
}

// adminForget stops tracking the backends matching a key or pattern, in any
// state, as if their brokers had reported them removed.
func (w *Worker) adminForget(req micro.Request) {
	pat, err := ParseForgetRequest(req.Data())
	if err != nil {
		w.adminError(req, "400", rejectBadRequest, err)
		return
	}
	call := w.askPeers(peerQuery{verb: peerForget, partitions: w.partitionCount()}, req.Data())
	local, err := w.forgetLocal(pat)
	answers := append(call.wait(nil), local)
	if err != nil {
		w.adminError(req, "503", -1, err)
		return
	}
	reply := ForgetReply{OK: true, Forgotten: sumCounts(answers)}
	reply.Partial, reply.Missing, reply.MissingPartitions = w.gaps(call, answers)
	w.adminReply(req, reply)
}

// forgetLocal forgets this worker's own backends that match pat.
func (w *Worker) forgetLocal(pat Pattern) (peerAnswer, error) {
	_, owned := w.partitionsOwned()
	n, err := w.forEachMatching(pat, func(key string, _ time.Time) {
		w.coord.Remove(key)
		if w.reg != nil {
			w.reg.Delete(key)
		}
		w.stats.forgotten.Add(1)
	})
	if n > 0 {
		w.log.Info("forgot backends", "match", pat.String(), "forgotten", n)
	}
	return peerAnswer{Partitions: owned, Count: n}, err
}

// gaps says what a merged answer lacks: the members that did not answer
// in time (or could not), and the partitions no answer covered (their
// owner did not answer, or none owns them during a hand-over). partial is
// true when either is not empty. Nothing without Peers.
func (w *Worker) gaps(call *peerCall, answers []peerAnswer) (partial bool, missing []string, parts []int) {
	if w.cfg.Peers == nil {
		return false, nil, nil
	}
	missing, parts = call.missing(), uncovered(w.partitionCount(), answers)
	partial = len(missing) > 0 || len(parts) > 0
	if partial {
		w.stats.adminPartial.Add(1)
		w.log.Warn("admin answer incomplete", "missing_members", missing, "missing_partitions", len(parts))
	}
	return partial, missing, parts
}

// partitionCount is the prefix's partition count; 1 without a store (one
// partition, every key).
func (w *Worker) partitionCount() int {
	if n := int(w.stats.partitions.Load()); n > 0 {
		return n
	}
	return 1
}

// partitionsOwned returns the partition count and the partitions the
// worker decides for, ascending: without a store, the one partition.
func (w *Worker) partitionsOwned() (n int, owned []int) {
	if w.reg == nil {
		return 1, []int{0}
	}
	owned = w.Owned()
	if owned == nil {
		owned = []int{}
	}
	return w.partitionCount(), owned
}

// adminMembers answers P.admin.members: the members of the prefix and the
// partitions each owns, as the membership reports them, with this worker's
// own partitions as it holds them. Without Peers, this worker alone, named
// by its admin service's id. The body is ignored.
func (w *Worker) adminMembers(req micro.Request) {
	n, owned := w.partitionsOwned()
	self := MemberInfo{Name: w.svcID, Partitions: owned}
	members := []MemberInfo{}
	if w.cfg.Peers != nil {
		self.Name = w.cfg.Peers.Self()
		for _, m := range w.cfg.Peers.Members() {
			if m.Name != self.Name {
				m.Partitions = slices.Clone(m.Partitions)
				if m.Partitions == nil {
					m.Partitions = []int{}
				}
				members = append(members, m)
			}
		}
	}
	members = append(members, self)
	slices.SortFunc(members, func(a, b MemberInfo) int { return strings.Compare(a.Name, b.Name) })
	w.adminReply(req, MembersReply{OK: true, Partitions: n, Members: members})
}
