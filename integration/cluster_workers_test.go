package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/member"
)

// clusterWorker is one named idle-worker process of a test cluster; a
// restart runs a new process with the same name and settings.
type clusterWorker struct {
	name string
	addr string // host:port of its /metrics and /readyz
	env  map[string]string
	p    *proc
}

// clusterWorkers are the workers of a test, which outlive its subtests.
type clusterWorkers struct {
	owner *testing.T // the test whose end kills them
	urls  string
	env   map[string]string // on top of each worker's own settings
	http  *http.Client
	list  []*clusterWorker
	ports map[int]bool // HTTP ports handed out, which a worker may not have bound yet
}

// add starts a new worker named name and returns it without waiting for it
// to be ready. t is the calling (sub)test, which fails if it cannot start.
func (ws *clusterWorkers) add(t *testing.T, name string) *clusterWorker {
	t.Helper()
	port := freePort(t)
	for ws.ports[port] {
		port = freePort(t)
	}
	if ws.ports == nil {
		ws.ports = map[int]bool{}
	}
	ws.ports[port] = true
	w := &clusterWorker{name: name, addr: fmt.Sprintf("127.0.0.1:%d", port), env: map[string]string{
		"IDLE_NATS_URL":       ws.urls,
		"IDLE_PERSIST":        "on",
		"IDLE_STORE_REPLICAS": "3",
		"IDLE_WORKER_NAME":    name,
	}}
	maps.Copy(w.env, ws.env)
	w.env["IDLE_HTTP_ADDR"] = w.addr
	ws.list = append(ws.list, w)
	ws.start(t, w)
	return w
}

// start runs w's process (again).
func (ws *clusterWorkers) start(t *testing.T, w *clusterWorker) {
	t.Helper()
	p, err := launchBinary(ws.owner, w.env)
	if err != nil {
		t.Fatalf("worker %s: %v", w.name, err)
	}
	w.p = p
}

// waitReady waits until every worker in ws answers /readyz with 200: it
// holds its share of the partitions.
func (ws *clusterWorkers) waitReady(t *testing.T, timeout time.Duration, list ...*clusterWorker) {
	t.Helper()
	if len(list) == 0 {
		list = ws.list
	}
	for _, w := range list {
		chaosWait(t, timeout, "worker "+w.name+" ready", func() bool {
			if w.p.exited() {
				t.Fatalf("worker %s exited (%v); its log:\n%s%s", w.name, w.p.waitErr, w.p.stdout, w.p.stderr)
			}
			resp, err := ws.http.Get("http://" + w.addr + "/readyz")
			if err != nil {
				return false
			}
			_ = resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
	}
}

// signal sends sig to w's process.
func (w *clusterWorker) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := w.p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to worker %s: %v", sig, w.name, err)
	}
}

// metrics scrapes w's /metrics: each sample by its series (name and
// labels as written), and each metric name with the sum of its samples.
func (ws *clusterWorkers) metrics(w *clusterWorker) (map[string]float64, error) {
	resp, err := ws.http.Get("http://" + w.addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics of %s: %s", w.name, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		series, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return nil, fmt.Errorf("/metrics of %s: %q: %w", w.name, line, err)
		}
		out[series] = v
		if name, _, labelled := strings.Cut(series, "{"); labelled {
			out[name] += v
		}
	}
	return out, sc.Err()
}

// Metric names the cluster tests read (see package metrics).
const (
	mOwned    = "idle_worker_partitions_owned"
	mClaims   = "idle_worker_partition_claims_total"
	mReleases = "idle_worker_partition_releases_total"
	mLost     = "idle_worker_partitions_lost_total"
	mFenced   = "idle_worker_store_fenced_total"
	mRunning  = `idle_worker_backends{state="running"}`
	mRestored = "idle_worker_restored_backends"
)

// workerCounters are one worker's counters at one moment; ok is false when
// it did not answer (killed, frozen).
type workerCounters struct {
	name string
	pid  int // of the process scraped
	ok   bool
	m    map[string]float64
}

// counters scrapes every worker, or those of list, giving up on one after
// the client's timeout.
func (ws *clusterWorkers) counters(list ...*clusterWorker) []workerCounters {
	if len(list) == 0 {
		list = ws.list
	}
	out := make([]workerCounters, len(list))
	var wg sync.WaitGroup
	for i, w := range list {
		wg.Go(func() {
			m, err := ws.metrics(w)
			out[i] = workerCounters{name: w.name, pid: w.p.cmd.Process.Pid, ok: err == nil && !w.p.exited(), m: m}
		})
	}
	wg.Wait()
	return out
}

// sumOf adds up metric over the workers that answered.
func sumOf(cs []workerCounters, metric string) float64 {
	var s float64
	for _, c := range cs {
		if c.ok {
			s += c.m[metric]
		}
	}
	return s
}

// settled reports whether the workers that answer own what the
// membership's rendezvous assignment gives each of them among themselves
// (together, every partition), and answers one line saying who owns how
// many.
func settled(cs []workerCounters, partitions int) (bool, string) {
	var names, parts []string
	for _, c := range cs {
		if c.ok {
			names = append(names, c.name)
		}
	}
	want := map[string]int{}
	for _, name := range member.Assign(names, partitions) {
		want[name]++
	}
	ok := len(names) > 0
	for _, c := range cs {
		if !c.ok {
			parts = append(parts, c.name+" -")
			continue
		}
		n := int(c.m[mOwned])
		ok = ok && n == want[c.name]
		parts = append(parts, fmt.Sprintf("%s %d", c.name, n))
	}
	return ok, strings.Join(parts, ", ")
}

// deltas describes, per worker that answers after, how its counters of
// claims, releases, partitions lost and fenced writes grew since before
// (all of them, for a process started since), and what it owns after.
func deltas(before, after []workerCounters) string {
	var out []string
	for i, a := range after {
		if !a.ok {
			out = append(out, a.name+": no answer")
			continue
		}
		name, sign := a.name, "+"
		var b map[string]float64
		if i < len(before) && before[i].ok && before[i].pid == a.pid {
			b = before[i].m
		} else {
			name, sign = a.name+" (new process)", ""
		}
		d := func(m string) string { return sign + strconv.Itoa(int(a.m[m]-b[m])) }
		out = append(out, fmt.Sprintf("%s: owns %d, claims %s, releases %s, lost %s, fenced %s",
			name, int(a.m[mOwned]), d(mClaims), d(mReleases), d(mLost), d(mFenced)))
	}
	return strings.Join(out, "; ")
}

// memberWatch follows the workers' membership heartbeats on
// P.store.members: what each member last said it owns.
type memberWatch struct {
	mu     sync.Mutex
	owners map[string][]int // name -> partitions
}

// watchMembers subscribes to the membership heartbeats on nc.
func watchMembers(t *testing.T, nc *nats.Conn) *memberWatch {
	t.Helper()
	mw := &memberWatch{owners: map[string][]int{}}
	sub, err := nc.Subscribe(prefix+".store.members", func(m *nats.Msg) {
		var hb struct {
			Name       string `json:"name"`
			Partitions []int  `json:"partitions"`
		}
		if json.Unmarshal(m.Data, &hb) != nil || hb.Name == "" {
			return
		}
		mw.mu.Lock()
		mw.owners[hb.Name] = hb.Partitions
		mw.mu.Unlock()
	})
	if err != nil {
		t.Fatalf("subscribe to the membership: %v", err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return mw
}

// owned returns the partitions name last said it owns.
func (mw *memberWatch) owned(name string) []int {
	mw.mu.Lock()
	defer mw.mu.Unlock()
	return slices.Clone(mw.owners[name])
}
