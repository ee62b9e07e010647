package coordinator

import (
	"errors"
	"maps"
	"math"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// t0 is the fixed start of every test's clock; tests advance it with
// t0.Add(d) and never read the wall clock.
var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// year is a calendar-free 365-day year, for the far-future cases.
const year = 365 * 24 * time.Hour

// fataler is what checkInvariants needs from a *testing.T or a *rapid.T.
type fataler interface {
	Helper()
	Fatalf(format string, args ...any)
}

// checkInvariants verifies the internal structure of c. The heap holds, at
// the position each records, exactly the entries with a next action: every
// Running entry, every Draining entry that awaits a redelivery (sent a
// quiesce, redelivery on) and, with forgetting on, every other Draining or
// Quiesced entry; no other entry is in it. The heap is ordered by due; a
// Running heap key is a lower bound of the real deadline unless a forced
// drain is pending (then it is the time it was asked for); a forgetting key
// is a lower bound of touched+ForgetAfter. Only Running entries are forced,
// only Draining entries count attempts, and an unacknowledged drain has a
// reason. The per-state, unacknowledged and per-instance counts match the
// entries; and the key index holds exactly the entries
// of the map, in strictly ascending key order.
func checkInvariants(tb fataler, c *Coordinator) {
	tb.Helper()
	var counts [Quiesced + 1]int
	scheduled, unacked := 0, 0
	perInst := map[string]int32{}
	for k, e := range c.entries {
		if e.key != k {
			tb.Fatalf("entry under %q has key %q", k, e.key)
		}
		if e.state < Running || e.state > Quiesced {
			tb.Fatalf("entry %q: got state %d; want a valid state", k, e.state)
		}
		if e.timeout < int64(MinTimeout) {
			tb.Fatalf("entry %q: got timeout %v; want >= %v", k, time.Duration(e.timeout), MinTimeout)
		}
		counts[e.state]++
		perInst[instance(k)]++
		if e.state != Draining && e.attempt != 0 {
			tb.Fatalf("%v entry %q: got attempt %d; want 0", e.state, k, e.attempt)
		}
		if e.state != Running && e.forced != 0 {
			tb.Fatalf("%v entry %q: got forced %v; want only Running entries forced", e.state, k, e.forced)
		}
		if e.state == Draining && e.attempt > 0 {
			unacked++
			if e.reason == 0 {
				tb.Fatalf("entry %q: got an unacknowledged drain (attempt %d) without a reason", k, e.attempt)
			}
		}
		redelivering := e.state == Draining && e.attempt > 0 && c.retry > 0
		inHeap := e.state == Running || redelivering || c.forget > 0
		switch {
		case inHeap && (e.idx < 0 || int(e.idx) >= len(c.heap) || c.heap[e.idx] != e):
			tb.Fatalf("%v entry %q (attempt %d): got heap index %d; want its position in a heap of %d", e.state, k, e.attempt, e.idx, len(c.heap))
		case !inHeap && e.idx != -1:
			tb.Fatalf("%v entry %q (attempt %d): got heap index %d; want -1", e.state, k, e.attempt, e.idx)
		}
		if inHeap {
			scheduled++
		}
		switch {
		case e.state == Running && e.forced == 0 && e.due > e.deadline():
			tb.Fatalf("entry %q: got heap key %d; want <= deadline %d", k, e.due, e.deadline())
		case e.state != Running && !redelivering && inHeap && e.due > addSat(e.touched, c.forget):
			tb.Fatalf("%v entry %q: got heap key %d; want <= forgetting time %d", e.state, k, e.due, addSat(e.touched, c.forget))
		}
	}
	if len(c.heap) != scheduled {
		tb.Fatalf("got heap length %d; want %d scheduled entries", len(c.heap), scheduled)
	}
	for i := 1; i < len(c.heap); i++ {
		if p := (i - 1) / 2; c.heap[i].due < c.heap[p].due {
			tb.Fatalf("heap order: got due[%d]=%d < due[parent %d]=%d", i, c.heap[i].due, p, c.heap[p].due)
		}
	}
	for s := Running; s <= Quiesced; s++ {
		if got := c.Count(s); got != counts[s] {
			tb.Fatalf("Count(%v): got %d; want %d", s, got, counts[s])
		}
	}
	if got, want := c.Len(), counts[Running]+counts[Draining]+counts[Quiesced]; got != want {
		tb.Fatalf("Len: got %d; want %d (sum of the counts)", got, want)
	}
	if got := c.Unacknowledged(); got != unacked {
		tb.Fatalf("Unacknowledged: got %d; want %d (Draining entries with attempts)", got, unacked)
	}
	switch {
	case c.policy.MaxPerInstance <= 0 && c.perInst != nil:
		tb.Fatalf("per-instance counts kept without MaxPerInstance: %v", c.perInst)
	case c.policy.MaxPerInstance > 0 && !maps.Equal(c.perInst, perInst):
		tb.Fatalf("per-instance counts: got %v; want %v", c.perInst, perInst)
	}
	for inst, n := range perInst {
		if c.policy.MaxPerInstance > 0 && int(n) > c.policy.MaxPerInstance {
			tb.Fatalf("instance %q: got %d backends; want at most MaxPerInstance %d", inst, n, c.policy.MaxPerInstance)
		}
	}
	if got, want := c.index.Len(), len(c.entries); got != want {
		tb.Fatalf("key index: got %d entries; want %d", got, want)
	}
	var prev *entry
	c.index.Ascend(func(e *entry) bool {
		if c.entries[e.key] != e {
			tb.Fatalf("key index: entry %q is not the map's", e.key)
		}
		if prev != nil && prev.key >= e.key {
			tb.Fatalf("key index order: got %q before %q", prev.key, e.key)
		}
		prev = e
		return true
	})
}

func mustMark(tb testing.TB, c *Coordinator, key string, now time.Time, timeout time.Duration) Change {
	tb.Helper()
	ch, err := c.MarkActivityWithTimeout(key, now, timeout)
	if err != nil {
		tb.Fatalf("MarkActivityWithTimeout(%q): got error %v; want nil", key, err)
	}
	return ch
}

func dueKeys(ds []Due) []string {
	keys := make([]string, len(ds))
	for i, d := range ds {
		keys[i] = d.Key
	}
	return keys
}

// step is one call on a Coordinator. A subtest that needs a history builds
// it from steps on its own fresh Coordinator, so that it runs alone and in
// any order. Times are t0 plus an offset.
type step func(tb testing.TB, c *Coordinator)

func runSteps(tb testing.TB, c *Coordinator, steps []step) {
	tb.Helper()
	for _, s := range steps {
		s(tb, c)
	}
}

// stepMark is MarkActivity(key, t0+d) with the default timeout.
func stepMark(key string, d time.Duration) step {
	return func(tb testing.TB, c *Coordinator) {
		tb.Helper()
		if _, err := c.MarkActivity(key, t0.Add(d)); err != nil {
			tb.Fatalf("MarkActivity(%q, t0+%v): got error %v; want nil", key, d, err)
		}
	}
}

// stepMarkTimeout is MarkActivityWithTimeout(key, t0+d, timeout).
func stepMarkTimeout(key string, d, timeout time.Duration) step {
	return func(tb testing.TB, c *Coordinator) {
		tb.Helper()
		mustMark(tb, c, key, t0.Add(d), timeout)
	}
}

// stepDrain is MarkDraining(key, t0+d) of a tracked key.
func stepDrain(key string, d time.Duration) step {
	return func(tb testing.TB, c *Coordinator) {
		tb.Helper()
		if !c.MarkDraining(key, t0.Add(d)) {
			tb.Fatalf("MarkDraining(%q, t0+%v): got false; want true", key, d)
		}
	}
}

// stepQuiesced is MarkQuiesced(key, t0+d) of a tracked key.
func stepQuiesced(key string, d time.Duration) step {
	return func(tb testing.TB, c *Coordinator) {
		tb.Helper()
		if !c.MarkQuiesced(key, t0.Add(d)) {
			tb.Fatalf("MarkQuiesced(%q, t0+%v): got false; want true", key, d)
		}
	}
}

// stepForce is forceNow(key, t0+d, Maintenance) of a Running key: a forced
// drain, collected at once.
func stepForce(key string, d time.Duration) step {
	return func(tb testing.TB, c *Coordinator) {
		tb.Helper()
		forceNow(tb, c, key, t0.Add(d), Maintenance)
	}
}

// forceNow drains the Running backend key for reason r at now, as the
// removed Quiesce did: Force, then CollectDue at the same now, which must
// return key and nothing else. It returns key's Due.
func forceNow(tb testing.TB, c *Coordinator, key string, now time.Time, r Reason) Due {
	tb.Helper()
	if !c.Force(key, now, r) {
		tb.Fatalf("Force(%q, %v): got false; want true", key, r)
	}
	got := c.CollectDue(now)
	if len(got) != 1 || got[0].Key != key {
		tb.Fatalf("CollectDue right after Force(%q): got %v; want [%s] alone", key, dueKeys(got), key)
	}
	return got[0]
}

// stepCollect is CollectDue(t0+d); its Dues are dropped.
func stepCollect(d time.Duration) step {
	return func(tb testing.TB, c *Coordinator) { c.CollectDue(t0.Add(d)) }
}

// stepRemove is Remove(key), tracked or not.
func stepRemove(key string) step {
	return func(tb testing.TB, c *Coordinator) { c.Remove(key) }
}

// churnA takes the tracked Running key "a" through every transition: refresh,
// timeout change, drain, quiesce, rearm, collection, forced quiesce, remove
// and re-add. It leaves "a" Running with the default timeout, last active at
// t0, and has collected every backend that was Running at t0+1h.
func churnA() []step {
	return []step{
		stepMark("a", time.Millisecond), stepMarkTimeout("a", 0, time.Minute),
		stepDrain("a", 0), stepQuiesced("a", 0), stepMark("a", 0),
		stepCollect(time.Hour), stepMark("a", 0),
		stepForce("a", 0), stepMark("a", 0),
		stepRemove("a"), stepMark("a", 0),
		stepRemove("a"), stepMark("a", 0),
	}
}

func TestDefaultPolicy(t *testing.T) {
	p := DefaultPolicy()
	if p.DefaultIdleTimeout != 30*time.Second {
		t.Errorf("DefaultPolicy().DefaultIdleTimeout: got %v; want 30s", p.DefaultIdleTimeout)
	}
	if p.MaxBackends != 0 {
		t.Errorf("DefaultPolicy().MaxBackends: got %d; want 0 (unbounded)", p.MaxBackends)
	}
	c := New(p)
	if got := c.Policy(); got != p {
		t.Errorf("Policy(): got %+v; want %+v", got, p)
	}
	if _, err := c.MarkActivity("a", t0); err != nil {
		t.Fatalf("MarkActivity: got %v; want nil", err)
	}
	b, _ := c.Get("a", t0)
	if b.IdleTimeout != 30*time.Second {
		t.Errorf("IdleTimeout under DefaultPolicy: got %v; want 30s", b.IdleTimeout)
	}
	if got := c.CollectDue(t0.Add(30*time.Second - 1)); len(got) != 0 {
		t.Errorf("CollectDue 1ns before 30s: got %v; want none", dueKeys(got))
	}
	if got := c.CollectDue(t0.Add(30 * time.Second)); len(got) != 1 {
		t.Errorf("CollectDue at 30s: got %v; want [a]", dueKeys(got))
	}
}

func TestClampTimeout(t *testing.T) {
	tests := []struct {
		name string
		in   time.Duration
		want time.Duration
	}{
		{name: "min int64", in: math.MinInt64, want: time.Millisecond},
		{name: "negative", in: -time.Second, want: time.Millisecond},
		{name: "zero", in: 0, want: time.Millisecond},
		{name: "1ns", in: 1, want: time.Millisecond},
		{name: "just below 1ms", in: time.Millisecond - 1, want: time.Millisecond},
		{name: "1ms", in: time.Millisecond, want: time.Millisecond},
		{name: "above 1ms", in: time.Millisecond + 1, want: time.Millisecond + 1},
		{name: "max int64", in: math.MaxInt64, want: math.MaxInt64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ClampTimeout(tt.in); got != tt.want {
				t.Errorf("ClampTimeout(%v): got %v; want %v", tt.in, got, tt.want)
			}
		})
	}
}

