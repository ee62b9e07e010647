package workerproc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/internal/natstest"
)

// bound is how long a test waits for what must happen.
const bound = 10 * time.Second

// responder answers heartbeat requests on url as answer says: the body of
// the reply, or nil for none. It returns how many it was asked.
func responder(t *testing.T, url string, answer func(i int) []byte) *atomic.Int64 {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	keys := Keys{Instance: "t"}
	subj := bus.MustSubjects(bus.DefaultPrefix)
	var asked atomic.Int64
	sub, err := nc.Subscribe(subj.Activity(">"), func(m *nats.Msg) {
		asked.Add(1)
		key, _ := subj.ActivityKey(m.Subject)
		i, ok := keys.Index(key)
		if !ok {
			t.Errorf("heartbeat for %q: not a key of the run", key)
			return
		}
		if body := answer(i); body != nil {
			_ = m.Respond(body)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return &asked
}

func okReply(i int) []byte {
	return []byte(fmt.Sprintf(`{"ok":true,"key":"t.g0.%d","idle_timeout_ms":600000}`, i))
}

func TestSender(t *testing.T) {
	const n = 3000
	refusal := []byte(`{"ok":false,"error":"bus: backend limit reached"}`)
	for _, tt := range []struct {
		name     string
		answer   func(i int) []byte
		cfg      SendConfig
		ctx      time.Duration // 0: bound
		answered int
		refused  int
		cause    string // in the error; "": no error
	}{
		{"every one answered", okReply, SendConfig{}, 0, n, 0, ""},
		{"one connection, a small window, unpaced", okReply, SendConfig{Conns: 1, Window: 16, Rate: -1}, 0, n, 0, ""},
		{"refusals are counted apart", func(i int) []byte {
			if i%3 == 0 {
				return refusal
			}
			return okReply(i)
		}, SendConfig{}, 0, n - n/3, n / 3, "backend limit reached"},
		{"a silent worker stalls the sender", func(i int) []byte {
			if i < 100 {
				return okReply(i)
			}
			return nil
		}, SendConfig{Stall: 200 * time.Millisecond}, 0, 100, 0, "no reply for 200ms"},
		{"a done context stops it", func(int) []byte { return nil }, SendConfig{}, 200 * time.Millisecond, 0, 0, "context deadline exceeded"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := natstest.Start(t)
			asked := responder(t, srv.ClientURL(), tt.answer)
			cfg := tt.cfg
			cfg.URL, cfg.Keys, cfg.N = srv.ClientURL(), Keys{Instance: "t"}, n
			s, err := NewSender(cfg)
			if err != nil {
				t.Fatal(err)
			}
			half := s.WhenAnswered(tt.answered / 2)
			ctx, cancel := context.WithTimeout(context.Background(), cmp(tt.ctx, bound))
			defer cancel()
			res, err := s.Run(ctx)
			if tt.cause == "" && err != nil || tt.cause != "" && (!errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), tt.cause)) {
				t.Fatalf("Run: %v; want an error with %q", err, tt.cause)
			}
			if res.Answered != tt.answered || res.Refused != tt.refused || s.Answered() != tt.answered {
				t.Errorf("got %d answered (Answered() %d), %d refused; want %d, %d", res.Answered, s.Answered(), res.Refused, tt.answered, tt.refused)
			}
			if int(asked.Load()) != res.Sent || res.Sent > n {
				t.Errorf("sent %d, the responder was asked %d times; want the same, at most %d", res.Sent, asked.Load(), n)
			}
			if tt.refused > 0 && !strings.Contains(res.FirstRefusal, "backend limit") {
				t.Errorf("first refusal %q; want the refusal", res.FirstRefusal)
			}
			select {
			case <-half:
			default:
				t.Errorf("WhenAnswered(%d) not closed after %d answered", tt.answered/2, res.Answered)
			}
			got, last := 0, time.Duration(0)
			for i := range n {
				if at, ok := s.ReplyAt(i); ok {
					got++
					last = max(last, at)
					if at <= 0 || at > time.Since(s.Start()) {
						t.Fatalf("ReplyAt(%d) = %v; want within the run", i, at)
					}
				}
			}
			if got != res.Answered || last != res.LastReply {
				t.Errorf("ReplyAt says %d answered, the last at %v; the result %d at %v", got, last, res.Answered, res.LastReply)
			}
			if _, err := s.Run(ctx); !errors.Is(err, ErrUsed) {
				t.Errorf("second Run: %v; want ErrUsed", err)
			}
		})
	}
}

// cmp returns a unless it is zero, else b.
func cmp(a, b time.Duration) time.Duration {
	if a != 0 {
		return a
	}
	return b
}

