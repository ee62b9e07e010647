package integration

import (
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/internal/logtest"
	"github.com/idle-worker/idle-worker/internal/natstest"
	"github.com/idle-worker/idle-worker/store"
)

// secConfFile is the example least-privilege server configuration. The
// tests load exactly this file.
const secConfFile = "../deploy/nats-server.conf"

// secUser is a user of secConfFile: its name, the environment variable its
// password comes from, and its inbox prefix.
type secUser struct {
	name, passwordVar, inbox string
}

var (
	secWorker   = secUser{"idle-worker", "IDLE_WORKER_PASSWORD", ""}
	secBackend7 = secUser{"backend-dev-7", "BACKEND_DEV7_PASSWORD", "_INBOX_backend-dev-7"}
	secBackend8 = secUser{"backend-dev-8", "BACKEND_DEV8_PASSWORD", "_INBOX_backend-dev-8"}
	secBroker7  = secUser{"broker-dev-7", "BROKER_DEV7_PASSWORD", "_INBOX_broker-dev-7"}
	secBroker8  = secUser{"broker-dev-8", "BROKER_DEV8_PASSWORD", "_INBOX_broker-dev-8"}
	secOperator = secUser{"operator", "OPERATOR_PASSWORD", "_INBOX_operator"}
	secAllUsers = []secUser{secWorker, secBackend7, secBackend8, secBroker7, secBroker8, secOperator}
)

// secConfServer runs a nats-server from secConfFile (natstest.ConfigFile),
// listening on 127.0.0.1 and a random port, with its JetStream store in a
// temporary directory and monitoring off. Each user's password is random and set in the
// environment the file reads it from, so the test cannot run in parallel.
// It returns the server and the passwords by user name.
func secConfServer(t *testing.T) (*server.Server, map[string]string) {
	t.Helper()
	passwords := map[string]string{}
	for _, u := range secAllUsers {
		passwords[u.name] = nuid.Next()
		t.Setenv(u.passwordVar, passwords[u.name])
	}
	s := natstest.Start(t, natstest.ConfigFile(secConfFile))
	if !s.JetStreamEnabled() {
		t.Fatalf("%s: got JetStream off; want it on (the worker keeps its store there)", secConfFile)
	}
	return s.Server, passwords
}

// secConn is a connection as one user of secConfFile, with the
// asynchronous errors (permission violations) the server sent it.
type secConn struct {
	*nats.Conn
	user secUser
	errs chan error
}

// secDialAs connects to s as u, with its inbox prefix.
func secDialAs(t *testing.T, s *server.Server, u secUser, password string) *secConn {
	t.Helper()
	c := &secConn{user: u, errs: make(chan error, 64)}
	opts := []nats.Option{
		nats.UserInfo(u.name, password),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case c.errs <- err:
			default:
			}
		}),
	}
	if u.inbox != "" {
		opts = append(opts, nats.CustomInboxPrefix(u.inbox))
	}
	c.Conn = connect(t, s.ClientURL(), opts...)
	return c
}

// expectDenied waits, bounded, for the server to report a permissions
// violation about subject on c.
func (c *secConn) expectDenied(t *testing.T, subject string) {
	t.Helper()
	timer := time.NewTimer(bound)
	defer timer.Stop()
	for {
		select {
		case err := <-c.errs:
			if secIsPermission(err, subject) {
				return
			}
			t.Errorf("%s: got async error %v; want a permissions violation for %q", c.user.name, err, subject)
		case <-timer.C:
			t.Fatalf("%s: no permissions violation for %q within %v; want the server to deny it", c.user.name, subject, bound)
		}
	}
}

// expectNoErrors fails if the server reported any error to c.
func (c *secConn) expectNoErrors(t *testing.T) {
	t.Helper()
	if err := c.FlushTimeout(bound); err != nil {
		t.Fatalf("%s: flush: %v", c.user.name, err)
	}
	for {
		select {
		case err := <-c.errs:
			t.Errorf("%s: got async error %v; want none (the configuration must allow this flow)", c.user.name, err)
		default:
			return
		}
	}
}