// TestTimeoutClamp checks that zero and negative timeouts clamp to 1 ms both
// as the policy default and per backend, in what Get reports and in when the
// backend becomes due.
func TestTimeoutClamp(t *testing.T) {
	tests := []struct {
		name       string
		policy     time.Duration
		perBackend *time.Duration // nil: MarkActivity with the policy default
		want       time.Duration
	}{
		{name: "policy zero", policy: 0, want: time.Millisecond},
		{name: "policy negative", policy: -5 * time.Second, want: time.Millisecond},
		{name: "policy 1ns", policy: 1, want: time.Millisecond},
		{name: "policy 10s", policy: 10 * time.Second, want: 10 * time.Second},
		{name: "backend zero", policy: time.Hour, perBackend: ptr(time.Duration(0)), want: time.Millisecond},
		{name: "backend negative", policy: time.Hour, perBackend: ptr(-time.Hour), want: time.Millisecond},
		{name: "backend 2ms", policy: time.Hour, perBackend: ptr(2 * time.Millisecond), want: 2 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(Policy{DefaultIdleTimeout: tt.policy})
			var err error
			if tt.perBackend == nil {
				_, err = c.MarkActivity("a", t0)
			} else {
				_, err = c.MarkActivityWithTimeout("a", t0, *tt.perBackend)
			}
			if err != nil {
				t.Fatalf("mark: got %v; want nil", err)
			}
			b, ok := c.Get("a", t0)
			if !ok || b.IdleTimeout != tt.want {
				t.Fatalf("Get: got IdleTimeout %v (tracked %v); want %v", b.IdleTimeout, ok, tt.want)
			}
			if got := c.CollectDue(t0.Add(tt.want - 1)); len(got) != 0 {
				t.Errorf("CollectDue 1ns before %v: got %v; want none", tt.want, dueKeys(got))
			}
			got := c.CollectDue(t0.Add(tt.want))
			if len(got) != 1 || got[0].ConfiguredTimeout != tt.want {
				t.Errorf("CollectDue at %v: got %+v; want one Due with ConfiguredTimeout %v", tt.want, got, tt.want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestMarkActivityChange(t *testing.T) {
	type step struct {
		op      string // "mark" (policy default), "markT", "drain", "quiesce", "collect", "remove"
		at      time.Duration
		timeout time.Duration
		want    Change // for mark and markT
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{name: "new key", steps: []step{{op: "mark", want: Added}}},
		{name: "new key with own timeout", steps: []step{{op: "markT", timeout: time.Second, want: Added}}},
		{name: "plain refresh", steps: []step{
			{op: "mark", want: Added}, {op: "mark", at: time.Second, want: 0},
		}},
		{name: "refresh with the default timeout named", steps: []step{
			{op: "mark", want: Added}, {op: "markT", timeout: time.Minute, want: 0},
		}},
		{name: "timeout changed", steps: []step{
			{op: "mark", want: Added}, {op: "markT", timeout: time.Second, want: TimeoutChanged},
			{op: "markT", timeout: time.Second, want: 0}, {op: "mark", want: TimeoutChanged},
		}},
		{name: "timeouts equal after clamping", steps: []step{
			{op: "markT", timeout: 0, want: Added}, {op: "markT", timeout: -time.Hour, want: 0},
			{op: "markT", timeout: time.Millisecond, want: 0}, {op: "markT", timeout: time.Millisecond + 1, want: TimeoutChanged},
		}},
		{name: "rearm after draining", steps: []step{
			{op: "mark", want: Added}, {op: "drain"}, {op: "mark", want: Rearmed},
		}},
		{name: "rearm after quiesced with a new timeout", steps: []step{
			{op: "mark", want: Added}, {op: "quiesce"}, {op: "markT", timeout: time.Second, want: Rearmed | TimeoutChanged},
		}},
		{name: "rearm after collect", steps: []step{
			{op: "mark", want: Added}, {op: "collect", at: time.Hour}, {op: "mark", at: time.Hour, want: Rearmed},
		}},
		{name: "added again after remove", steps: []step{
			{op: "markT", timeout: time.Second, want: Added}, {op: "remove"}, {op: "mark", want: Added},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(Policy{DefaultIdleTimeout: time.Minute})
			for i, s := range tt.steps {
				now := t0.Add(s.at)
				switch s.op {
				case "mark", "markT":
					var got Change
					var err error
					if s.op == "mark" {
						got, err = c.MarkActivity("a", now)
					} else {
						got, err = c.MarkActivityWithTimeout("a", now, s.timeout)
					}
					if err != nil || got != s.want {
						t.Fatalf("step %d %s: got %03b, %v; want %03b, nil", i, s.op, got, err, s.want)
					}
					b, ok := c.Get("a", now)
					if !ok || b.State != Running || !b.LastActive.Equal(now) {
						t.Fatalf("step %d: got %+v (tracked %v); want Running, last active %v", i, b, ok, now)
					}
				case "drain":
					c.MarkDraining("a", now)
				case "quiesce":
					c.MarkQuiesced("a", now)
				case "collect":
					if got := c.CollectDue(now); len(got) != 1 {
						t.Fatalf("step %d collect: got %v; want [a]", i, dueKeys(got))
					}
				case "remove":
					c.Remove("a")
				default:
					t.Fatalf("bad op %q", s.op)
				}
				checkInvariants(t, c)
			}
		})
	}
}

// TestMarkActivityReplaces checks that activity replaces last activity,
// timeout and state, whatever the state was.
func TestMarkActivityReplaces(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, c *Coordinator)
	}{
		{name: "running", setup: func(*testing.T, *Coordinator) {}},
		{name: "draining", setup: func(_ *testing.T, c *Coordinator) { c.MarkDraining("a", t0) }},
		{name: "quiesced", setup: func(_ *testing.T, c *Coordinator) { c.MarkQuiesced("a", t0) }},
		{name: "collected", setup: func(_ *testing.T, c *Coordinator) { c.CollectDue(t0.Add(time.Hour)) }},
		{name: "forced", setup: func(t *testing.T, c *Coordinator) { forceNow(t, c, "a", t0, Maintenance) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(DefaultPolicy())
			mustMark(t, c, "a", t0, time.Minute)
			tt.setup(t, c)
			now := t0.Add(2 * time.Hour)
			mustMark(t, c, "a", now, 5*time.Second)
			b, ok := c.Get("a", now.Add(time.Second))
			want := Backend{Key: "a", State: Running, LastActive: now, IdleFor: time.Second, IdleTimeout: 5 * time.Second}
			if !ok || b.Key != want.Key || b.State != want.State || !b.LastActive.Equal(want.LastActive) ||
				b.IdleFor != want.IdleFor || b.IdleTimeout != want.IdleTimeout {
				t.Fatalf("Get: got %+v; want %+v", b, want)
			}
			if got := c.Count(Running); got != 1 {
				t.Errorf("Count(Running): got %d; want 1", got)
			}
			if dl, ok := c.NextDeadline(); !ok || !dl.Equal(now.Add(5*time.Second)) {
				t.Errorf("NextDeadline: got %v, %v; want %v, true", dl, ok, now.Add(5*time.Second))
			}
			checkInvariants(t, c)
		})
	}
}

func TestMaxBackends(t *testing.T) {
	c := New(Policy{DefaultIdleTimeout: time.Second, MaxBackends: 2})
	for _, k := range []string{"a", "b"} {
		if _, err := c.MarkActivity(k, t0); err != nil {
			t.Fatalf("MarkActivity(%q): got %v; want nil", k, err)
		}
	}
	tests := []struct {
		name    string
		before  func()
		key     string
		wantErr error
		wantCh  Change
		wantLen int
	}{
		{name: "new key beyond the limit", key: "c", wantErr: ErrFull, wantLen: 2},
		{name: "tracked key refreshes", key: "a", wantCh: 0, wantLen: 2},
		{name: "draining key rearms", before: func() { c.MarkDraining("b", t0) }, key: "b", wantCh: Rearmed, wantLen: 2},
		{name: "quiesced still counts toward the limit", before: func() { c.MarkQuiesced("b", t0) }, key: "c", wantErr: ErrFull, wantLen: 2},
		{name: "room after remove", before: func() { c.Remove("b") }, key: "c", wantCh: Added, wantLen: 2},
		{name: "full again", key: "d", wantErr: ErrFull, wantLen: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.before != nil {
				tt.before()
			}
			ch, err := c.MarkActivity(tt.key, t0.Add(time.Millisecond))
			if !errors.Is(err, tt.wantErr) || ch != tt.wantCh {
				t.Fatalf("MarkActivity(%q): got %03b, %v; want %03b, %v", tt.key, ch, err, tt.wantCh, tt.wantErr)
			}
			if got := c.Len(); got != tt.wantLen {
				t.Errorf("Len: got %d; want %d", got, tt.wantLen)
			}
			if _, ok := c.Get(tt.key, t0); ok != (tt.wantErr == nil) {
				t.Errorf("Get(%q): got tracked %v; want %v", tt.key, ok, tt.wantErr == nil)
			}
			checkInvariants(t, c)
		})
	}
	if got := ErrFull.Error(); !strings.HasPrefix(got, "coordinator: ") {
		t.Errorf("ErrFull: got %q; want the package prefix", got)
	}

	unbounded := New(Policy{})
	for i := range 1000 {
		if _, err := unbounded.MarkActivity(strconv.Itoa(i), t0); err != nil {
			t.Fatalf("MaxBackends 0, key %d: got %v; want nil", i, err)
		}
	}
	if got := unbounded.Len(); got != 1000 {
		t.Errorf("MaxBackends 0: got Len %d; want 1000", got)
	}
}

func TestSetStateAndRemove(t *testing.T) {
	drain := func(c *Coordinator, key string) bool { return c.MarkDraining(key, t0.Add(time.Millisecond)) }
	quiesce := func(c *Coordinator, key string) bool { return c.MarkQuiesced(key, t0.Add(time.Millisecond)) }
	tests := []struct {
		name      string
		op        func(c *Coordinator, key string) bool
		key       string
		want      bool
		wantState State // 0: untracked afterwards
		wantLen   int
	}{
		{name: "drain untracked", op: drain, key: "x", want: false, wantLen: 3},
		{name: "quiesce untracked", op: quiesce, key: "x", want: false, wantLen: 3},
		{name: "remove untracked", op: (*Coordinator).Remove, key: "x", want: false, wantLen: 3},
		{name: "drain running", op: drain, key: "a", want: true, wantState: Draining, wantLen: 3},
		{name: "quiesce running", op: quiesce, key: "a", want: true, wantState: Quiesced, wantLen: 3},
		{name: "remove running", op: (*Coordinator).Remove, key: "a", want: true, wantLen: 2},
		{name: "quiesce draining", op: quiesce, key: "d", want: true, wantState: Quiesced, wantLen: 3},
		{name: "drain draining", op: drain, key: "d", want: true, wantState: Draining, wantLen: 3},
		{name: "remove draining", op: (*Coordinator).Remove, key: "d", want: true, wantLen: 2},
		{name: "drain quiesced", op: drain, key: "q", want: true, wantState: Draining, wantLen: 3},
		{name: "quiesce quiesced", op: quiesce, key: "q", want: true, wantState: Quiesced, wantLen: 3},
		{name: "remove quiesced", op: (*Coordinator).Remove, key: "q", want: true, wantLen: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(Policy{DefaultIdleTimeout: time.Second})
			c.MarkActivity("a", t0)
			c.MarkActivity("d", t0)
			c.MarkActivity("q", t0)
			c.MarkDraining("d", t0)
			c.MarkQuiesced("q", t0)
			before, _ := c.Get(tt.key, t0)
			if got := tt.op(c, tt.key); got != tt.want {
				t.Fatalf("got %v; want %v", got, tt.want)
			}
			b, ok := c.Get(tt.key, t0)
			st, stOK := c.State(tt.key)
			if tt.wantState == 0 {
				if ok || stOK || st != 0 {
					t.Errorf("Get(%q), State: got %+v, %v, %v; want untracked", tt.key, b, st, stOK)
				}
			} else if !ok || b.State != tt.wantState || b.Generation != before.Generation || !stOK || st != tt.wantState {
				t.Errorf("Get(%q): got %+v (tracked %v), State %v, %v; want state %v, generation %d", tt.key, b, ok, st, stOK, tt.wantState, before.Generation)
			}
			if got := c.Len(); got != tt.wantLen {
				t.Errorf("Len: got %d; want %d", got, tt.wantLen)
			}
			// Only a Running backend ever becomes due.
			for _, d := range c.CollectDue(t0.Add(time.Hour)) {
				if d.Key != "a" {
					t.Errorf("CollectDue: got %q; want only the running backend a", d.Key)
				}
			}
			checkInvariants(t, c)
		})
	}
}

func TestCollectDue(t *testing.T) {
	type mark struct {
		key     string
		at      time.Duration
		timeout time.Duration
	}
	tests := []struct {
		name  string
		marks []mark
		now   time.Duration
		want  []Due // Deadline is checked via wantDeadline
	}{
		{
			name:  "nothing tracked",
			marks: nil,
			now:   time.Hour,
			want:  nil,
		},
		{
			name:  "exactly at the deadline",
			marks: []mark{{"a", 0, time.Second}},
			now:   time.Second,
			want:  []Due{{Key: "a", IdleFor: time.Second, ConfiguredTimeout: time.Second, Reason: IdleTimeout}},
		},
		{
			name:  "1ns before the deadline",
			marks: []mark{{"a", 0, time.Second}},
			now:   time.Second - 1,
			want:  nil,
		},
		{
			name:  "long past the deadline",
			marks: []mark{{"a", time.Second, time.Second}},
			now:   time.Hour,
			want:  []Due{{Key: "a", IdleFor: time.Hour - time.Second, ConfiguredTimeout: time.Second, Reason: IdleTimeout}},
		},
		{
			name:  "only the due ones, in deadline order",
			marks: []mark{{"a", 0, 3 * time.Second}, {"b", 0, time.Second}, {"c", 0, 10 * time.Second}, {"d", time.Second, time.Second}},
			now:   3 * time.Second,
			want: []Due{
				{Key: "b", IdleFor: 3 * time.Second, ConfiguredTimeout: time.Second, Reason: IdleTimeout},
				{Key: "d", IdleFor: 2 * time.Second, ConfiguredTimeout: time.Second, Reason: IdleTimeout},
				{Key: "a", IdleFor: 3 * time.Second, ConfiguredTimeout: 3 * time.Second, Reason: IdleTimeout},
			},
		},
		{
			name:  "refreshed before the deadline",
			marks: []mark{{"a", 0, time.Second}, {"a", 900 * time.Millisecond, time.Second}},
			now:   time.Second,
			want:  nil,
		},
		{
			name:  "refreshed then due at the new deadline",
			marks: []mark{{"a", 0, time.Second}, {"a", 900 * time.Millisecond, time.Second}},
			now:   1900 * time.Millisecond,
			want:  []Due{{Key: "a", IdleFor: time.Second, ConfiguredTimeout: time.Second, Reason: IdleTimeout}},
		},
		{
			// e's heap key is stale (it still says 1ms); e must still come
			// out after a, whose deadline is earlier.
			name:  "deadline order with a refreshed backend",
			marks: []mark{{"e", 0, time.Millisecond}, {"a", 0, time.Millisecond}, {"e", time.Millisecond, time.Millisecond}},
			now:   2 * time.Millisecond,
			want: []Due{
				{Key: "a", IdleFor: 2 * time.Millisecond, ConfiguredTimeout: time.Millisecond, Reason: IdleTimeout},
				{Key: "e", IdleFor: time.Millisecond, ConfiguredTimeout: time.Millisecond, Reason: IdleTimeout},
			},
		},
		{
			name:  "time went backwards",
			marks: []mark{{"a", 10 * time.Second, time.Millisecond}},
			now:   0,
			want:  nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(DefaultPolicy())
			last := map[string]time.Time{}
			gens := map[string]uint64{}
			for _, m := range tt.marks {
				mustMark(t, c, m.key, t0.Add(m.at), m.timeout)
				last[m.key] = t0.Add(m.at)
				b, _ := c.Get(m.key, t0)
				gens[m.key] = b.Generation
			}
			now := t0.Add(tt.now)
			got := c.CollectDue(now)
			if len(got) != len(tt.want) {
				t.Fatalf("CollectDue: got %v; want %v", dueKeys(got), dueKeys(tt.want))
			}
			for i, w := range tt.want {
				g := got[i]
				wantDeadline := last[w.Key].Add(w.ConfiguredTimeout)
				if g.Key != w.Key || g.IdleFor != w.IdleFor || g.ConfiguredTimeout != w.ConfiguredTimeout ||
					g.Reason != w.Reason || !g.Deadline.Equal(wantDeadline) || g.Generation != gens[w.Key] {
					t.Errorf("Due[%d]: got %+v; want %+v with Deadline %v, Generation %d", i, g, w, wantDeadline, gens[w.Key])
				}
				if b, _ := c.Get(w.Key, now); b.State != Draining {
					t.Errorf("%s after CollectDue: got state %v; want draining", w.Key, b.State)
				}
			}
			// A second call never returns a collected backend again.
			for _, d := range c.CollectDue(now.Add(time.Hour)) {
				if slices.Contains(dueKeys(got), d.Key) {
					t.Errorf("second CollectDue: got %q again; want nothing until fresh activity", d.Key)
				}
			}
			checkInvariants(t, c)
		})
	}
}

