package bus

import (
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/idle-worker/idle-worker/internal/lograte"
)

// Metadata of the admin service, which says whom it serves: the subject
// prefix, and whether the worker keeps its backends in JetStream
// (metaStore "jetstream") or in memory only ("memory").
const (
	metaPrefix = "prefix"
	metaStore  = "store"
)

// Values of the metaStore metadata.
const (
	storeJetStream = "jetstream"
	storeMemory    = "memory"
)

// aloneWindow is how long a worker collects the answers of the other admin
// services at start, and aloneMax how many it reads at most.
const (
	aloneWindow = 500 * time.Millisecond
	aloneMax    = 1024
)

// storeMode is the admin service's metaStore metadata.
func (w *Worker) storeMode() string {
	if w.reg != nil {
		return storeJetStream
	}
	return storeMemory
}

// checkAlone asks every idle-worker admin service of the NATS system who
// it serves (a micro PING) and warns when coordination is missing: this
// worker keeps its backends in memory and another one serves its prefix,
// or another one serves its prefix with its backends in memory. Without
// JetStream there are no partitions, claims or fencing: every worker
// decides for every backend it hears, and brokers get an event from each.
// It runs once, after the worker is ready, off the loop.
func (w *Worker) checkAlone() {
	subject, err := micro.ControlSubject(micro.PingVerb, ServiceName, "")
	if err != nil {
		return
	}
	inbox := w.nc.NewInbox()
	msgs := make(chan *nats.Msg, 64)
	sub, err := w.nc.ChanSubscribe(inbox, msgs)
	if err != nil {
		w.log.Debug("asking who else serves the prefix", "error", err)
		return
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := w.nc.PublishRequest(subject, inbox, nil); err != nil {
		w.log.Debug("asking who else serves the prefix", "error", err)
		return
	}
	timer := time.NewTimer(aloneWindow)
	defer timer.Stop()
	var others, inMemory []string
collect:
	for n := 0; n < aloneMax; n++ {
		select {
		case m := <-msgs:
			var p micro.Ping
			if json.Unmarshal(m.Data, &p) != nil || p.Name != ServiceName || p.ID == w.svcID ||
				p.Metadata[metaPrefix] != w.subj.Prefix() {
				continue
			}
			others = append(others, lograte.Clip(p.ID, 64))
			if p.Metadata[metaStore] == storeMemory {
				inMemory = append(inMemory, lograte.Clip(p.ID, 64))
			}
		case <-timer.C:
			break collect
		case <-w.stopping:
			return
		}
	}
	switch {
	case w.reg == nil && len(others) > 0:
		w.log.Warn("another idle-worker serves this subject prefix, and this one runs without JetStream (IDLE_PERSIST=off, or no JetStream): there is no coordination, each worker decides for every backend and brokers get duplicate quiesce events; run one worker per prefix, or all of them with JetStream",
			"prefix", w.subj.Prefix(), "others", others, "self", w.svcID)
	case len(inMemory) > 0:
		w.log.Warn("an idle-worker without JetStream serves this subject prefix too: it decides for every backend on its own, uncoordinated with this one, and brokers get duplicate quiesce events",
			"prefix", w.subj.Prefix(), "others", inMemory, "self", w.svcID)
	default:
		w.log.Debug("no uncoordinated idle-worker serves this subject prefix", "prefix", w.subj.Prefix(), "others", len(others))
	}
}
