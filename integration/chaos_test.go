package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/internal/logtest"
	"github.com/idle-worker/idle-worker/store"
)

// The chaos tests run the idle-worker binary against a nats-server running
// as a separate process, so that either can be killed with SIGKILL and
// restarted, under the load of hundreds to a thousand backends. Each prints
// its counts (backends, drained, false drains, lost) and requires no false
// drain and no lost drain.

// chaosServerBin is the nats-server binary TestMain builds, from the
// version in go.mod, for the chaos tests.
var chaosServerBin struct {
	path   string
	output string
	err    error
}

// chaosBuildServer builds github.com/nats-io/nats-server/v2 into dir.
func chaosBuildServer(dir string) (string, string, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return "", "", fmt.Errorf("the go command is needed to build nats-server: %w", err)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		return "", "", err
	}
	out := filepath.Join(dir, "nats-server")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", out, "github.com/nats-io/nats-server/v2")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	b, err := cmd.CombinedOutput()
	if err != nil {
		return "", string(b), fmt.Errorf("go build nats-server: %w", err)
	}
	return out, string(b), nil
}

// chaosServer is a nats-server process with JetStream on 127.0.0.1, which a
// test can kill and start again on the same port and store directory.
type chaosServer struct {
	port int
	dir  string
	url  string
	log  *logtest.Buffer

	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// chaosStartServer starts a nats-server process and kills it when the test
// ends, printing its log if the test failed.
func chaosStartServer(t *testing.T) *chaosServer {
	t.Helper()
	if chaosServerBin.err != nil {
		t.Fatalf("building nats-server: %v\n%s", chaosServerBin.err, chaosServerBin.output)
	}
	s := &chaosServer{port: freePort(t), dir: t.TempDir(), log: new(logtest.Buffer)}
	s.url = fmt.Sprintf("nats://127.0.0.1:%d", s.port)
	t.Cleanup(func() {
		s.kill(t)
		if t.Failed() {
			t.Logf("nats-server log:\n%s", s.log)
		}
	})
	s.start(t)
	return s
}

// start runs the server and waits until its JetStream answers.
func (s *chaosServer) start(t *testing.T) {
	t.Helper()
	cmd := exec.Command(chaosServerBin.path, "-a", "127.0.0.1", "-p", strconv.Itoa(s.port), "-js", "-sd", s.dir)
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nats-server: %v", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	s.cmd, s.done = cmd, done
	waitFor(t, 30*time.Second, func() bool {
		select {
		case <-done:
			t.Fatalf("nats-server exited before accepting connections: %v", cmd.ProcessState)
		default:
		}
		nc, err := nats.Connect(s.url, nats.Timeout(250*time.Millisecond), nats.NoReconnect())
		if err != nil {
			return false
		}
		defer nc.Close()
		m, err := nc.Request("$JS.API.INFO", nil, 250*time.Millisecond)
		if err != nil {
			return false
		}
		var info struct {
			Error json.RawMessage `json:"error"`
		}
		return json.Unmarshal(m.Data, &info) == nil && info.Error == nil
	})
}

// kill kills the server with SIGKILL, if it runs, and waits for it to exit.
func (s *chaosServer) kill(t *testing.T) {
	t.Helper()
	if s.cmd == nil {
		return
	}
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Kill()
	select {
	case <-s.done:
	case <-time.After(bound):
		t.Errorf("nats-server (pid %d) still running %v after SIGKILL", s.cmd.Process.Pid, bound)
	}
}

// chaosKill kills an idle-worker process with SIGKILL and waits for it.
func chaosKill(t *testing.T, p *proc) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill idle-worker: %v", err)
	}
	select {
	case <-p.done:
	case <-time.After(bound):
		t.Fatalf("idle-worker (pid %d) still running %v after SIGKILL", p.cmd.Process.Pid, bound)
	}
}

// chaosConnect connects to url for as long as the test runs, reconnecting
// quickly after an outage. Publishes during an outage fail rather than
// being buffered, as a backend's heartbeats to a dead server would.
func chaosConnect(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.Name(t.Name()), nats.Timeout(bound), nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond), nats.ReconnectJitter(0, 0), nats.ReconnectBufSize(-1))
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// chaosLoad publishes heartbeats (empty bodies: the worker's default
// timeout) from its own connection, a tick every interval. It stops when
// told to or after max, whichever comes first.
type chaosLoad struct {
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once
	ticks atomic.Int64 // ticks completed
	sent  atomic.Int64
	fail  atomic.Int64 // publishes refused (the server was down)
}