// TestCollectDueOncePerRunningPeriod walks one backend through several
// running periods. Each case replays its walk from t0 on a fresh
// Coordinator, checking every step, so it runs alone.
func TestCollectDueOncePerRunningPeriod(t *testing.T) {
	type collect struct {
		activity bool // MarkActivity at t0+at before collecting
		at       time.Duration
		wantDue  bool
	}
	var (
		firstDue  = collect{at: time.Second, wantDue: true}
		noSecond  = collect{at: 2 * time.Second}
		muchLater = collect{at: time.Hour}
		rearmed   = collect{activity: true, at: time.Hour}
		secondDue = collect{at: time.Hour + time.Second, wantDue: true}
		noneAgain = collect{at: time.Hour + 5*time.Second}
	)
	tests := []struct {
		name  string
		walk  []collect
		nDues int // Dues of the whole walk; their generations must differ
	}{
		{name: "first period due", walk: []collect{firstDue}, nDues: 1},
		{name: "no second Due", walk: []collect{firstDue, noSecond}, nDues: 1},
		{name: "still none much later", walk: []collect{firstDue, noSecond, muchLater}, nDues: 1},
		{name: "rearmed, not yet due", walk: []collect{firstDue, noSecond, muchLater, rearmed}, nDues: 1},
		{name: "second period due", walk: []collect{firstDue, noSecond, muchLater, rearmed, secondDue}, nDues: 2},
		{name: "none again", walk: []collect{firstDue, noSecond, muchLater, rearmed, secondDue, noneAgain}, nDues: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(Policy{DefaultIdleTimeout: time.Second})
			markDefault(t, c, "a", t0)
			var gens []uint64
			for i, st := range tt.walk {
				now := t0.Add(st.at)
				if st.activity {
					markDefault(t, c, "a", now)
				}
				got := c.CollectDue(now)
				if (len(got) == 1) != st.wantDue || len(got) > 1 {
					t.Fatalf("step %d: CollectDue(t0+%v): got %v; want due %v", i, st.at, dueKeys(got), st.wantDue)
				}
				if st.wantDue {
					gens = append(gens, got[0].Generation)
				}
			}
			if len(gens) != tt.nDues {
				t.Fatalf("Dues of the walk: got %d; want %d", len(gens), tt.nDues)
			}
			seen := map[uint64]bool{}
			for _, g := range gens {
				if seen[g] {
					t.Errorf("generations of the running periods: got %v; want all distinct", gens)
				}
				seen[g] = true
			}
			checkInvariants(t, c)
		})
	}
}

