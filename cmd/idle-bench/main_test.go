package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/idle-worker/idle-worker/bus"
)

func TestPercentile(t *testing.T) {
	ten := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i + 1)
	}
	for _, tt := range []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one value", []time.Duration{7}, 99, 7},
		{"median of ten", ten, 50, 5},
		{"p99 of ten is the max", ten, 99, 10},
		{"p100 is the max", ten, 100, 10},
		{"p0 is the min", ten, 0, 1},
		{"p99 of a hundred", hundred, 99, 99},
		{"p99.5 of a hundred rounds up", hundred, 99.5, 100},
		{"p1 of a hundred", hundred, 1, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("percentile(%v, %v) = %v; want %v", tt.sorted, tt.p, got, tt.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	s := summarize([]time.Duration{3 * time.Millisecond, -time.Millisecond, time.Millisecond, 2 * time.Millisecond})
	want := latencySummary{Count: 4, Early: 1, MinMS: -1, P50MS: 1, P99MS: 3, MaxMS: 3}
	if s != want {
		t.Errorf("got %+v; want %+v", s, want)
	}
}

func TestCeilTo(t *testing.T) {
	for _, tt := range []struct {
		d, unit, want time.Duration
	}{
		{0, time.Millisecond, 0},
		{time.Millisecond, time.Millisecond, time.Millisecond},
		{time.Millisecond + 1, time.Millisecond, 2 * time.Millisecond},
		{1500 * time.Millisecond, time.Second, 2 * time.Second},
		{-1500 * time.Microsecond, time.Millisecond, -time.Millisecond},
	} {
		if got := ceilTo(tt.d, tt.unit); got != tt.want {
			t.Errorf("ceilTo(%v, %v) = %v; want %v", tt.d, tt.unit, got, tt.want)
		}
	}
}

func TestKeyIndex(t *testing.T) {
	for _, tt := range []struct {
		key    string
		want   int
		wantOK bool
	}{
		{"tl.0", 0, true},
		{"tl.99999", 99999, true},
		{"tl.", 0, false},
		{"tx.1", 0, false},
		{"tl.1a", 0, false},
		{"tl.-1", 0, false},
		{"tl.1234567890", 0, false},
	} {
		got, ok := keyIndex(tt.key, "tl.")
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("keyIndex(%q) = %d, %v; want %d, %v", tt.key, got, ok, tt.want, tt.wantOK)
		}
		if gotB, okB := keyIndex([]byte(tt.key), "tl."); gotB != got || okB != ok {
			t.Errorf("keyIndex([]byte(%q)) = %d, %v; want %d, %v as for the string", tt.key, gotB, okB, got, ok)
		}
	}
}