// chaosHeartbeats starts a load: at tick n it heartbeats keys[i] when
// beat(i, n) says so.
func chaosHeartbeats(t *testing.T, url string, keys []string, interval, max time.Duration, beat func(i, tick int) bool) *chaosLoad {
	t.Helper()
	nc := chaosConnect(t, url)
	l := &chaosLoad{stop: make(chan struct{}), done: make(chan struct{})}
	subjects := make([]string, len(keys))
	for i, k := range keys {
		subjects[i] = prefix + ".activity." + k
	}
	go func() {
		defer close(l.done)
		tk := time.NewTicker(interval)
		defer tk.Stop()
		end := time.NewTimer(max)
		defer end.Stop()
		for tick := 0; ; tick++ {
			for i, subj := range subjects {
				if !beat(i, tick) {
					continue
				}
				if err := nc.Publish(subj, nil); err != nil {
					l.fail.Add(1)
				} else {
					l.sent.Add(1)
				}
			}
			_ = nc.Flush()
			l.ticks.Add(1)
			select {
			case <-l.stop:
				return
			case <-end.C:
				return
			case <-tk.C:
			}
		}
	}()
	t.Cleanup(l.halt)
	return l
}

// halt stops the load and waits for its goroutine.
func (l *chaosLoad) halt() {
	l.once.Do(func() { close(l.stop) })
	<-l.done
}

// chaosEvent is a quiesce event a subscriber received.
type chaosEvent struct {
	bus.QuiesceEvent
	arrived time.Time
	msgID   string // its Nats-Msg-Id
}

// chaosEvents records every quiesce event a core subscription receives.
type chaosEvents struct {
	mu  sync.Mutex
	evs []chaosEvent
	bad []string // events that broke the contract
}

// chaosCollect subscribes to every quiesce event on nc.
func chaosCollect(t *testing.T, nc *nats.Conn) *chaosEvents {
	t.Helper()
	c := &chaosEvents{}
	sub, err := nc.Subscribe(prefix+".quiesce.>", func(m *nats.Msg) {
		now := time.Now()
		ev, err := bus.ParseQuiesceEvent(m.Data)
		c.mu.Lock()
		defer c.mu.Unlock()
		switch {
		case err != nil:
			c.bad = append(c.bad, fmt.Sprintf("%s: %v", m.Data, err))
		case !msgIDMatches(m.Header.Get(bus.HeaderMsgID), ev.ID, ev.Attempt, viaStore(m)) || m.Subject != prefix+".quiesce."+ev.Key:
			c.bad = append(c.bad, fmt.Sprintf("%s on %s with Nats-Msg-Id %q", m.Data, m.Subject, m.Header.Get(bus.HeaderMsgID)))
		default:
			c.evs = append(c.evs, chaosEvent{QuiesceEvent: ev, arrived: now, msgID: m.Header.Get(bus.HeaderMsgID)})
		}
	})
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatalf("pending limits: %v", err)
	}
	if err := nc.FlushTimeout(bound); err != nil {
		t.Fatalf("flush: %v", err)
	}
	t.Cleanup(func() {
		_ = sub.Unsubscribe()
		if bad := c.contractBreaks(); len(bad) > 0 {
			t.Errorf("got %d quiesce events that break the contract, first: %s", len(bad), bad[0])
		}
	})
	return c
}

// byKey returns the events that arrived before until, by key.
func (c *chaosEvents) byKey(until time.Time) map[string][]chaosEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string][]chaosEvent{}
	for _, ev := range c.evs {
		if ev.arrived.Before(until) {
			out[ev.Key] = append(out[ev.Key], ev)
		}
	}
	return out
}

func (c *chaosEvents) contractBreaks() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.bad)
}

// chaosKeys returns n keys named group.0000, group.0001 and so on.
func chaosKeys(group string, n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("%s.%04d", group, i)
	}
	return keys
}

