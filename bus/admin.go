package bus

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/idle-worker/idle-worker/coordinator"
)

// addService starts the admin micro service and its endpoints.
func (w *Worker) addService() (micro.Service, error) {
	svc, err := micro.AddService(w.nc, micro.Config{
		Name:         ServiceName,
		Version:      w.cfg.Version,
		Description:  "Decides when backends are idle and asks their brokers to drain them.",
		StatsHandler: func(*micro.Endpoint) any { return w.Stats() },
	})
	if err != nil {
		return nil, fmt.Errorf("bus: admin service: %w", err)
	}
	g := svc.AddGroup(w.subj.AdminGroup())
	for name, h := range map[string]micro.HandlerFunc{
		"list": w.adminList, "quiesce": w.adminQuiesce, "get": w.adminGet, "forget": w.adminForget,
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
	// Gathered in slices, heartbeats handled between them (scan.go): the
	// total counts every match, the page keeps the first lr.Limit of them
	// in key order.
	reply := ListReply{OK: true, Backends: []BackendInfo{}}
	err = w.scanMatching(pat, func(b coordinator.Backend) {
		if reply.Total++; len(reply.Backends) < lr.Limit {
			reply.Backends = append(reply.Backends, info(b))
		}
	}, func(done bool) {
		if done {
			reply.Unacknowledged = w.coord.Unacknowledged()
		}
	})
	if err != nil {
		w.adminError(req, "503", -1, err)
		return
	}
	reply.Truncated = reply.Total > len(reply.Backends)
	w.adminReply(req, reply)
}

func (w *Worker) adminGet(req micro.Request) {
	key, err := ParseGetRequest(req.Data())
	if err != nil {
		w.adminError(req, "400", rejectBadRequest, err)
		return
	}
	var b coordinator.Backend
	var found bool
	if err := w.do(func() { b, found = w.coord.Get(key, w.now()) }); err != nil {
		w.adminError(req, "503", -1, err)
		return
	}
	if !found {
		w.adminError(req, "404", rejectUnknownBackend, unknownBackend(key))
		return
	}
	w.adminReply(req, GetReply{OK: true, Backend: info(b)})
}

func (w *Worker) adminQuiesce(req micro.Request) {
	pat, reason, err := ParseQuiesceRequest(req.Data())
	if err != nil {
		w.adminError(req, "400", rejectBadRequest, err)
		return
	}
	// In slices (scan.go): a pattern over a million backends never holds
	// the loop for long.
	n := 0
	_, err = w.forEachMatching(pat, func(key string, now time.Time) {
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
	if err != nil {
		w.adminError(req, "503", -1, err)
		return
	}
	w.adminReply(req, QuiesceReply{OK: true, Quiesced: n})
}

// adminForget stops tracking the backends matching a key or pattern, in any
// state, as if their brokers had reported them removed.
func (w *Worker) adminForget(req micro.Request) {
	pat, err := ParseForgetRequest(req.Data())
	if err != nil {
		w.adminError(req, "400", rejectBadRequest, err)
		return
	}
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
	if err != nil {
		w.adminError(req, "503", -1, err)
		return
	}
	w.adminReply(req, ForgetReply{OK: true, Forgotten: n})
}