func TestLastNumber(t *testing.T) {
	for _, tt := range []struct {
		subject string
		want    int
		wantOK  bool
	}{
		{"idle.quiesce.adm-7.gopls.p0.5007", 5007, true},
		{"42", 42, true},
		{"idle.quiesce.x.", 0, false},
		{"idle.quiesce.x.1a", 0, false},
		{"idle.quiesce.p0", 0, false},
	} {
		got, ok := lastNumber([]byte(tt.subject))
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("lastNumber(%q) = %d, %v; want %d, %v", tt.subject, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestAdminKeyPools(t *testing.T) {
	pat, err := bus.ParsePattern(adminQuiesceMatch)
	if err != nil {
		t.Fatal(err)
	}
	const n = 1_000_000
	matched, perInstance := 0, map[int]int{}
	for i := range n {
		if pat.Match(adminKey(i)) {
			matched++
			perInstance[i%1000]++
			if adminPool(i) != 0 {
				t.Fatalf("%q matches %q, of pool %d", adminQuiesceMatch, adminKey(i), adminPool(i))
			}
		}
	}
	if matched != n/adminPools || len(perInstance) != 1000 {
		t.Errorf("%q matches %d keys of %d instances; want %d of 1000", adminQuiesceMatch, matched, len(perInstance), n/adminPools)
	}
}

func TestArrivalSpread(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms ...int) []time.Time {
		var ts []time.Time
		for _, m := range ms {
			ts = append(ts, t0.Add(time.Duration(m)*time.Millisecond))
		}
		return ts
	}
	for _, tt := range []struct {
		name     string
		arrived  []time.Time
		spreadMS float64
		peak     int
	}{
		{"none", nil, 0, 0},
		{"one", at(5), 0, 1},
		{"unsorted, within a second", at(900, 0, 500), 900, 3},
		{"a second apart is two windows", at(0, 1000), 1000, 1},
		{"a dense second later", at(0, 1500, 1600, 1700, 2499), 2499, 4},
	} {
		t.Run(tt.name, func(t *testing.T) {
			spread, peak := arrivalSpread(tt.arrived)
			if spread != tt.spreadMS || peak != tt.peak {
				t.Errorf("arrivalSpread = %v ms, peak %d; want %v ms, %d", spread, peak, tt.spreadMS, tt.peak)
			}
		})
	}
}

func TestParseMsgLine(t *testing.T) {
	for _, tt := range []struct {
		line    string
		subject string
		n       int
		ok      bool
	}{
		{"MSG a.b 1 5\r\n", "a.b", 5, true},
		{"MSG a.b 1 _INBOX.x 12\r\n", "a.b", 12, true},
		{"HMSG idle.quiesce.k 1 40 200\r\n", "idle.quiesce.k", 200, true},
		{"MSG a.b 1\r\n", "", 0, false},
		{"MSG a.b 1 x\r\n", "", 0, false},
		{"MSG\r\n", "", 0, false},
	} {
		subject, n, ok := parseMsgLine([]byte(tt.line))
		if string(subject) != tt.subject || n != tt.n || ok != tt.ok {
			t.Errorf("parseMsgLine(%q) = %q, %d, %v; want %q, %d, %v", tt.line, subject, n, ok, tt.subject, tt.n, tt.ok)
		}
	}
}

func TestParseFlags(t *testing.T) {
	for _, tt := range []struct {
		name    string
		args    []string
		check   func(config) bool
		wantErr bool
	}{
		{"defaults are the issue's sizes", nil, func(c config) bool {
			return c.Keys == 100_000 && c.Messages == 2_000_000 && c.Timely == 100_000 && c.KVKeys == 100_000 &&
				c.MemoryBackends == 1_000_000 && c.ShutdownBackends == 1_000_000 && c.Out == "bench-results.json" &&
				c.AdminBackends == 1_000_000 && c.HerdBackends == 100_000 && c.HerdRate == 20_000
		}, false},
		{"quick shrinks", []string{"-quick"}, func(c config) bool { return c.Keys == 1_000 && c.Timely == 1_000 && c.KVKeys == 200 }, false},
		{"explicit sizes win over quick", []string{"-quick", "-timely", "5000"}, func(c config) bool {
			return c.Timely == 5000 && c.KVKeys == 200
		}, false},
		{"kv keys follow timely", []string{"-timely", "10"}, func(c config) bool { return c.KVKeys == 10 }, false},
		{"keys beyond messages", []string{"-keys", "10", "-messages", "5"}, nil, true},
		{"only admin", []string{"-only", "admin"}, func(c config) bool {
			return c.runs("admin") && !c.runs("ingest") && !c.runs("memory")
		}, false},
		{"only two sections", []string{"-only", "memory,admin"}, func(c config) bool {
			return c.runs("admin") && c.runs("memory") && !c.runs("timeliness")
		}, false},
		{"no only runs everything", nil, func(c config) bool {
			for _, name := range sectionNames() {
				if !c.runs(name) {
					return false
				}
			}
			return true
		}, false},
		{"only herd", []string{"-only", "herd"}, func(c config) bool { return c.runs("herd") && !c.runs("admin") }, false},
		{"quick herd is small", []string{"-quick"}, func(c config) bool { return c.HerdBackends == 2_000 && c.HerdRate == 5_000 }, false},
		{"herd rate must be positive", []string{"-herd-rate", "0"}, nil, true},
		{"admin quiesce rate defaults to the worker's", nil, func(c config) bool { return c.AdminQuiesceRate == bus.DefaultQuiesceRate }, false},
		{"admin quiesce rate must not be negative", []string{"-admin-quiesce-rate", "-1"}, nil, true},
		{"herd baseline must exceed the guard", []string{"-herd-baseline", "1ms"}, nil, true},
		{"only an unknown section", []string{"-only", "admin,bogus"}, nil, true},
		{"admin clients must be positive", []string{"-admin-clients", "0"}, nil, true},
		{"unknown subscriber", []string{"-subscriber", "x"}, nil, true},
		{"stray argument", []string{"x"}, nil, true},
		{"durable defaults are the issue's sizes", nil, func(c config) bool {
			return c.DurableBackends == 50_000 && c.DurableBurst == 100*time.Millisecond && c.DurableSpread == time.Second &&
				c.DurableRegister == 1_000_000
		}, false},
		{"quick durable is small", []string{"-quick"}, func(c config) bool { return c.DurableBackends == 500 && c.DurableRegister == 2_000 }, false},
		{"only durable", []string{"-only", "durable"}, func(c config) bool { return c.runs("durable") && !c.runs("herd") }, false},
		{"durable register must not be negative", []string{"-durable-register", "-1"}, nil, true},
		{"durable connections must be positive", []string{"-durable-conns", "0"}, nil, true},
		{"process defaults are the issue's sizes", nil, func(c config) bool {
			return c.ProcessBackends == 1_000_000 && c.ProcessRate == 250_000 && c.ProcessSettle == 5*time.Second &&
				c.WorkerBin == "bin/idle-worker"
		}, false},
		{"quick process is small", []string{"-quick"}, func(c config) bool { return c.ProcessBackends == 20_000 }, false},
		{"only process", []string{"-only", "process"}, func(c config) bool { return c.runs("process") && !c.runs("durable") }, false},
		{"process rate 0 is refused", []string{"-process-rate", "0"}, nil, true},
		{"process unpaced", []string{"-process-rate", "-1"}, func(c config) bool { return c.ProcessRate == -1 }, false},
		{"process window below the connections", []string{"-process-window", "2", "-process-conns", "4"}, nil, true},
		{"durable parts", []string{"-durable-parts", "burst,register"}, func(c config) bool {
			return c.durableRuns("burst") && c.durableRuns("register") && !c.durableRuns("limit") && !c.durableRuns("spread")
		}, false},
		{"no durable parts runs them all", nil, func(c config) bool {
			for _, name := range durablePartNames() {
				if !c.durableRuns(name) {
					return false
				}
			}
			return true
		}, false},
		{"an unknown durable part", []string{"-durable-parts", "burst,bogus"}, nil, true},
		{"cluster defaults are the brief's sizes", nil, func(c config) bool {
			return c.ClusterBackends == 30_000 && c.ClusterLead == 2*time.Second && c.ClusterSpread == 2*time.Second && c.ClusterKillAt == -100*time.Millisecond &&
				c.ClusterOwnerTimeout == time.Second && c.ClusterMessages == 1_000_000
		}, false},
		{"quick cluster is small", []string{"-quick"}, func(c config) bool {
			return c.ClusterBackends == 1_000 && c.ClusterMessages == 20_000 && c.ClusterOwnerTimeout == time.Second
		}, false},
		{"only cluster", []string{"-only", "cluster"}, func(c config) bool { return c.runs("cluster") && !c.runs("process") }, false},
		{"cluster kill after the deadlines", []string{"-cluster-kill-at", "300ms"}, func(c config) bool { return c.ClusterKillAt == 300*time.Millisecond }, false},
		{"cluster kill before the heartbeats", []string{"-cluster-lead", "1s", "-cluster-kill-at", "-1s"}, nil, true},
		{"cluster herd", []string{"-cluster-spread", "0"}, func(c config) bool { return c.ClusterSpread == 0 }, false},
		{"cluster spread must not be negative", []string{"-cluster-spread", "-1s"}, nil, true},
		{"cluster backends must not be negative", []string{"-cluster-backends", "-1"}, nil, true},
		{"cluster owner timeout below 100ms", []string{"-cluster-owner-timeout", "50ms"}, nil, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseFlags(tt.args, new(bytes.Buffer))
			if (err != nil) != tt.wantErr {
				t.Fatalf("got error %v; want error: %v", err, tt.wantErr)
			}
			if tt.check != nil && !tt.check(c) {
				t.Errorf("got %+v", c)
			}
		})
	}
}

// TestRunQuick runs every section at -quick sizes. It checks that the run
// completes and reports consistently, not how fast it was: figures are
// measured by make bench, never by tests.
func TestRunQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server and runs every section")
	}
	out := filepath.Join(t.TempDir(), "results.json")
	bin := buildWorker(t)
	cfg, err := parseFlags([]string{"-quick", "-timely", "300", "-kv-keys", "50", "-out", out, "-worker-bin", bin}, new(bytes.Buffer))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var table bytes.Buffer
	res, err := run(ctx, cfg, &table)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range res.Ingest {
		if in.Worker.Consumed+in.Worker.Dropped != uint64(cfg.Messages) {
			t.Errorf("ingest %s: worker consumed %d and dropped %d; want %d in all", in.Body, in.Worker.Consumed, in.Worker.Dropped, cfg.Messages)
		}
	}
	if l := res.Timeliness.Lateness; l.Count != cfg.Timely || l.Early != 0 {
		t.Errorf("timeliness: got %d events, %d early; want %d, none early", l.Count, l.Early, cfg.Timely)
	}
	if l := res.KV.Lateness; l.Count+l.Missing != cfg.KVKeys {
		t.Errorf("KV: got %d markers and %d missing; want %d in all", l.Count, l.Missing, cfg.KVKeys)
	}
	if res.Memory.BytesPerBackend <= 0 || res.Shutdown.Backends != cfg.ShutdownBackends {
		t.Errorf("memory and shutdown: got %+v, %+v", res.Memory, res.Shutdown)
	}
	if a := res.Admin; a == nil || len(a.Phases) != 3 {
		t.Errorf("admin: got %+v; want three phases", a)
	} else {
		for _, p := range a.Phases {
			if p.Heartbeats.Count == 0 || p.HeartbeatErrors != 0 || p.Match != "" && (p.Lists.Count == 0 || p.ListErrors != 0) {
				t.Errorf("admin phase %q: got %d heartbeats (%d lost), %d lists (%d wrong); want some, none lost or wrong",
					p.Name, p.Heartbeats.Count, p.HeartbeatErrors, p.Lists.Count, p.ListErrors)
			}
		}
	}
	if q := res.Admin.Quiesce; q == nil {
		t.Error("admin: no pattern quiesce")
	} else if want := cfg.AdminBackends / adminPools; q.Want != want || !q.ReplyOK || q.Quiesced != want || q.Events != want ||
		q.Missing+q.Duplicates+q.Unexpected != 0 || q.Draining != int64(want) || q.Heartbeats.Count == 0 || q.HeartbeatErrors != 0 {
		t.Errorf("pattern quiesce: got %+v; want %d matched, quiesced, arrived once and draining, heartbeats answered", q, want)
	}
	if h := res.Herd; h == nil {
		t.Error("no herd section")
	} else {
		l := h.Lateness
		if l.Count != cfg.HerdBackends || l.Early+l.Missing+l.Duplicates+l.Unexpected != 0 {
			t.Errorf("herd: got %d events, %d early, %d missing, %d duplicate, %d unexpected; want %d, none early, missing or duplicate",
				l.Count, l.Early, l.Missing, l.Duplicates, l.Unexpected, cfg.HerdBackends)
		}
		if h.Baseline.Count == 0 || h.During.Count == 0 || h.BaselineLost+h.DuringLost != 0 || h.SpreadMS <= 0 || h.PeakPerSecond <= 0 {
			t.Errorf("herd: got %+v; want heartbeats answered in both phases and a spread", h)
		}
	}
	if d := res.Durable; d == nil {
		t.Error("no durable section")
	} else {
		if l := d.Limit; l.Missing+l.Duplicates != 0 || l.StreamMsgs != uint64(cfg.DurableBackends) || l.PerSecond <= 0 {
			t.Errorf("durable limit: got %+v; want %d events seen once and stored", l, cfg.DurableBackends)
		}
		for _, p := range append(d.Burst, d.Spread...) {
			l := p.Lateness
			if l.Count != cfg.DurableBackends || l.Early+l.Missing+l.Duplicates+l.Unexpected != 0 {
				t.Errorf("durable %s: got %+v; want %d events, none early, missing or duplicate", p.Path, l, cfg.DurableBackends)
			}
		}
		if len(d.Burst) != 2 || len(d.Spread) != 2 || len(d.Register) != 2 {
			t.Errorf("durable: got %d burst, %d spread, %d registration measurements; want 2 each", len(d.Burst), len(d.Spread), len(d.Register))
		}
		for _, reg := range d.Register {
			if reg.Tracked != int64(cfg.DurableRegister) || reg.PerSecond <= 0 || reg.Reply.Count != cfg.DurableRegister || reg.Refused != 0 {
				t.Errorf("durable registration %s: got %+v; want %d tracked, each reply timed, none refused", reg.Path, reg, cfg.DurableRegister)
			}
		}
		if len(d.Register) == 2 && d.Register[1].StoreWrites == 0 {
			t.Errorf("durable registration: got %+v; want store writes counted", d.Register[1])
		}
		if _, dur, ok := paths(d.Burst); ok && (dur.CaughtUpMS <= 0 || dur.StoreWrites == 0 || dur.StoreFenced != 0) {
			t.Errorf("durable burst %s: got %+v; want the store caught up, writes counted, none fenced", dur.Path, dur)
		}
		if rs := d.Restart; rs == nil || rs.Restored != int64(cfg.DurableRegister) || rs.ReadyMS <= 0 {
			t.Errorf("durable restart: got %+v; want %d restored", rs, cfg.DurableRegister)
		}
	}
	if p := res.Process; p == nil {
		t.Error("no process section")
	} else {
		checkProcess(t, p, cfg.ProcessBackends)
	}
	if c := res.Cluster; c == nil {
		t.Error("no cluster section")
	} else {
		checkCluster(t, c, cfg)
	}
	for _, section := range []string{"Pattern quiesce", "7. Herd", "8. Durable", "9. Process", "10. Cluster", "Targets"} {
		if !strings.Contains(table.String(), section) {
			t.Errorf("table has no %q section:\n%s", section, table.String())
		}
	}
	if !strings.Contains(table.String(), "Targets") {
		t.Errorf("table has no Targets section:\n%s", table.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var back results
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("results file: %v", err)
	}
	if len(back.Targets) != len(res.Targets) {
		t.Errorf("results file has %d targets; want %d", len(back.Targets), len(res.Targets))
	}
}

