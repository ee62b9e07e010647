package bus

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/coordinator"
	"github.com/idle-worker/idle-worker/internal/natstest"
)

const scanWait = 10 * time.Second

// scanEnv is a running Worker whose pattern scans take slice keys at a
// time, and a client connection; both stop in cleanup. setup runs before
// Run, to set test hooks.
type scanEnv struct {
	w  *Worker
	nc *nats.Conn
}

func newScanEnv(t *testing.T, slice int, setup func(*Worker)) *scanEnv {
	t.Helper()
	srv := natstest.Start(t)
	wnc, err := nats.Connect(srv.ClientURL(), nats.Name("worker"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(wnc.Close)
	w, err := NewWorker(wnc, WorkerConfig{Policy: coordinator.Policy{DefaultIdleTimeout: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	w.scanSlice = slice
	if setup != nil {
		setup(w)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(scanWait):
			t.Error("worker did not stop in time")
		}
	})
	select {
	case <-w.Ready():
	case err := <-done:
		t.Fatalf("worker stopped before it was ready: %v", err)
	case <-time.After(scanWait):
		t.Fatal("worker not ready in time")
	}
	nc, err := nats.Connect(srv.ClientURL(), nats.Name("client"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return &scanEnv{w: w, nc: nc}
}

// heartbeat sends a heartbeat request for key and checks the reply.
func (e *scanEnv) heartbeat(key string) error {
	m, err := e.nc.Request(e.w.subj.Activity(key), nil, scanWait)
	if err != nil {
		return fmt.Errorf("heartbeat %q: %w", key, err)
	}
	if !strings.Contains(string(m.Data), `"ok":true`) {
		return fmt.Errorf("heartbeat %q: got reply %s; want ok", key, m.Data)
	}
	return nil
}

// track makes every key a tracked backend, through NATS.
func (e *scanEnv) track(t *testing.T, keys []string) {
	t.Helper()
	for _, k := range keys {
		if err := e.heartbeat(k); err != nil {
			t.Fatal(err)
		}
	}
}

func (e *scanEnv) list(t *testing.T, body string) ListReply {
	t.Helper()
	m, err := e.nc.Request(e.w.subj.AdminList(), []byte(body), scanWait)
	if err != nil {
		t.Fatalf("list %s: %v", body, err)
	}
	var r ListReply
	if err := json.Unmarshal(m.Data, &r); err != nil || !r.OK {
		t.Fatalf("list %s: got %s, %v; want ok", body, m.Data, err)
	}
	return r
}

// scanKeys returns n keys "h-<i%10>.svc.<i>" and, for every tenth, a key
// of another service, plus "h-10.svc.x", which the prefix "h-1." must not
// select.
func scanKeys(n int) []string {
	var keys []string
	for i := range n {
		keys = append(keys, "h-"+strconv.Itoa(i%10)+".svc."+strconv.Itoa(i))
		if i%10 == 0 {
			keys = append(keys, "h-"+strconv.Itoa(i%10)+".other."+strconv.Itoa(i))
		}
	}
	return append(keys, "h-10.svc.x")
}

// hookLog counts the calls of a test's afterSlice hook and keeps its first
// error. The hook runs on a handler goroutine; the test reads the log after
// the reply, which reached it through the network, unseen by the race
// detector: hence the lock.
type hookLog struct {
	mu  sync.Mutex
	n   int
	err error
}

// call counts a call and returns its number, from 1.
func (h *hookLog) call() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n++
	return h.n
}

func (h *hookLog) fail(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err == nil {
		h.err = err
	}
}

func (h *hookLog) result() (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n, h.err
}

func backendKeys(bs []BackendInfo) []string {
	keys := make([]string, len(bs))
	for i, b := range bs {
		keys[i] = b.Key
	}
	return keys
}

func TestPatternPrefixOnly(t *testing.T) {
	for _, tt := range []struct {
		pattern string
		want    bool
	}{
		{">", true},
		{"a.>", true},
		{"a.b.>", true},
		{"*", false},
		{"a.*", false},
		{"*.>", false},
		{"a.*.>", false},
		{"a.b", false},
		{"a.>b", false}, // literal: ">b" is a plain token
	} {
		p, err := ParsePattern(tt.pattern)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.prefixOnly(); got != tt.want {
			t.Errorf("ParsePattern(%q).prefixOnly() = %v; want %v", tt.pattern, got, tt.want)
		}
	}
}

// TestAdminListMatchesNaiveList: a list answered in slices of 3 keys
// equals the naive one-shot listing (every key, Match, sort) for prefix,
// wildcard and literal patterns and several limits.
func TestAdminListMatchesNaiveList(t *testing.T) {
	e := newScanEnv(t, 3, nil)
	e.track(t, scanKeys(60))
	for _, match := range []string{">", "*", "h-1.>", "h-1.*", "h-1.svc.>", "h-1.*.11", "*.svc.>", "*.other.*",
		"*.*.4", "h-1.svc.11", "h-1", "h-10.>", "zz.>"} {
		for _, limit := range []int{1, 5, 10000} {
			t.Run(match+"/"+strconv.Itoa(limit), func(t *testing.T) {
				pat, err := ParsePattern(match)
				if err != nil {
					t.Fatal(err)
				}
				var want []coordinator.Backend
				var total int
				if err := e.w.do(func() { want, total = e.w.coord.List(e.w.now(), pat.Match, limit) }); err != nil {
					t.Fatal(err)
				}
				wantKeys := make([]string, len(want))
				for i, b := range want {
					wantKeys[i] = b.Key
				}
				got := e.list(t, fmt.Sprintf(`{"match":%q,"limit":%d}`, match, limit))
				if keys := backendKeys(got.Backends); !slices.Equal(keys, wantKeys) || got.Total != total || got.Truncated != (total > len(want)) {
					t.Errorf("list %q limit %d: got %v, total %d, truncated %v; want %v, total %d", match, limit, keys, got.Total, got.Truncated, wantKeys, total)
				}
			})
		}
	}
}

// TestAdminListSlicedBetweenHeartbeats: a wildcard list over many backends
// runs in many slices, and between every two of them the loop answers a
// heartbeat (the hook waits for its reply before the next slice may run);
// the reply is still the exact listing.
func TestAdminListSlicedBetweenHeartbeats(t *testing.T) {
	const slice = 7
	var e *scanEnv
	var hook hookLog
	e = newScanEnv(t, slice, func(w *Worker) {
		w.afterSlice = func() {
			n := hook.call()
			// A refresh of a listed backend and a new, unlisted one.
			for _, k := range []string{"h-3.svc.3", "zz.hook." + strconv.Itoa(n)} {
				if err := e.heartbeat(k); err != nil {
					hook.fail(err)
				}
			}
		}
	})
	keys := scanKeys(300)
	e.track(t, keys)
	before := e.w.Stats().Heartbeats

	got := e.list(t, `{"match":"*.svc.>","limit":20}`)

	between, err := hook.result()
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, k := range keys {
		if strings.Contains(k, ".svc.") {
			want = append(want, k)
		}
	}
	slices.Sort(want)
	if g := backendKeys(got.Backends); !slices.Equal(g, want[:20]) || got.Total != len(want) || !got.Truncated {
		t.Errorf("list: got %v, total %d, truncated %v; want %v, total %d, truncated", g, got.Total, got.Truncated, want[:20], len(want))
	}
	// Every key is visited (no literal prefix), and the hook's new keys sort
	// after every listed one, so each slice adds one to the keys ahead.
	if minBetween := len(keys)/slice - 1; between < minBetween {
		t.Errorf("got %d pauses between slices; want at least %d (%d keys, %d a slice)", between, minBetween, len(keys), slice)
	}
	if applied := e.w.Stats().Heartbeats - before; applied != uint64(2*between) {
		t.Errorf("heartbeats applied while listing: got %d; want %d, two between each two slices", applied, 2*between)
	}
}

// TestAdminListChangesBetweenSlices: backends removed or added while a
// list is gathered are listed as the scan position dictates: a key removed
// ahead of the position is not listed, a key added behind it is not, a key
// added ahead of it is.
func TestAdminListChangesBetweenSlices(t *testing.T) {
	var e *scanEnv
	var hook hookLog
	e = newScanEnv(t, 4, func(w *Worker) {
		w.afterSlice = func() {
			if hook.call() != 1 {
				return
			}
			// After the first slice (h-0.other.0, h-0.other.10,
			// h-0.other.20, h-0.svc.0): one removal ahead, one addition
			// behind, one ahead.
			m, err := e.nc.Request(e.w.subj.State("h-5.svc.5"), []byte(`{"state":"removed"}`), scanWait)
			if err == nil && !strings.Contains(string(m.Data), `"ok":true`) {
				err = fmt.Errorf("remove: got %s", m.Data)
			}
			for _, k := range []string{"h-0.a", "h-9.svc.new"} {
				if err == nil {
					err = e.heartbeat(k)
				}
			}
			if err != nil {
				hook.fail(err)
			}
		}
	})
	keys := scanKeys(30)
	e.track(t, keys)
	got := e.list(t, `{"limit":10000}`)
	between, err := hook.result()
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, k := range append(keys, "h-9.svc.new") {
		if k != "h-5.svc.5" {
			want = append(want, k)
		}
	}
	slices.Sort(want)
	if g := backendKeys(got.Backends); !slices.Equal(g, want) || got.Total != len(want) {
		t.Errorf("list: got %v, total %d; want %v, total %d", g, got.Total, want, len(want))
	}
	if between < 2 {
		t.Errorf("got %d pauses between slices; want several", between)
	}
}

// TestForEachMatching: f runs on the loop for each matching key, in key
// order and in slices, and may remove the key it is given; the keys of
// another prefix ("h-10." for "h-1.>") are left alone.
func TestForEachMatching(t *testing.T) {
	var slicesSeen int
	e := newScanEnv(t, 3, func(w *Worker) { w.afterSlice = func() { slicesSeen++ } })
	keys := scanKeys(50)
	e.track(t, keys)
	for _, tt := range []struct {
		match string
		want  []string
	}{
		{"h-1.svc.11", []string{"h-1.svc.11"}},
		{"h-1.svc.nope", nil},
		{"h-1.>", []string{"h-1.svc.1", "h-1.svc.21", "h-1.svc.31", "h-1.svc.41"}}, // h-1.svc.11 is gone
		{"*.other.*", []string{"h-0.other.0", "h-0.other.10", "h-0.other.20", "h-0.other.30", "h-0.other.40"}},
	} {
		t.Run(tt.match, func(t *testing.T) {
			pat, err := ParsePattern(tt.match)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			n, err := e.w.forEachMatching(pat, func(k string, _ time.Time) {
				got = append(got, k)
				e.w.coord.Remove(k)
			})
			if err != nil || n != len(got) || !slices.Equal(got, tt.want) {
				t.Errorf("forEachMatching(%q): got %v (n %d), %v; want %v", tt.match, got, n, err, tt.want)
			}
		})
	}
	var left int
	if err := e.w.do(func() { left = e.w.coord.Len() }); err != nil {
		t.Fatal(err)
	}
	if want := len(keys) - 10; left != want {
		t.Errorf("backends left: got %d; want %d", left, want)
	}
	if slicesSeen < 10 {
		t.Errorf("got %d slices between; want the wildcard walk of %d keys in slices of 3", slicesSeen, len(keys))
	}
}