// chaosList asks the worker for at most limit of its backends matching
// match, or returns false when it does not answer (yet).
func chaosList(nc *nats.Conn, match string, limit int) (bus.ListReply, bool) {
	m, err := nc.Request(prefix+".admin.list", fmt.Appendf(nil, `{"match":%q,"limit":%d}`, match, limit), time.Second)
	if err != nil {
		return bus.ListReply{}, false
	}
	var r bus.ListReply
	if json.Unmarshal(m.Data, &r) != nil || !r.OK {
		return bus.ListReply{}, false
	}
	return r, true
}

// chaosStats returns the worker's counters from the micro stats endpoint.
func chaosStats(t *testing.T, nc *nats.Conn) bus.Stats {
	t.Helper()
	subj, _ := micro.ControlSubject(micro.StatsVerb, bus.ServiceName, "")
	var st micro.Stats
	if err := json.Unmarshal(request(t, nc, subj, "").Data, &st); err != nil || len(st.Endpoints) == 0 {
		t.Fatalf("micro stats: got %+v, %v; want endpoints", st, err)
	}
	var s bus.Stats
	if err := json.Unmarshal(st.Endpoints[0].Data, &s); err != nil {
		t.Fatalf("stats data %s: %v", st.Endpoints[0].Data, err)
	}
	return s
}

// chaosWaitStored waits until the store holds n backend records, so a
// crash cannot lose a registration.
func chaosWaitStored(t *testing.T, nc *nats.Conn, n int) {
	t.Helper()
	v := openStoreView(t, nc)
	got := 0
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if recs, ok := v.records(); ok {
			got = len(recs)
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("store: got %d records after 20s; want %d", got, n)
		}
	}
}