// secSetup is a server from secConfFile with a worker (with its JetStream
// store) connected as idle-worker, and a connection for every other user.
type secSetup struct {
	srv                                  *server.Server
	passwords                            map[string]string
	worker                               *testWorker
	workerConn                           *secConn
	backend7, backend8, broker7, broker8 *secConn
	operator                             *secConn
	quiesce7                             *nats.Subscription // broker-dev-7 on idle.quiesce.dev-7.>
	workerLogs                           *logtest.Buffer
}

func newSecSetup(t *testing.T) *secSetup {
	t.Helper()
	s, pw := secConfServer(t)
	st := &secSetup{srv: s, passwords: pw, workerLogs: new(logtest.Buffer)}
	st.workerConn = secDialAs(t, s, secWorker, pw[secWorker.name])
	logger := slog.New(slog.NewTextHandler(st.workerLogs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("worker log:\n%s", st.workerLogs)
		}
	})
	// The same persistence set-up as idle-worker with IDLE_PERSIST=on.
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	if err := store.CheckJetStream(ctx, st.workerConn.Conn); err != nil {
		t.Fatalf("CheckJetStream as idle-worker: %v", err)
	}
	sto, err := store.Open(ctx, st.workerConn.Conn, bus.MustSubjects(prefix), store.Config{Logger: logger})
	if err != nil {
		t.Fatalf("store.Open as idle-worker: %v", err)
	}
	t.Cleanup(func() { relClose(t, "store", sto.Close) })
	st.worker = startWorkerOn(t, st.workerConn.Conn, bus.WorkerConfig{
		Policy: coordinator.Policy{DefaultIdleTimeout: longTimeout},
		Logger: logger,
		Store:  sto,
	})
	st.backend7 = secDialAs(t, s, secBackend7, pw[secBackend7.name])
	st.backend8 = secDialAs(t, s, secBackend8, pw[secBackend8.name])
	st.broker7 = secDialAs(t, s, secBroker7, pw[secBroker7.name])
	st.broker8 = secDialAs(t, s, secBroker8, pw[secBroker8.name])
	st.operator = secDialAs(t, s, secOperator, pw[secOperator.name])
	st.quiesce7 = subscribe(t, st.broker7.Conn, prefix+".quiesce.dev-7.>")
	return st
}