// The rate is a ceiling: 2,000 requests at 20,000/s take at least 100 ms
// (less the millisecond each connection may run ahead).
func TestSenderPaces(t *testing.T) {
	srv := natstest.Start(t)
	responder(t, srv.ClientURL(), okReply)
	s, err := NewSender(SendConfig{URL: srv.ClientURL(), Keys: Keys{Instance: "t"}, N: 2000, Rate: 20_000})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	res, err := s.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.LastReply < 98*time.Millisecond {
		t.Errorf("2000 requests at 20000/s answered within %v; want at least 98ms", res.LastReply)
	}
}

// When the server goes away midway, Run returns promptly with what was
// answered.
func TestSenderServerGone(t *testing.T) {
	srv := natstest.Start(t)
	var answered atomic.Int64
	responder(t, srv.ClientURL(), func(i int) []byte {
		if answered.Add(1) > 500 {
			return nil
		}
		return okReply(i)
	})
	s, err := NewSender(SendConfig{URL: srv.ClientURL(), Keys: Keys{Instance: "t"}, N: 100_000, Window: 64})
	if err != nil {
		t.Fatal(err)
	}
	reached := s.WhenAnswered(500)
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := s.Run(ctx)
		done <- err
	}()
	select {
	case <-reached:
	case <-time.After(bound):
		t.Fatal("500 replies never arrived")
	}
	srv.Shutdown()
	select {
	case err := <-done:
		if !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), "closed") {
			t.Errorf("Run: %v; want incomplete, a connection closed", err)
		}
	case <-time.After(bound):
		t.Fatal("Run still running after the server went away")
	}
}

func TestNewSenderRefuses(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  SendConfig
	}{
		{"no URL", SendConfig{Keys: Keys{Instance: "t"}}},
		{"no keys", SendConfig{URL: "nats://127.0.0.1:1"}},
		{"negative N", SendConfig{URL: "nats://127.0.0.1:1", Keys: Keys{Instance: "t"}, N: -1}},
		{"window below the connections", SendConfig{URL: "nats://127.0.0.1:1", Keys: Keys{Instance: "t"}, Window: 2, Conns: 3}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewSender(tt.cfg); err == nil {
				t.Error("NewSender: got no error")
			}
		})
	}
}

// adminResponder answers idle.admin.list as the worker would over the
// keys tracked, or with reply when it is not empty.
func adminResponder(t *testing.T, url string, tracked []string, reply string) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	subj := bus.MustSubjects(bus.DefaultPrefix)
	_, err = nc.Subscribe(subj.AdminList(), func(m *nats.Msg) {
		if reply != "" {
			_ = m.Respond([]byte(reply))
			return
		}
		lr, pat, err := bus.ParseListRequest(m.Data)
		if err != nil {
			t.Errorf("list request %s: %v", m.Data, err)
			return
		}
		r := bus.ListReply{OK: true, Backends: []bus.BackendInfo{}}
		for _, k := range tracked {
			if pat.Match(k) {
				if r.Total++; len(r.Backends) < lr.Limit {
					r.Backends = append(r.Backends, bus.BackendInfo{Key: k, State: "running"})
				}
			}
		}
		r.Truncated = r.Total > len(r.Backends)
		b, _ := json.Marshal(r)
		_ = m.Respond(b)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

func TestTrackedKeys(t *testing.T) {
	k := Keys{Instance: "t"}
	const n = 2500
	var some []string
	want := make([]bool, n)
	for i := 0; i < n; i += 7 {
		some, want[i] = append(some, k.Key(i)), true
	}
	some = append(some, "t.g0.x", "other.g0.1", k.Key(n)) // not of the run, or beyond n
	for _, tt := range []struct {
		name    string
		tracked []string
		reply   string
		wantErr string
	}{
		{"every seventh", some, "", ""},
		{"a refusal", nil, `{"ok":false,"error":"bus: shutting down"}`, "shutting down"},
		{"a truncated group", nil, `{"ok":true,"backends":[],"total":2000,"truncated":true}`, "truncated true"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := natstest.Start(t)
			adminResponder(t, srv.ClientURL(), tt.tracked, tt.reply)
			nc, err := nats.Connect(srv.ClientURL())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			ctx, cancel := context.WithTimeout(context.Background(), bound)
			defer cancel()
			got, err := TrackedKeys(ctx, nc, bus.MustSubjects(bus.DefaultPrefix), k, n)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("TrackedKeys: %v; want an error with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i := range n {
				if got[i] != want[i] {
					t.Fatalf("tracked[%d] = %v; want %v", i, got[i], want[i])
				}
			}
		})
	}
}