// chaosWait waits until cond holds, polling every 20 ms, and fails the test
// with what after timeout.
func chaosWait(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// chaosTally counts, over the events in evs, the quiet backends drained,
// the busy ones drained (false drains) and the quiet ones never drained
// (lost), and the backends whose events carry more than one id.
func chaosTally(evs map[string][]chaosEvent, quiet, busy []string) (drained, falseDrains, lost, idChanges int) {
	for _, k := range quiet {
		if len(evs[k]) == 0 {
			lost++
		} else {
			drained++
		}
	}
	for _, k := range busy {
		if len(evs[k]) > 0 {
			falseDrains++
		}
	}
	for _, e := range evs {
		for _, ev := range e[1:] {
			if ev.ID != e[0].ID {
				idChanges++
				break
			}
		}
	}
	return drained, falseDrains, lost, idChanges
}

// SIGKILL the worker while it drains 1,200 backends, half of them
// heartbeating, and restart it: every quiet backend is drained, those
// drained before the kill are re-sent the same id, and no heartbeating
// backend is drained.
func TestChaosWorkerKill(t *testing.T) {
	t.Parallel()
	const (
		n        = 1200
		timeout  = 2 * time.Second
		interval = timeout / 4
		retry    = time.Second
	)
	srv := chaosStartServer(t)
	env := map[string]string{
		"IDLE_NATS_URL": srv.url, "IDLE_PERSIST": "on", "IDLE_DEFAULT_TIMEOUT": timeout.String(),
		"IDLE_QUIESCE_RETRY": retry.String(), "IDLE_QUIESCE_RETRY_MAX": retry.String(),
	}
	w1 := startBinary(t, env)
	nc := chaosConnect(t, srv.url)
	waitServing(t, w1, nc)
	events := chaosCollect(t, nc)

	busy, quiet := chaosKeys("kill.busy", n/2), chaosKeys("kill.quiet", n/2)
	keys := append(slices.Clone(busy), quiet...)
	// Quiet backends stop in four groups, after tick 0 to 3, so their
	// deadlines spread over 1.5 s around the kill.
	load := chaosHeartbeats(t, srv.url, keys, interval, time.Minute, func(i, tick int) bool {
		return i < len(busy) || tick <= (i-len(busy))%4
	})
	chaosWait(t, 20*time.Second, "all backends tracked", func() bool {
		l, ok := chaosList(nc, ">", 1)
		return ok && l.Total == n
	})
	chaosWaitStored(t, nc, n)
	// Kill as soon as the first drains arrive, while the worker is still
	// publishing events (each stored with its record).
	chaosWait(t, 10*time.Second, "first quiesce event", func() bool { return len(events.byKey(time.Now())) > 0 })
	chaosKill(t, w1)
	killed := time.Now()
	// Stay down for more than a timeout: the quiet ones' deadlines pass
	// while no worker runs; the busy ones keep heartbeating into the void.
	<-time.After(timeout + interval)

	restart := time.Now()
	w2 := startBinary(t, env)
	waitServing(t, w2, nc)
	ready := time.Now()
	chaosWait(t, timeout+retry+20*time.Second, "a quiesce for every quiet backend after the restart", func() bool {
		after := events.byKey(time.Now())
		return !slices.ContainsFunc(quiet, func(k string) bool {
			return !slices.ContainsFunc(after[k], func(ev chaosEvent) bool { return ev.arrived.After(restart) })
		})
	})
	// Busy backends must stay undrained through a full timeout of grace
	// after the restart, and half a timeout more.
	windowEnd := ready.Add(timeout + timeout/2)
	<-time.After(time.Until(windowEnd))
	load.halt()
	stats := chaosStats(t, nc)

	all := events.byKey(windowEnd)
	drained, falseDrains, _, idChanges := chaosTally(all, quiet, busy)
	lost, beforeKill, resent, early := 0, 0, 0, 0
	for _, k := range quiet {
		var pre, post []chaosEvent
		for _, ev := range all[k] {
			if ev.arrived.Before(restart) {
				pre = append(pre, ev)
			} else {
				post = append(post, ev)
			}
		}
		switch {
		case len(post) == 0:
			lost++
		case len(pre) > 0:
			beforeKill++
			if post[0].ID == pre[0].ID {
				resent++
			}
		case post[0].arrived.Sub(restart) < timeout:
			// Running when the worker died: a full timeout of grace.
			early++
		}
	}
	t.Logf("backends %d (busy %d, quiet %d), drained %d (before the kill %d, re-sent with the same id %d), false drains %d, lost %d; restored %d, worker down %v, heartbeats sent %d",
		n, len(busy), len(quiet), drained, beforeKill, resent, falseDrains, lost, stats.Restored, restart.Sub(killed).Round(time.Millisecond), load.sent.Load())
	if lost != 0 || falseDrains != 0 {
		t.Errorf("got %d lost and %d false drains; want 0 and 0", lost, falseDrains)
	}
	if idChanges != 0 || resent != beforeKill {
		t.Errorf("got %d backends whose id changed, %d of %d drained before the kill re-sent the same id; want 0, all", idChanges, resent, beforeKill)
	}
	if early != 0 {
		t.Errorf("got %d quiet backends drained less than a timeout (%v) after the restart began; want 0 (grace)", early, timeout)
	}
	if beforeKill == 0 || beforeKill == len(quiet) {
		t.Errorf("got %d of %d quiet backends drained before the kill; want some but not all (the kill must fall inside the drain)", beforeKill, len(quiet))
	}
	if stats.Restored != n {
		t.Errorf("Stats.Restored after the restart: got %d; want %d", stats.Restored, n)
	}
}

// Kill the nats-server for three timeouts while 400 backends, half of them
// heartbeating, keep trying, and restart it on the same port and store: the
// worker makes no idle decision during the outage, extends every deadline
// by it, so no heartbeating backend is drained, and still drains the idle
// ones.
func TestChaosServerOutage(t *testing.T) {
	t.Parallel()
	const (
		n        = 400
		timeout  = 2 * time.Second
		interval = timeout / 4
		outage   = 3 * timeout
	)
	srv := chaosStartServer(t)
	w := startBinary(t, map[string]string{
		"IDLE_NATS_URL": srv.url, "IDLE_PERSIST": "on", "IDLE_DEFAULT_TIMEOUT": timeout.String(),
		"IDLE_NATS_PING_INTERVAL": "500ms", "IDLE_QUIESCE_RETRY": "0s",
	})
	nc := chaosConnect(t, srv.url)
	waitServing(t, w, nc)
	events := chaosCollect(t, nc)

	busy, quiet := chaosKeys("out.busy", n/2), chaosKeys("out.quiet", n/2)
	keys := append(slices.Clone(busy), quiet...)
	// Quiet backends beat at ticks 0 and 1 only: they are due 2.5 s after
	// the start, inside the outage.
	load := chaosHeartbeats(t, srv.url, keys, interval, time.Minute, func(i, tick int) bool {
		return i < len(busy) || tick <= 1
	})
	chaosWait(t, 20*time.Second, "all backends tracked", func() bool {
		l, ok := chaosList(nc, ">", 1)
		return ok && l.Total == n
	})
	chaosWait(t, 10*time.Second, "the quiet backends' last heartbeat", func() bool { return load.ticks.Load() >= 2 })
	if evs := events.byKey(time.Now()); len(evs) != 0 {
		t.Fatalf("got events for %d backends before the outage; want none", len(evs))
	}

	srv.kill(t)
	killed := time.Now()
	<-time.After(outage)
	restarting := time.Now()
	srv.start(t)
	back := time.Now()
	chaosWait(t, 20*time.Second, "a quiesce for every quiet backend after the outage", func() bool {
		evs := events.byKey(time.Now())
		return !slices.ContainsFunc(quiet, func(k string) bool { return len(evs[k]) == 0 })
	})
	// Busy backends must stay undrained for a timeout and a half after the
	// server is back: their own heartbeats have resumed by then.
	windowEnd := back.Add(timeout + timeout/2)
	<-time.After(time.Until(windowEnd))
	stats := chaosStats(t, nc)
	stored := chaosStored(t, nc, "")
	load.halt()

	all := events.byKey(windowEnd)
	// What a subscriber that reconnected late missed, the stream has.
	for key, evs := range stored {
		if len(all[key]) > 0 {
			continue
		}
		for _, ev := range evs {
			if ev.At.Before(windowEnd) {
				all[key] = append(all[key], chaosEvent{QuiesceEvent: ev.QuiesceEvent})
			}
		}
	}
	drained, falseDrains, lost, idChanges := chaosTally(all, quiet, busy)
	// An event emitted (at, the worker's wall clock) before the server was
	// started again is a decision taken during the outage.
	early := 0
	for _, k := range quiet {
		for _, ev := range all[k] {
			if ev.At.Before(restarting) {
				early++
			}
		}
	}
	t.Logf("backends %d (busy %d, quiet %d), drained %d, false drains %d, lost %d; outage %v, outages counted %d (%.1fs), idle_timeout quiesces counted %d, backends in the stream %d, heartbeats sent %d, refused %d",
		n, len(busy), len(quiet), drained, falseDrains, lost, back.Sub(killed).Round(time.Millisecond), stats.Outages, stats.OutageSeconds,
		stats.Quiesces["idle_timeout"], len(stored), load.sent.Load(), load.fail.Load())
	if lost != 0 || falseDrains != 0 {
		t.Errorf("got %d lost and %d false drains; want 0 and 0", lost, falseDrains)
	}
	if idChanges != 0 || early != 0 {
		t.Errorf("got %d backends with two ids and %d events emitted during the outage; want 0 and 0", idChanges, early)
	}
	if got := stats.Quiesces["idle_timeout"]; got != uint64(len(quiet)) {
		t.Errorf("worker's idle_timeout quiesces: got %d; want %d, one per quiet backend", got, len(quiet))
	}
	if stats.Outages < 1 || stats.OutageSeconds < outage.Seconds() {
		t.Errorf("worker's outages: got %d, %.1fs; want at least 1 of at least %v", stats.Outages, stats.OutageSeconds, outage)
	}
}

// chaosStoredEvent is an event read from the stream, with its Nats-Msg-Id.
type chaosStoredEvent struct {
	bus.QuiesceEvent
	msgID string
}

// chaosStored reads the events in the store's stream through an ordered
// consumer of its own, until it has caught up, and returns them by key, in
// the order read. With
// durable set, it reads through that existing durable consumer instead,
// acknowledging each event, as a broker does.
func chaosStored(t *testing.T, nc *nats.Conn, durable string) map[string][]chaosStoredEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	var cons jetstream.Consumer
	if durable != "" {
		cons, err = js.Consumer(ctx, store.DefaultStreamName, durable)
	} else {
		cons, err = js.OrderedConsumer(ctx, store.DefaultStreamName, jetstream.OrderedConsumerConfig{FilterSubjects: []string{prefix + ".quiesce.>"}})
	}
	if err != nil {
		t.Fatalf("consumer of %s: %v", store.DefaultStreamName, err)
	}
	out := map[string][]chaosStoredEvent{}
	// Read until the consumer has caught up (a message with nothing
	// pending after it: re-sends keep coming while drains go
	// unacknowledged), or has had nothing for a second.
	for deadline := time.Now().Add(20 * time.Second); ; {
		if time.Now().After(deadline) {
			t.Fatalf("consumer still delivering after 20s")
		}
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatalf("fetch: %v", err)
		}
		got, caughtUp := 0, false
		for m := range batch.Messages() {
			got++
			if md, err := m.Metadata(); err == nil && md.NumPending == 0 {
				caughtUp = true
			}
			ev, err := bus.ParseQuiesceEvent(m.Data())
			if err != nil {
				t.Fatalf("stored event %s: %v", m.Data(), err)
			}
			out[ev.Key] = append(out[ev.Key], chaosStoredEvent{QuiesceEvent: ev, msgID: m.Headers().Get(bus.HeaderMsgID)})
			if durable != "" {
				if err := m.Ack(); err != nil {
					t.Fatalf("ack: %v", err)
				}
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			t.Fatalf("fetch: %v", err)
		}
		if got == 0 || caughtUp {
			return out
		}
	}
}