func TestTimeGoesBackwards(t *testing.T) {
	tests := []struct {
		name        string
		activity    []time.Duration // offsets of successive MarkActivity calls
		now         time.Duration
		wantIdle    time.Duration
		wantDue     bool
		wantLastAct time.Duration
	}{
		{name: "now before last activity", activity: []time.Duration{10 * time.Second}, now: 0, wantIdle: 0, wantLastAct: 10 * time.Second},
		{name: "now before the first time ever seen", activity: []time.Duration{0}, now: -time.Hour, wantIdle: 0, wantLastAct: 0},
		{name: "activity moves backwards", activity: []time.Duration{10 * time.Second, 0}, now: time.Second, wantIdle: time.Second, wantDue: true, wantLastAct: 0},
		{name: "activity moves backwards, not yet due", activity: []time.Duration{10 * time.Second, 0}, now: time.Second - 1, wantIdle: time.Second - 1, wantLastAct: 0},
		{name: "long before, 1ns short of due", activity: []time.Duration{0}, now: time.Second - 1, wantIdle: time.Second - 1, wantLastAct: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(Policy{DefaultIdleTimeout: time.Second})
			for _, a := range tt.activity {
				c.MarkActivity("a", t0.Add(a))
			}
			now := t0.Add(tt.now)
			b, _ := c.Get("a", now)
			if b.IdleFor != tt.wantIdle || !b.LastActive.Equal(t0.Add(tt.wantLastAct)) {
				t.Errorf("Get: got idle %v, last %v; want idle %v, last %v", b.IdleFor, b.LastActive, tt.wantIdle, t0.Add(tt.wantLastAct))
			}
			dl, _ := c.NextDeadline()
			if want := t0.Add(tt.wantLastAct + time.Second); !dl.Equal(want) {
				t.Errorf("NextDeadline: got %v; want %v", dl, want)
			}
			got := c.CollectDue(now)
			if (len(got) == 1) != tt.wantDue {
				t.Fatalf("CollectDue: got %v; want due %v", dueKeys(got), tt.wantDue)
			}
			if tt.wantDue && got[0].IdleFor != tt.wantIdle {
				t.Errorf("Due.IdleFor: got %v; want %v", got[0].IdleFor, tt.wantIdle)
			}
			checkInvariants(t, c)
		})
	}
}