// The allowed flows of deploy/nats-server.conf work end to end: a backend
// heartbeats, its broker sees the quiesce live and through its durable
// consumer, reports the state, and an operator lists, gets, and discovers
// the service; no one is told of a permissions violation.
func TestSecConfAllowedFlow(t *testing.T) {
	st := newSecSetup(t)
	const timeout = 300 * time.Millisecond
	key := "dev-7.gopls.0%2E16%2E1.9f2c"

	// The broker's durable consumer, filtered to its instance.
	ctx, cancel := context.WithTimeout(context.Background(), 2*bound)
	defer cancel()
	js, err := jetstream.New(st.broker7.Conn)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, store.DefaultStreamName, jetstream.ConsumerConfig{
		Durable:       secBroker7.name,
		FilterSubject: prefix + ".quiesce.dev-7.>",
		AckPolicy:     jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatalf("broker-dev-7 creates its durable consumer: %v", err)
	}

	sent, _ := heartbeat(t, st.backend7.Conn, key, timeoutBody(timeout))
	ev := nextEvent(t, st.quiesce7, timeout+bound)
	checkTiming(t, sent, ev.arrived, timeout)
	if ev.Key != key {
		t.Errorf("broker-dev-7 got an event for %q; want %q", ev.Key, key)
	}

	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(bound))
	if err != nil {
		t.Fatalf("broker-dev-7 fetches from its consumer: %v", err)
	}
	var stored []jetstream.Msg
	for m := range batch.Messages() {
		stored = append(stored, m)
	}
	if err := batch.Error(); err != nil {
		t.Fatalf("broker-dev-7 fetch: %v", err)
	}
	if len(stored) != 1 || stored[0].Headers().Get(bus.HeaderMsgID) != ev.ID {
		t.Fatalf("broker-dev-7 consumer: got %d stored events; want the one with id %s", len(stored), ev.ID)
	}
	if err := stored[0].DoubleAck(ctx); err != nil {
		t.Errorf("broker-dev-7 acks the stored event: %v", err)
	}

	if err := bus.ReportState(ctx, st.broker7.Conn, bus.MustSubjects(prefix), key, bus.StateQuiesced); err != nil {
		t.Fatalf("broker-dev-7 reports quiesced: %v", err)
	}
	l := adminList(t, st.operator.Conn, "")
	if len(l.Backends) != 1 || l.Backends[0].Key != key || l.Backends[0].State != "quiesced" {
		t.Errorf("operator lists %+v; want %s quiesced", l.Backends, key)
	}
	if b, ok := adminGet(t, st.operator.Conn, key); !ok || b.State != "quiesced" {
		t.Errorf("operator gets %+v (found %v); want %s quiesced", b, ok, key)
	}
	// nats micro ls / info / stats, as the operator.
	for _, verb := range []micro.Verb{micro.PingVerb, micro.InfoVerb, micro.StatsVerb} {
		subj, err := micro.ControlSubject(verb, bus.ServiceName, "")
		if err != nil {
			t.Fatal(err)
		}
		var resp struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal(request(t, st.operator.Conn, subj, "").Data, &resp); err != nil || resp.Name != bus.ServiceName {
			t.Errorf("operator %s: got name %q, %v; want %s", subj, resp.Name, err, bus.ServiceName)
		}
	}
	// An operator reads the stream's state, read-only.
	ojs, err := jetstream.New(st.operator.Conn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ojs.Stream(ctx, store.DefaultStreamName); err != nil {
		t.Errorf("operator reads stream info: %v", err)
	}

	for _, c := range []*secConn{st.workerConn, st.backend7, st.broker7, st.operator} {
		c.expectNoErrors(t)
	}
	if s := st.worker.Stats(); s.Heartbeats != 1 || s.StateReports != 1 || s.Quiesces["idle_timeout"] != 1 || s.PublishErrors != 0 {
		t.Errorf("worker stats: got heartbeats %d state reports %d idle quiesces %d publish errors %d; want 1 1 1 0",
			s.Heartbeats, s.StateReports, s.Quiesces["idle_timeout"], s.PublishErrors)
	}
	if strings.Contains(strings.ToLower(st.workerLogs.String()), "permission") {
		t.Errorf("worker log mentions a permission problem; want none")
	}
}