// buildWorker builds cmd/idle-worker into the test's temporary directory
// and returns its path.
func buildWorker(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build idle-worker: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "idle-worker")
	cmd := exec.Command(goTool, "build", "-o", bin, "github.com/idle-worker/idle-worker/cmd/idle-worker")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/idle-worker: %v\n%s", err, b)
	}
	return bin
}

// checkProcess checks that the process section ran both runs whole and
// that its counts agree with one another; whether the crash lost backends
// is a figure of make bench, not a test.
func checkProcess(t *testing.T, p *processResult, n int) {
	t.Helper()
	for _, r := range []processRun{p.Graceful, p.Crash} {
		o := r.Outcome
		if r.Registration.Answered != n || r.Registration.PerSecond <= 0 || o.Answered != n || o.Required+o.Late != n ||
			r.ReadyMS <= 0 || r.Answered.RSS <= 0 || r.Restarted.RSS <= 0 {
			t.Errorf("process %s run: got %+v; want %d answered, a restart and memory readings", r.Signal, r, n)
		}
		if r.Tracked < o.RequiredTracked+o.LateTracked {
			t.Errorf("process %s run: %d tracked by the count, %d by the list", r.Signal, r.Tracked, o.RequiredTracked+o.LateTracked)
		}
	}
	if g := p.Graceful; g.Outcome.Required != n || g.Outcome.Lost() != 0 || !g.AllRestored || g.Settled == nil || g.StopMS <= 0 {
		t.Errorf("process SIGTERM run: got %+v; want all %d restored after a clean stop", g, n)
	}
	if p.PeakHWM <= 0 {
		t.Errorf("process peak VmHWM %d; want positive", p.PeakHWM)
	}
}