func TestNextDeadline(t *testing.T) {
	type op struct {
		key     string
		at      time.Duration
		timeout time.Duration
		state   State // 0: activity; Draining or Quiesced: MarkDraining or MarkQuiesced
		remove  bool  // Remove
	}
	tests := []struct {
		name   string
		ops    []op
		want   time.Duration
		wantOK bool
	}{
		{name: "empty", wantOK: false},
		{name: "single", ops: []op{{key: "a", timeout: time.Second}}, want: time.Second, wantOK: true},
		{name: "earliest of several", ops: []op{
			{key: "a", timeout: 5 * time.Second}, {key: "b", at: time.Second, timeout: time.Second}, {key: "c", timeout: 3 * time.Second},
		}, want: 2 * time.Second, wantOK: true},
		{name: "refresh moves it later", ops: []op{
			{key: "a", timeout: time.Second}, {key: "b", timeout: 5 * time.Second}, {key: "a", at: 2 * time.Second, timeout: time.Second},
		}, want: 3 * time.Second, wantOK: true},
		{name: "refresh past another backend", ops: []op{
			{key: "a", timeout: time.Second}, {key: "b", timeout: 2 * time.Second}, {key: "a", at: 5 * time.Second, timeout: time.Second},
		}, want: 2 * time.Second, wantOK: true},
		{name: "shorter timeout on refresh moves it earlier", ops: []op{
			{key: "b", timeout: 10 * time.Second}, {key: "a", timeout: time.Minute}, {key: "a", at: time.Second, timeout: time.Second},
		}, want: 2 * time.Second, wantOK: true},
		{name: "longer timeout on refresh moves it later", ops: []op{
			{key: "a", timeout: time.Second}, {key: "b", timeout: time.Minute}, {key: "a", timeout: 10 * time.Second},
		}, want: 10 * time.Second, wantOK: true},
		{name: "draining is not counted", ops: []op{
			{key: "a", timeout: time.Second}, {key: "b", timeout: 4 * time.Second}, {key: "a", state: Draining},
		}, want: 4 * time.Second, wantOK: true},
		{name: "quiesced is not counted", ops: []op{
			{key: "a", timeout: time.Second}, {key: "a", state: Quiesced},
		}, wantOK: false},
		{name: "removed is not counted", ops: []op{
			{key: "a", timeout: time.Second}, {key: "b", timeout: 7 * time.Second}, {key: "a", remove: true},
		}, want: 7 * time.Second, wantOK: true},
		{name: "rearmed counts again", ops: []op{
			{key: "a", timeout: time.Second}, {key: "a", state: Draining}, {key: "a", at: 3 * time.Second, timeout: time.Second},
		}, want: 4 * time.Second, wantOK: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(DefaultPolicy())
			for _, o := range tt.ops {
				switch {
				case o.remove:
					c.Remove(o.key)
				case o.state == Draining:
					c.MarkDraining(o.key, t0.Add(o.at))
				case o.state == Quiesced:
					c.MarkQuiesced(o.key, t0.Add(o.at))
				default:
					mustMark(t, c, o.key, t0.Add(o.at), o.timeout)
				}
			}
			// Twice: the first call may tidy the index; the answer must not change.
			for i := range 2 {
				got, ok := c.NextDeadline()
				if ok != tt.wantOK || (ok && !got.Equal(t0.Add(tt.want))) {
					t.Fatalf("NextDeadline call %d: got %v, %v; want %v, %v", i+1, got, ok, t0.Add(tt.want), tt.wantOK)
				}
				if !ok && !got.IsZero() {
					t.Errorf("NextDeadline with nothing running: got %v; want the zero time", got)
				}
			}
			checkInvariants(t, c)
			if tt.wantOK {
				// The deadline is the moment CollectDue starts returning something.
				if due := c.CollectDue(t0.Add(tt.want - 1)); len(due) != 0 {
					t.Errorf("CollectDue 1ns before NextDeadline: got %v; want none", dueKeys(due))
				}
				if due := c.CollectDue(t0.Add(tt.want)); len(due) == 0 {
					t.Errorf("CollectDue at NextDeadline: got none; want at least one")
				}
			}
		})
	}
}