// Each party of deploy/nats-server.conf is denied what is not its own: the
// server reports a permissions violation, and the message has no effect.
func TestSecConfDenials(t *testing.T) {
	st := newSecSetup(t)
	const key7, key8 = "dev-7.gopls.1.aa", "dev-8.gopls.1.bb"
	heartbeat(t, st.backend7.Conn, key7, "")
	heartbeat(t, st.backend8.Conn, key8, "")
	base := st.worker.Stats()
	v := openStoreView(t, st.operator.Conn) // read-only JetStream
	stored := v.counts()

	pub := func(c *secConn, subject, body string) func(t *testing.T) string {
		return func(t *testing.T) string {
			if err := c.Publish(subject, []byte(body)); err != nil {
				t.Fatalf("%s publish %s: %v", c.user.name, subject, err)
			}
			return subject
		}
	}
	// req sends a request and checks that no reply arrives: the request
	// never reached the worker.
	req := func(c *secConn, subject, body string) func(t *testing.T) string {
		return func(t *testing.T) string {
			inbox := c.NewRespInbox()
			replies := subscribe(t, c.Conn, inbox)
			if err := c.PublishRequest(subject, inbox, []byte(body)); err != nil {
				t.Fatalf("%s request %s: %v", c.user.name, subject, err)
			}
			c.expectDenied(t, subject)
			expectNoMsg(t, replies, 100*time.Millisecond)
			return ""
		}
	}
	sub := func(c *secConn, subject string) func(t *testing.T) string {
		return func(t *testing.T) string {
			s, err := c.SubscribeSync(subject)
			if err != nil {
				t.Fatalf("%s subscribe %s: %v", c.user.name, subject, err)
			}
			t.Cleanup(func() { _ = s.Unsubscribe() })
			return subject
		}
	}
	tests := []struct {
		name string
		conn *secConn
		do   func(t *testing.T) string // the subject to expect a violation for, or "" if do checked it
	}{
		{"backend forges a quiesce for its own instance", st.backend7, pub(st.backend7, prefix+".quiesce."+key7, `{"id":"forged"}`)},
		{"backend heartbeats as another instance", st.backend7, pub(st.backend7, prefix+".activity."+key8, "")},
		{"backend heartbeats a new key of another instance", st.backend7, pub(st.backend7, prefix+".activity.dev-8.evil.1.cc", "")},
		{"backend removes a backend of another instance", st.backend7, pub(st.backend7, prefix+".state."+key8, `{"state":"removed"}`)},
		{"other backend heartbeats as dev-7", st.backend8, pub(st.backend8, prefix+".activity."+key7, "")},
		{"backend lists backends", st.backend7, req(st.backend7, prefix+".admin.list", "")},
		{"backend forces a drain", st.backend7, req(st.backend7, prefix+".admin.quiesce", `{"match":">"}`)},
		{"backend gets a backend", st.backend7, req(st.backend7, prefix+".admin.get", `{"key":"`+key8+`"}`)},
		{"backend discovers the service", st.backend7, req(st.backend7, "$SRV.INFO.idle-worker", "")},
		{"backend reads quiesce events", st.backend7, sub(st.backend7, prefix+".quiesce.>")},
		{"backend reads heartbeats", st.backend7, sub(st.backend7, prefix+".activity.>")},
		{"backend snoops on every inbox", st.backend7, sub(st.backend7, "_INBOX.>")},
		{"backend snoops on the operator's inbox", st.backend7, sub(st.backend7, "_INBOX_operator.>")},
		{"broker lists backends", st.broker7, req(st.broker7, prefix+".admin.list", "")},
		{"broker forces a drain", st.broker7, req(st.broker7, prefix+".admin.quiesce", `{"match":"dev-8.>"}`)},
		{"broker forges a quiesce", st.broker7, pub(st.broker7, prefix+".quiesce."+key8, `{"id":"forged"}`)},
		{"broker reports for another instance", st.broker7, pub(st.broker7, prefix+".state."+key8, `{"state":"removed"}`)},
		{"broker reads another instance's events", st.broker7, sub(st.broker7, prefix+".quiesce.dev-8.>")},
		{"broker heartbeats", st.broker7, pub(st.broker7, prefix+".activity."+key7, "")},
		{"broker reads the stream directly", st.broker7, req(st.broker7, "$JS.API.STREAM.MSG.GET."+store.DefaultStreamName, `{"seq":1}`)},
		{"broker consumes every instance's events", st.broker7,
			req(st.broker7, "$JS.API.CONSUMER.CREATE."+store.DefaultStreamName+".broker-dev-7."+prefix+".quiesce.>", `{}`)},
		{"broker takes another broker's consumer", st.broker7,
			req(st.broker7, "$JS.API.CONSUMER.MSG.NEXT."+store.DefaultStreamName+".broker-dev-8", `{"batch":1}`)},
		{"broker writes the store's log", st.broker7, pub(st.broker7, storeLog(0), "\x01")},
		{"broker forges an event through the store", st.broker7, pub(st.broker7, storeEventIn(0, key8), `{"id":"forged"}`)},
		{"broker reads the store's records", st.broker7, req(st.broker7, "$JS.API.DIRECT.GET."+store.DefaultStreamName+"."+storeLog(0), "")},
		{"operator forges a quiesce", st.operator, pub(st.operator, prefix+".quiesce."+key7, `{"id":"forged"}`)},
		{"operator deletes the stream", st.operator, req(st.operator, "$JS.API.STREAM.DELETE."+store.DefaultStreamName, "")},
		{"operator writes the store's id", st.operator, pub(st.operator, storeMetaSubject, `{}`)},
		{"operator claims a partition", st.operator, pub(st.operator, storeBase+"own.0", `{}`)},
		{"operator purges the stream", st.operator, req(st.operator, "$JS.API.STREAM.PURGE."+store.DefaultStreamName, "")},
		{"backend forges an event through the store", st.backend7, pub(st.backend7, storeEventIn(0, key7), `{"id":"forged"}`)},
		{"backend writes the store's high-water mark", st.backend7, pub(st.backend7, storeHWMSubject, "1")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if subject := tt.do(t); subject != "" {
				tt.conn.expectDenied(t, subject)
			}
		})
	}

	// None of it reached the worker or a broker.
	for _, c := range []*secConn{st.backend7, st.backend8, st.broker7, st.operator, st.workerConn} {
		if err := c.FlushTimeout(bound); err != nil {
			t.Fatal(err)
		}
	}
	expectNoMsg(t, st.quiesce7, 100*time.Millisecond)
	if got := statsDiff(base, st.worker.Stats()); len(got) != 0 {
		t.Errorf("worker counters moved by %v after denied messages; want no change", got)
	}
	l := adminList(t, st.operator.Conn, "")
	if got := listKeys(l); strings.Join(got, ",") != key7+","+key8 {
		t.Errorf("operator lists %v; want exactly %s and %s, running", got, key7, key8)
	}
	for _, b := range l.Backends {
		if b.State != "running" {
			t.Errorf("backend %s: got state %s; want running (no denied report or drain took effect)", b.Key, b.State)
		}
	}
	if got := v.counts(); !maps.Equal(got, stored) {
		t.Errorf("stream messages by subject after the denied messages: got %v; want them unchanged, %v", got, stored)
	}
	st.workerConn.expectNoErrors(t)
}

