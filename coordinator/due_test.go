package coordinator

import (
	"slices"
	"testing"
	"time"
)

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