// TestNextDeadlineLazyRefresh refreshes the earliest backend many times, so
// its heap key goes stale, and checks NextDeadline and CollectDue stay exact.
func TestNextDeadlineLazyRefresh(t *testing.T) {
	c := New(Policy{DefaultIdleTimeout: 10 * time.Second})
	for i := range 50 {
		c.MarkActivity("k"+strconv.Itoa(i), t0.Add(time.Duration(i)*time.Second))
	}
	// Keep k0..k9 busy every 500 ms for 60 s; the others go idle.
	for step := range 120 {
		now := t0.Add(time.Duration(step) * 500 * time.Millisecond)
		for i := range 10 {
			c.MarkActivity("k"+strconv.Itoa(i), now)
		}
		dl, ok := c.NextDeadline()
		// Earliest deadline among k10..k49 (if still running) and the busy ones.
		var want time.Time
		for i := range 50 {
			b, _ := c.Get("k"+strconv.Itoa(i), now)
			if b.State != Running {
				continue
			}
			if d := b.LastActive.Add(b.IdleTimeout); want.IsZero() || d.Before(want) {
				want = d
			}
		}
		if !ok || !dl.Equal(want) {
			t.Fatalf("step %d: NextDeadline got %v, %v; want %v, true", step, dl, ok, want)
		}
		for _, d := range c.CollectDue(now) {
			if n, _ := strconv.Atoi(strings.TrimPrefix(d.Key, "k")); n < 10 {
				t.Fatalf("step %d: got busy backend %s due; want only idle ones", step, d.Key)
			}
			if d.IdleFor < d.ConfiguredTimeout {
				t.Fatalf("step %d: %s got IdleFor %v; want >= %v", step, d.Key, d.IdleFor, d.ConfiguredTimeout)
			}
		}
		checkInvariants(t, c)
	}
	if got, want := c.Count(Running), 10; got != want {
		t.Errorf("Count(Running) at the end: got %d; want %d", got, want)
	}
	if got, want := c.Count(Draining), 40; got != want {
		t.Errorf("Count(Draining) at the end: got %d; want %d", got, want)
	}
}

func TestHugeTimeout(t *testing.T) {
	const huge = time.Duration(math.MaxInt64)
	// Times are kept as int64 nanoseconds from the first time the
	// Coordinator sees (here t0), so deadlines past t0.Add(huge) read as
	// t0.Add(huge): late, never wrapped to the past.
	edge := t0.Add(huge)
	tests := []struct {
		name  string
		first time.Duration // offset of the first call the Coordinator sees
		at    time.Duration // offset of the huge-timeout activity
		// wantDeadline is NextDeadline for the huge backend alone.
		wantDeadline time.Time
		exact        bool // wantDeadline is last+timeout, so it is due there
	}{
		{name: "activity at the epoch", first: 0, at: 0, wantDeadline: edge, exact: true},
		{name: "activity before the epoch", first: time.Hour, at: 0, wantDeadline: edge, exact: true},
		{name: "activity after the epoch", first: 0, at: time.Hour, wantDeadline: edge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(DefaultPolicy())
			mustMark(t, c, "first", t0.Add(tt.first), time.Second)
			mustMark(t, c, "huge", t0.Add(tt.at), huge)
			if got := c.CollectDue(t0.Add(time.Hour + time.Second)); !slices.Equal(dueKeys(got), []string{"first"}) {
				t.Fatalf("CollectDue: got %v; want [first]", dueKeys(got))
			}
			dl, ok := c.NextDeadline()
			if !ok || !dl.Equal(tt.wantDeadline) || !dl.After(t0.Add(200*year)) {
				t.Fatalf("NextDeadline: got %v, %v; want %v, true (no wrap)", dl, ok, tt.wantDeadline)
			}
			for _, now := range []time.Time{t0.Add(time.Hour), t0.Add(100 * year), t0.Add(250 * year), tt.wantDeadline.Add(-1)} {
				if got := c.CollectDue(now); len(got) != 0 {
					t.Fatalf("CollectDue(%v): got %+v; want none", now, got)
				}
				if b, _ := c.Get("huge", now); b.State != Running || b.IdleTimeout != huge || b.IdleFor != max(now.Sub(t0.Add(tt.at)), 0) {
					t.Fatalf("Get at %v: got %+v; want running, timeout %v, idle %v", now, b, huge, now.Sub(t0.Add(tt.at)))
				}
			}
			// A short-timeout backend still comes first and is collected.
			mustMark(t, c, "short", t0.Add(time.Hour), time.Second)
			if dl, _ := c.NextDeadline(); !dl.Equal(t0.Add(time.Hour + time.Second)) {
				t.Errorf("NextDeadline with a short backend: got %v; want %v", dl, t0.Add(time.Hour+time.Second))
			}
			if got := c.CollectDue(t0.Add(2 * time.Hour)); !slices.Equal(dueKeys(got), []string{"short"}) {
				t.Errorf("CollectDue: got %v; want [short]", dueKeys(got))
			}
			if dl, ok := c.NextDeadline(); !ok || !dl.Equal(tt.wantDeadline) {
				t.Errorf("NextDeadline after short drained: got %v, %v; want %v, true", dl, ok, tt.wantDeadline)
			}
			if tt.exact {
				got := c.CollectDue(tt.wantDeadline)
				if len(got) != 1 || got[0].Key != "huge" || got[0].IdleFor != tt.wantDeadline.Sub(t0.Add(tt.at)) ||
					!got[0].Deadline.Equal(tt.wantDeadline) {
					t.Errorf("CollectDue at the huge deadline: got %+v; want huge, idle %v", got, huge)
				}
			}
			checkInvariants(t, c)
		})
	}
}

// TestIdleSaturates checks idle times that do not fit in a Duration (times
// more than 292 years apart) saturate instead of wrapping.
func TestIdleSaturates(t *testing.T) {
	c := New(Policy{DefaultIdleTimeout: time.Hour})
	c.MarkActivity("epoch", t0)
	c.MarkActivity("old", t0.Add(-200*year))
	now := t0.Add(200 * year)
	const maxDur = time.Duration(math.MaxInt64)
	if b, _ := c.Get("old", now); b.IdleFor != maxDur {
		t.Errorf("Get IdleFor: got %v; want %v", b.IdleFor, maxDur)
	}
	due := c.CollectDue(now)
	if len(due) != 2 {
		t.Fatalf("CollectDue: got %v; want [old epoch]", dueKeys(due))
	}
	for _, d := range due {
		want := now.Sub(t0.Add(-200 * year)) // time.Time.Sub saturates too
		if d.Key == "epoch" {
			want = 200 * year
		}
		if d.IdleFor != want {
			t.Errorf("%s: got IdleFor %v; want %v", d.Key, d.IdleFor, want)
		}
	}
}

// TestEqualDeadlines tracks many backends with the same deadline.
func TestEqualDeadlines(t *testing.T) {
	tests := []struct {
		name string
		n    int
	}{
		{name: "two", n: 2},
		{name: "hundred", n: 100},
		{name: "five thousand", n: 5000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(Policy{DefaultIdleTimeout: time.Second})
			for i := range tt.n {
				c.MarkActivity("k"+strconv.Itoa(i), t0)
			}
			// Refreshing every other key with the same time changes nothing.
			for i := 0; i < tt.n; i += 2 {
				c.MarkActivity("k"+strconv.Itoa(i), t0)
			}
			dl, ok := c.NextDeadline()
			if !ok || !dl.Equal(t0.Add(time.Second)) {
				t.Fatalf("NextDeadline: got %v, %v; want %v, true", dl, ok, t0.Add(time.Second))
			}
			if got := c.CollectDue(t0.Add(time.Second - 1)); len(got) != 0 {
				t.Fatalf("CollectDue 1ns early: got %d; want 0", len(got))
			}
			got := c.CollectDue(t0.Add(time.Second))
			seen := make(map[string]bool, len(got))
			for _, d := range got {
				if seen[d.Key] {
					t.Fatalf("CollectDue: got %q twice", d.Key)
				}
				seen[d.Key] = true
				if !d.Deadline.Equal(t0.Add(time.Second)) || d.IdleFor != time.Second {
					t.Fatalf("Due %q: got deadline %v, idle %v; want %v, 1s", d.Key, d.Deadline, d.IdleFor, t0.Add(time.Second))
				}
			}
			if len(got) != tt.n {
				t.Fatalf("CollectDue: got %d; want %d", len(got), tt.n)
			}
			if _, ok := c.NextDeadline(); ok {
				t.Errorf("NextDeadline after collecting all: got ok; want false")
			}
			if c.Count(Draining) != tt.n || c.Count(Running) != 0 || c.Len() != tt.n {
				t.Errorf("counts: got running %d, draining %d, len %d; want 0, %d, %d", c.Count(Running), c.Count(Draining), c.Len(), tt.n, tt.n)
			}
			checkInvariants(t, c)
		})
	}
}