// Nobody gets in without a user of the file, or with a wrong password.
func TestSecConfRefusesStrangers(t *testing.T) {
	s, pw := secConfServer(t)
	tests := []struct {
		name string
		opts []nats.Option
	}{
		{"anonymous", nil},
		{"wrong password", []nats.Option{nats.UserInfo(secWorker.name, pw[secWorker.name]+"x")}},
		{"another user's password", []nats.Option{nats.UserInfo(secWorker.name, pw[secOperator.name])}},
		{"unknown user", []nats.Option{nats.UserInfo("mallory", pw[secOperator.name])}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nc, err := nats.Connect(s.ClientURL(), append(tt.opts, nats.Timeout(bound), nats.NoReconnect())...)
			if err == nil {
				nc.Close()
				t.Fatalf("connect: got nil; want an authorization violation")
			}
			if !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
				t.Errorf("connect: got %v; want an authorization violation", err)
			}
		})
	}
}

// The idle-worker binary runs as the idle-worker user of the file, with its
// JetStream persistence required, and serves operators.
func TestSecConfBinary(t *testing.T) {
	s, pw := secConfServer(t)
	env := map[string]string{
		"IDLE_NATS_URL":      s.ClientURL(),
		"IDLE_NATS_USER":     secWorker.name,
		"IDLE_NATS_PASSWORD": pw[secWorker.name],
		"IDLE_PERSIST":       "on",
		"IDLE_HTTP_ADDR":     "",
		"IDLE_LOG_LEVEL":     "debug",
	}
	op := secDialAs(t, s, secOperator, pw[secOperator.name])
	b7 := secDialAs(t, s, secBackend7, pw[secBackend7.name])
	// The second run finds the stream in place: it updates it and restores
	// the backend.
	for run := 1; run <= 2; run++ {
		p := startBinary(t, env)
		waitServing(t, p, op.Conn)
		if run == 1 {
			heartbeat(t, b7.Conn, "dev-7.bin.1.aa", "")
		}
		if l := adminList(t, op.Conn, ""); len(l.Backends) != 1 {
			t.Errorf("run %d: operator lists %d backends; want 1", run, len(l.Backends))
		}
		p.signal(t, syscall.SIGTERM)
		if code := p.exitCode(t, 10*time.Second); code != 0 {
			t.Errorf("run %d: exit status after SIGTERM: got %d; want 0", run, code)
		}
		stderr := p.stderr.String()
		if !strings.Contains(stderr, "persistence on") {
			t.Errorf("run %d: log: want \"persistence on\"; got:\n%s", run, stderr)
		}
		if run == 2 && !strings.Contains(stderr, "restored=1") {
			t.Errorf("run %d: log: want restored=1; got:\n%s", run, stderr)
		}
		if strings.Contains(strings.ToLower(stderr), "permission") {
			t.Errorf("run %d: log mentions a permission problem; want none:\n%s", run, stderr)
		}
		if strings.Contains(stderr, pw[secWorker.name]) {
			t.Errorf("run %d: log leaks the worker's password", run)
		}
	}
	op.expectNoErrors(t)
	b7.expectNoErrors(t)
}