// checkCluster checks that the cluster section ran its three takeovers and
// four ingest measurements whole: every backend's event arrived once and
// none early, every heartbeat was applied once. Lateness and rates are
// figures of make bench, not tests.
func checkCluster(t *testing.T, c *clusterResult, cfg config) {
	t.Helper()
	if len(c.Takeovers) != 3 {
		t.Errorf("cluster: %d takeovers; want 3", len(c.Takeovers))
	}
	for _, tk := range c.Takeovers {
		l, o := tk.Lateness, tk.Others
		if tk.Due == 0 || l.Count != tk.Due || l.Count+o.Count != cfg.ClusterBackends || tk.faults() != 0 || tk.LeaverPartitions == 0 ||
			tk.ClaimedMS <= 0 || tk.Claims != uint64(tk.LeaverPartitions) {
			t.Errorf("cluster takeover %s: got %+v; want every backend quiesced once, none early, the leaver's partitions claimed", tk.label(), tk)
		}
	}
	if len(c.Ingest) != 4 || len(c.Limits) != 2 {
		t.Errorf("cluster: %d ingest measurements and %d limits; want 4 and 2", len(c.Ingest), len(c.Limits))
	}
	for _, l := range c.Limits {
		if l.Best.Consumed+l.Best.Dropped != uint64(cfg.ClusterMessages) || l.Best.PerSecond <= 0 {
			t.Errorf("cluster ingest limit (mapped %v): got %+v; want %d heartbeats received", l.Mapped, l.Best, cfg.ClusterMessages)
		}
	}
	for _, in := range c.Ingest {
		if in.Best.Consumed != uint64(cfg.ClusterMessages) || in.Best.PerSecond <= 0 || len(in.Received) != in.Workers {
			t.Errorf("cluster ingest %s: got %+v; want %d heartbeats applied", in.name(), in, cfg.ClusterMessages)
		}
	}
}