// TestHeapShrinks checks the deadline index gives memory back after a mass
// drain and keeps working afterwards.
func TestHeapShrinks(t *testing.T) {
	const n = 20000
	tests := []struct {
		name  string
		drain func(c *Coordinator) int
	}{
		{name: "CollectDue", drain: func(c *Coordinator) int { return len(c.CollectDue(t0.Add(time.Hour))) }},
		{name: "Force", drain: func(c *Coordinator) int {
			for i := range n {
				c.Force("k"+strconv.Itoa(i), t0, BrokerShutdown)
			}
			return len(c.CollectDue(t0))
		}},
		{name: "MarkQuiesced", drain: func(c *Coordinator) int {
			for i := range n {
				c.MarkQuiesced("k"+strconv.Itoa(i), t0)
			}
			return c.Count(Quiesced)
		}},
		{name: "Remove", drain: func(c *Coordinator) int {
			for i := range n {
				c.Remove("k" + strconv.Itoa(i))
			}
			return n - c.Len()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(Policy{DefaultIdleTimeout: time.Second})
			for i := range n {
				c.MarkActivity("k"+strconv.Itoa(i), t0.Add(time.Duration(i)))
			}
			grown := cap(c.heap)
			if grown < n {
				t.Fatalf("heap capacity with %d running: got %d; want >= %d", n, grown, n)
			}
			if got := tt.drain(c); got != n {
				t.Fatalf("drained: got %d; want %d", got, n)
			}
			if len(c.heap) != 0 || cap(c.heap) > 2048 {
				t.Errorf("heap after mass drain: got len %d cap %d; want len 0, cap <= 2048 (was %d)", len(c.heap), cap(c.heap), grown)
			}
			checkInvariants(t, c)
			// Still usable: rearm a few out of order and check the order.
			for i, k := range []string{"k7", "k3", "k11", "k5"} {
				c.MarkActivityWithTimeout(k, t0.Add(time.Hour), time.Duration(4-i)*time.Second)
			}
			c.MarkActivity("new", t0.Add(time.Hour))
			checkInvariants(t, c)
			got := c.CollectDue(t0.Add(2 * time.Hour))
			if want := []string{"k5", "new", "k11", "k3", "k7"}; !slices.Equal(dueKeys(got), want) {
				t.Errorf("CollectDue after shrink: got %v; want %v", dueKeys(got), want)
			}
		})
	}
}

// TestGeneration checks when a backend's generation changes: a fresh one
// each time it becomes Running (first sight, rearm, re-add), never otherwise.
// Each case builds its history on its own Coordinator.
func TestGeneration(t *testing.T) {
	tests := []struct {
		name  string
		setup []step // on a fresh Coordinator with a 1 s default timeout
		do    []step
		key   string
		fresh bool // want a generation unseen during setup; else key's generation unchanged by do
	}{
		{name: "first sight of a", do: []step{stepMark("a", 0)}, key: "a", fresh: true},
		{name: "first sight of b", setup: []step{stepMark("a", 0)},
			do: []step{stepMark("b", 0)}, key: "b", fresh: true},
		{name: "refresh while running", setup: []step{stepMark("a", 0)},
			do: []step{stepMark("a", time.Millisecond)}, key: "a"},
		{name: "timeout change while running", setup: []step{stepMark("a", 0), stepMark("a", time.Millisecond)},
			do: []step{stepMarkTimeout("a", 0, time.Minute)}, key: "a"},
		{name: "drain", setup: []step{stepMark("a", 0)},
			do: []step{stepDrain("a", 0)}, key: "a"},
		{name: "quiesce", setup: []step{stepMark("a", 0), stepDrain("a", 0)},
			do: []step{stepQuiesced("a", 0)}, key: "a"},
		{name: "rearm", setup: []step{stepMark("a", 0), stepDrain("a", 0), stepQuiesced("a", 0)},
			do: []step{stepMark("a", 0)}, key: "a", fresh: true},
		{name: "collected", setup: []step{stepMark("a", 0), stepMark("b", 0)},
			do: []step{stepCollect(time.Hour)}, key: "a"},
		{name: "rearm after collect", setup: []step{stepMark("a", 0), stepCollect(time.Hour)},
			do: []step{stepMark("a", 0)}, key: "a", fresh: true},
		{name: "forced", setup: []step{stepMark("a", 0)},
			do: []step{stepForce("a", 0)}, key: "a"},
		{name: "rearm after force", setup: []step{stepMark("a", 0), stepForce("a", 0)},
			do: []step{stepMark("a", 0)}, key: "a", fresh: true},
		{name: "removed and re-added", setup: []step{stepMark("a", 0)},
			do: []step{stepRemove("a"), stepMark("a", 0)}, key: "a", fresh: true},
		{name: "removed and re-added again", setup: []step{stepMark("a", 0), stepRemove("a"), stepMark("a", 0)},
			do: []step{stepRemove("a"), stepMark("a", 0)}, key: "a", fresh: true},
		{name: "other key unaffected", setup: []step{stepMark("a", 0), stepMark("b", 0)},
			do: churnA(), key: "b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(Policy{DefaultIdleTimeout: time.Second})
			// seen maps every generation any backend had during setup to
			// its key.
			seen := map[uint64]string{}
			for _, s := range tt.setup {
				s(t, c)
				bs, _ := c.List(t0, nil, 0)
				for _, b := range bs {
					seen[b.Generation] = b.Key
				}
			}
			before, tracked := c.Get(tt.key, t0)
			if !tt.fresh && !tracked {
				t.Fatalf("Get(%q) before: untracked; want tracked", tt.key)
			}
			runSteps(t, c, tt.do)
			b, ok := c.Get(tt.key, t0)
			if !ok {
				t.Fatalf("Get(%q): untracked; want tracked", tt.key)
			}
			switch {
			case tt.fresh:
				if prev, dup := seen[b.Generation]; dup {
					t.Fatalf("got generation %d for %s; want a new one (already used by %s)", b.Generation, tt.key, prev)
				}
			case b.Generation != before.Generation:
				t.Fatalf("got generation %d; want unchanged %d", b.Generation, before.Generation)
			}
			checkInvariants(t, c)
		})
	}
}

// TestDueGeneration checks that a Due carries the generation of the running
// period that ended.
func TestDueGeneration(t *testing.T) {
	tests := []struct {
		name  string
		setup []step // on a fresh Coordinator with a 1 s default timeout
		at    time.Duration
		key   string // the one Due of CollectDue(t0+at)
	}{
		{name: "first period", setup: []step{stepMark("a", 0)}, at: time.Hour, key: "a"},
		{name: "after rearm", setup: []step{stepMark("a", 0), stepCollect(time.Second), stepMark("a", time.Minute)},
			at: time.Hour, key: "a"},
		// "b" was collected during the churn, so only "a" is due.
		{name: "after every transition", setup: append([]step{stepMark("a", 0), stepMark("b", 0)}, churnA()...),
			at: time.Hour, key: "a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(Policy{DefaultIdleTimeout: time.Second})
			runSteps(t, c, tt.setup)
			b, ok := c.Get(tt.key, t0)
			if !ok {
				t.Fatalf("Get(%q): untracked; want tracked", tt.key)
			}
			due := c.CollectDue(t0.Add(tt.at))
			if len(due) != 1 || due[0].Key != tt.key || due[0].Generation != b.Generation {
				t.Fatalf("CollectDue: got %+v; want %s with Generation %d", due, tt.key, b.Generation)
			}
			if after, _ := c.Get(tt.key, t0); after.Generation != b.Generation {
				t.Errorf("generation after the Due: got %d; want unchanged %d", after.Generation, b.Generation)
			}
			checkInvariants(t, c)
		})
	}
}