// A broker with a durable consumer on the store's stream is offline while
// 200 of 400 backends are drained and re-sent their events, and while the
// worker is killed and restarted; when it comes back it reads every drain,
// each emission once: one message per Nats-Msg-Id, one first emission per
// id, one id per key, no id for two keys; and what it reads is what live
// subscribers saw, neither more nor less.
func TestChaosBrokerCatchUp(t *testing.T) {
	t.Parallel()
	const (
		n        = 400
		timeout  = time.Second
		interval = timeout / 4
		retry    = 500 * time.Millisecond
	)
	srv := chaosStartServer(t)
	env := map[string]string{
		"IDLE_NATS_URL": srv.url, "IDLE_PERSIST": "on", "IDLE_DEFAULT_TIMEOUT": timeout.String(),
		"IDLE_QUIESCE_RETRY": retry.String(), "IDLE_QUIESCE_RETRY_MAX": retry.String(),
	}
	w1 := startBinary(t, env)
	nc := chaosConnect(t, srv.url)
	waitServing(t, w1, nc)
	events := chaosCollect(t, nc)

	// The broker registers its durable consumer, then goes offline.
	func() {
		bnc := chaosConnect(t, srv.url)
		defer bnc.Close()
		js, err := jetstream.New(bnc)
		if err != nil {
			t.Fatalf("jetstream: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		defer cancel()
		if _, err := js.CreateOrUpdateConsumer(ctx, store.DefaultStreamName, jetstream.ConsumerConfig{
			Durable: "broker", AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
			FilterSubject: prefix + ".quiesce.>", AckWait: time.Minute,
		}); err != nil {
			t.Fatalf("create the broker's consumer: %v", err)
		}
	}()

	busy, quiet := chaosKeys("cu.busy", n/2), chaosKeys("cu.quiet", n/2)
	keys := append(slices.Clone(busy), quiet...)
	load := chaosHeartbeats(t, srv.url, keys, interval, time.Minute, func(i, tick int) bool {
		return i < len(busy) || tick == 0
	})
	chaosWait(t, 20*time.Second, "all backends tracked", func() bool {
		l, ok := chaosList(nc, ">", 1)
		return ok && l.Total == n
	})
	chaosWaitStored(t, nc, n)
	chaosWait(t, 10*time.Second, "first quiesce event", func() bool { return len(events.byKey(time.Now())) > 0 })
	chaosKill(t, w1)
	w2 := startBinary(t, env)
	waitServing(t, w2, nc)
	// Every quiet backend drained, and re-sent at least once.
	chaosWait(t, timeout+retry+20*time.Second, "every quiet backend re-sent its event", func() bool {
		l, ok := chaosList(nc, "cu.quiet.>", n)
		return ok && l.Total == len(quiet) && !slices.ContainsFunc(l.Backends, func(b bus.BackendInfo) bool {
			return b.State != "draining" || b.Attempts < 2
		})
	})

	// The broker comes back and catches up.
	bnc := chaosConnect(t, srv.url)
	seenBefore := events.byKey(time.Now())
	delivered, firsts := 0, 0
	byID := map[string][]string{} // id -> keys of its first emissions
	msgIDs := map[string]int{}    // Nats-Msg-Id -> messages stored
	stored := chaosStored(t, bnc, "broker")
	badIDs := 0
	for key, evs := range stored {
		for _, ev := range evs {
			delivered++
			msgIDs[ev.msgID]++
			if !msgIDMatches(ev.msgID, ev.ID, ev.Attempt, true) {
				badIDs++
			}
			if ev.Attempt == 1 {
				firsts++
				byID[ev.ID] = append(byID[ev.ID], key)
			}
		}
	}
	for _, k := range quiet {
		if len(stored[k]) > 0 {
			if _, err := bnc.Request(prefix+".state."+k, []byte(`{"state":"quiesced"}`), bound); err != nil {
				t.Fatalf("report %s quiesced: %v", k, err)
			}
		}
	}
	chaosWait(t, bound, "no unacknowledged drain", func() bool {
		l, ok := chaosList(nc, ">", 1)
		return ok && l.Unacknowledged == 0
	})
	load.halt()

	// Live subscribers saw every stored event (once it was stored) and
	// nothing else: what they saw before the broker read is stored, and
	// what the broker read reaches them.
	unstored, unseen := 0, 0
	for _, evs := range seenBefore {
		for _, ev := range evs {
			if msgIDs[ev.msgID] == 0 {
				unstored++
			}
		}
	}
	chaosWait(t, bound, "every stored event seen live", func() bool {
		live := map[string]bool{}
		for _, evs := range events.byKey(time.Now()) {
			for _, ev := range evs {
				live[ev.msgID] = true
			}
		}
		unseen = 0
		for id := range msgIDs {
			if !live[id] {
				unseen++
			}
		}
		return unseen == 0
	})

	all := map[string][]chaosEvent{}
	for key, evs := range stored {
		for _, ev := range evs {
			all[key] = append(all[key], chaosEvent{QuiesceEvent: ev.QuiesceEvent})
		}
	}
	drained, falseDrains, lost, idChanges := chaosTally(all, quiet, busy)
	shared, twice := 0, 0
	for _, ks := range byID {
		if len(ks) > 1 {
			shared++
		}
	}
	for _, n := range msgIDs {
		if n > 1 {
			twice++
		}
	}
	sent := 0
	for _, evs := range events.byKey(time.Now()) {
		sent += len(evs)
	}
	t.Logf("backends %d (busy %d, quiet %d), drained %d (distinct ids %d, first emissions delivered %d, delivered %d, events seen live %d), false drains %d, lost %d",
		n, len(busy), len(quiet), drained, len(byID), firsts, delivered, sent, falseDrains, lost)
	if lost != 0 || falseDrains != 0 {
		t.Errorf("got %d lost and %d false drains; want 0 and 0", lost, falseDrains)
	}
	if len(byID) != drained || firsts != len(byID) || shared != 0 || idChanges != 0 {
		t.Errorf("broker: got %d distinct ids for %d drained backends, %d first emissions, %d ids of two keys, %d keys with two ids; want %d ids, each first sent once, for one key each",
			len(byID), drained, firsts, shared, idChanges, drained)
	}
	if twice != 0 || badIDs != 0 {
		t.Errorf("broker: got %d Nats-Msg-Ids delivered more than once and %d not of their event; want 0 and 0", twice, badIDs)
	}
	if unstored != 0 || unseen != 0 {
		t.Errorf("got %d events seen live but not stored, %d stored but not seen live; want 0 and 0", unstored, unseen)
	}
	if delivered <= len(byID) {
		t.Errorf("events delivered: got %d for %d ids; want re-sends (the test must exercise them)", delivered, len(byID))
	}
}