func TestList(t *testing.T) {
	c := New(Policy{DefaultIdleTimeout: time.Minute})
	for i, k := range []string{"c", "a", "e", "b", "d"} {
		c.MarkActivityWithTimeout(k, t0.Add(time.Duration(i)*time.Second), time.Duration(i+1)*time.Minute)
	}
	c.MarkDraining("e", t0)
	c.MarkQuiesced("b", t0)
	now := t0.Add(10 * time.Second)
	vowel := func(k string) bool { return strings.ContainsAny(k, "aeiou") }
	tests := []struct {
		name      string
		match     func(string) bool
		limit     int
		wantKeys  []string
		wantTotal int
	}{
		{name: "all", limit: 0, wantKeys: []string{"a", "b", "c", "d", "e"}, wantTotal: 5},
		{name: "negative limit", limit: -1, wantKeys: []string{"a", "b", "c", "d", "e"}, wantTotal: 5},
		{name: "limit", limit: 2, wantKeys: []string{"a", "b"}, wantTotal: 5},
		{name: "limit above total", limit: 10, wantKeys: []string{"a", "b", "c", "d", "e"}, wantTotal: 5},
		{name: "match", match: vowel, wantKeys: []string{"a", "e"}, wantTotal: 2},
		{name: "match and limit", match: vowel, limit: 1, wantKeys: []string{"a"}, wantTotal: 2},
		{name: "no match", match: func(string) bool { return false }, wantKeys: []string{}, wantTotal: 0},
	}
	want := map[string]Backend{
		"c": {Key: "c", State: Running, LastActive: t0, IdleFor: 10 * time.Second, IdleTimeout: time.Minute},
		"a": {Key: "a", State: Running, LastActive: t0.Add(time.Second), IdleFor: 9 * time.Second, IdleTimeout: 2 * time.Minute},
		"e": {Key: "e", State: Draining, LastActive: t0.Add(2 * time.Second), IdleFor: 8 * time.Second, IdleTimeout: 3 * time.Minute},
		"b": {Key: "b", State: Quiesced, LastActive: t0.Add(3 * time.Second), IdleFor: 7 * time.Second, IdleTimeout: 4 * time.Minute},
		"d": {Key: "d", State: Running, LastActive: t0.Add(4 * time.Second), IdleFor: 6 * time.Second, IdleTimeout: 5 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, total := c.List(now, tt.match, tt.limit)
			keys := make([]string, len(got))
			for i, b := range got {
				keys[i] = b.Key
				g, _ := c.Get(b.Key, now)
				w := want[b.Key]
				if b.State != w.State || !b.LastActive.Equal(w.LastActive) || b.IdleFor != w.IdleFor ||
					b.IdleTimeout != w.IdleTimeout || b.Generation != g.Generation {
					t.Errorf("List entry %s: got %+v; want %+v, generation %d", b.Key, b, w, g.Generation)
				}
			}
			if !slices.Equal(keys, tt.wantKeys) || total != tt.wantTotal {
				t.Errorf("List: got %v, total %d; want %v, total %d", keys, total, tt.wantKeys, tt.wantTotal)
			}
		})
	}
}

// TestCount checks the per-state counts and Len. Each case builds its
// history on its own Coordinator.
func TestCount(t *testing.T) {
	tests := []struct {
		name  string
		steps []step            // on a fresh Coordinator with a 1 s default timeout
		want  [Quiesced + 1]int // indexed by State
	}{
		{name: "empty", want: [4]int{}},
		{name: "three running", steps: []step{stepMark("a", 0), stepMark("b", 0), stepMark("c", 0)},
			want: [4]int{Running: 3}},
		{name: "one draining", steps: []step{stepMark("a", 0), stepMark("b", 0), stepMark("c", 0),
			stepDrain("a", 0)}, want: [4]int{Running: 2, Draining: 1}},
		{name: "draining to quiesced", steps: []step{stepMark("a", 0), stepMark("b", 0), stepMark("c", 0),
			stepDrain("a", 0), stepQuiesced("a", 0)}, want: [4]int{Running: 2, Quiesced: 1}},
		{name: "collected", steps: []step{stepMark("a", 0), stepMark("b", 0), stepMark("c", 0),
			stepDrain("a", 0), stepQuiesced("a", 0), stepCollect(time.Second)}, want: [4]int{Draining: 2, Quiesced: 1}},
		{name: "rearm one", steps: []step{stepMark("a", 0), stepMark("b", 0), stepMark("c", 0),
			stepDrain("a", 0), stepQuiesced("a", 0), stepCollect(time.Second), stepMark("b", 0)},
			want: [4]int{Running: 1, Draining: 1, Quiesced: 1}},
		{name: "remove quiesced", steps: []step{stepMark("a", 0), stepMark("b", 0), stepMark("c", 0),
			stepDrain("a", 0), stepQuiesced("a", 0), stepCollect(time.Second), stepMark("b", 0), stepRemove("a")},
			want: [4]int{Running: 1, Draining: 1}},
		{name: "remove untracked", steps: []step{stepMark("a", 0), stepMark("b", 0), stepMark("c", 0),
			stepDrain("a", 0), stepQuiesced("a", 0), stepCollect(time.Second), stepMark("b", 0), stepRemove("a"),
			stepRemove("zz")}, want: [4]int{Running: 1, Draining: 1}},
		{name: "remove all", steps: []step{stepMark("a", 0), stepMark("b", 0), stepMark("c", 0),
			stepDrain("a", 0), stepQuiesced("a", 0), stepCollect(time.Second), stepMark("b", 0), stepRemove("a"),
			stepRemove("zz"), stepRemove("b"), stepRemove("c")}, want: [4]int{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(Policy{DefaultIdleTimeout: time.Second})
			runSteps(t, c, tt.steps)
			total := 0
			for s := Running; s <= Quiesced; s++ {
				total += tt.want[s]
				if got := c.Count(s); got != tt.want[s] {
					t.Errorf("Count(%v): got %d; want %d", s, got, tt.want[s])
				}
			}
			if got := c.Len(); got != total {
				t.Errorf("Len: got %d; want %d", got, total)
			}
			for _, s := range []State{0, Quiesced + 1, 255} {
				if got := c.Count(s); got != 0 {
					t.Errorf("Count(%d): got %d; want 0", s, got)
				}
			}
			checkInvariants(t, c)
		})
	}
}

func TestStrings(t *testing.T) {
	tests := []struct {
		name string
		got  string
		want string
	}{
		{name: "running", got: Running.String(), want: "running"},
		{name: "draining", got: Draining.String(), want: "draining"},
		{name: "quiesced", got: Quiesced.String(), want: "quiesced"},
		{name: "zero state", got: State(0).String(), want: "unknown"},
		{name: "bad state", got: State(200).String(), want: "unknown"},
		{name: "idle timeout", got: IdleTimeout.String(), want: "idle_timeout"},
		{name: "broker shutdown", got: BrokerShutdown.String(), want: "broker_shutdown"},
		{name: "maintenance", got: Maintenance.String(), want: "maintenance"},
		{name: "zero reason", got: Reason(0).String(), want: "unknown"},
		{name: "bad reason", got: Reason(99).String(), want: "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %q; want %q", tt.got, tt.want)
			}
		})
	}
}

// TestImports keeps the coordinator a pure model: standard library time,
// errors, fmt, math, sort/slices/maps, strings and container/* only, and
// the B-tree of its key index (a pure data structure: no I/O, no
// goroutines). The Makefile's check-imports allows the same set.
func TestImports(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go not on PATH")
	}
	out, err := exec.Command(goBin, "list", "-f", `{{join .Imports " "}}`, ".").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	allowed := map[string]bool{
		"errors": true, "fmt": true, "math": true, "slices": true, "sort": true,
		"maps": true, "strings": true, "time": true,
		"github.com/google/btree": true,
	}
	imports := strings.Fields(string(out))
	if len(imports) == 0 {
		t.Fatalf("go list: got no imports; want at least time")
	}
	for _, imp := range imports {
		if !allowed[imp] && !strings.HasPrefix(imp, "container/") {
			t.Errorf("import %q: got a package outside the allowed set; want only errors, fmt, math, slices, sort, maps, strings, time, container/*, github.com/google/btree", imp)
		}
	}
}
