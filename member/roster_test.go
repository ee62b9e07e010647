package member

import (
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

const rosterTimeout = time.Second

func hb(name, instance string, parts ...int) heartbeat {
	return heartbeat{Name: name, Instance: instance, Partitions: parts}
}

func leavingHB(name, instance string) heartbeat {
	return heartbeat{Name: name, Instance: instance, Leaving: true}
}

func names(v View) []string {
	var out []string
	for _, m := range v.Members {
		out = append(out, m.Name)
	}
	return out
}

func TestRosterObserve(t *testing.T) {
	type step struct {
		h    heartbeat
		want observation
	}
	tests := []struct {
		name   string
		joined bool
		steps  []step
		view   []Member // the view after the steps
	}{
		{name: "a member joins", steps: []step{{hb("b", "B1", 1), obsJoined}},
			view: []Member{{Name: "b", Instance: "B1", Partitions: []int{1}}}},
		{name: "same heartbeat again", steps: []step{{hb("b", "B1", 1), obsJoined}, {hb("b", "B1", 1), obsNone}},
			view: []Member{{Name: "b", Instance: "B1", Partitions: []int{1}}}},
		{name: "other partitions", steps: []step{{hb("b", "B1", 1), obsJoined}, {hb("b", "B1", 1, 2), obsUpdated}},
			view: []Member{{Name: "b", Instance: "B1", Partitions: []int{1, 2}}}},
		{name: "a restart replaces the instance", steps: []step{{hb("b", "B1", 1), obsJoined}, {hb("b", "B2"), obsRestarted}},
			view: []Member{{Name: "b", Instance: "B2"}}},
		{name: "leaving is flagged", steps: []step{{hb("b", "B1", 1), obsJoined}, {leavingHB("b", "B1"), obsLeft}},
			view: []Member{{Name: "b", Instance: "B1", Leaving: true}}},
		{name: "a left instance heard again is stale", steps: []step{
			{hb("b", "B1", 1), obsJoined}, {leavingHB("b", "B1"), obsLeft}, {hb("b", "B1", 1), obsStale}, {leavingHB("b", "B1"), obsNone}},
			view: []Member{{Name: "b", Instance: "B1", Leaving: true}}},
		{name: "a restart after leaving joins at once", steps: []step{
			{hb("b", "B1", 1), obsJoined}, {leavingHB("b", "B1"), obsLeft}, {hb("b", "B2"), obsRestarted}},
			view: []Member{{Name: "b", Instance: "B2"}}},
		{name: "an unknown member leaving", steps: []step{{leavingHB("b", "B1"), obsLeft}},
			view: []Member{{Name: "b", Instance: "B1", Leaving: true}}},
		{name: "a restart that is leaving", steps: []step{{hb("b", "B1"), obsJoined}, {leavingHB("b", "B2"), obsLeft}},
			view: []Member{{Name: "b", Instance: "B2", Leaving: true}}},
		{name: "my name from another instance is a clash", joined: true, steps: []step{{hb("a", "OTHER", 1), obsClash}},
			view: []Member{{Name: "a", Instance: "A1"}}},
		{name: "a clash before joining", steps: []step{{hb("a", "OTHER"), obsClash}}, view: []Member{}},
		{name: "my own heartbeat", joined: true, steps: []step{{hb("a", "A1", 4), obsUpdated}},
			view: []Member{{Name: "a", Instance: "A1", Partitions: []int{4}}}},
		{name: "my own heartbeat before joining", steps: []step{{hb("a", "A1", 4), obsStale}}, view: []Member{}},
		{name: "sorted view", steps: []step{{hb("c", "C"), obsJoined}, {hb("b", "B"), obsJoined}, {hb("d", "D"), obsJoined}},
			view: []Member{{Name: "b", Instance: "B"}, {Name: "c", Instance: "C"}, {Name: "d", Instance: "D"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRoster("a", "A1", rosterTimeout)
			if tt.joined {
				r.join(t0)
			}
			for i, s := range tt.steps {
				if got := r.observe(s.h, t0.Add(time.Duration(i)*time.Millisecond)); got != s.want {
					t.Fatalf("step %d %+v: got %v; want %v", i, s.h, got, s.want)
				}
			}
			v := r.view(8)
			if v.Self != "a" || v.Partitions != 8 {
				t.Errorf("view self %q partitions %d; want a, 8", v.Self, v.Partitions)
			}
			if !slices.EqualFunc(v.Members, tt.view, func(x, y Member) bool {
				return x.Name == y.Name && x.Instance == y.Instance && x.Leaving == y.Leaving && slices.Equal(x.Partitions, y.Partitions)
			}) {
				t.Errorf("view %+v; want %+v", v.Members, tt.view)
			}
		})
	}
}

// TestRosterExpireNotJoined: before joining, members die after the timeout.
func TestRosterExpireNotJoined(t *testing.T) {
	r := newRoster("a", "A1", rosterTimeout)
	r.observe(hb("b", "B"), t0)
	r.observe(hb("c", "C"), t0.Add(300*time.Millisecond))
	if next, ok := r.next(); !ok || !next.Equal(t0.Add(rosterTimeout)) {
		t.Errorf("next = %v, %v; want %v", next, ok, t0.Add(rosterTimeout))
	}
	if gone := r.expire(t0.Add(rosterTimeout - time.Nanosecond)); len(gone) != 0 {
		t.Errorf("expired %v just before the timeout", gone)
	}
	if gone := r.expire(t0.Add(rosterTimeout)); !slices.Equal(gone, []string{"b"}) {
		t.Errorf("expired %v at the timeout; want b", gone)
	}
	if gone := r.expire(t0.Add(2 * rosterTimeout)); !slices.Equal(gone, []string{"c"}) {
		t.Errorf("expired %v later; want c", gone)
	}
	if _, ok := r.next(); ok {
		t.Error("next with no members; want none")
	}
}

// TestRosterExpireJoined: once joined, a member that does not hear itself
// judges no one else.
func TestRosterExpireJoined(t *testing.T) {
	r := newRoster("a", "A1", rosterTimeout)
	r.join(t0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	r.observe(hb("b", "B"), at(100*time.Millisecond))
	r.observe(hb("a", "A1"), at(200*time.Millisecond))
	r.observe(hb("c", "C"), at(600*time.Millisecond))
	// a's heartbeats stop coming back (cut off), and so do everyone's.
	if gone := r.expire(at(1100 * time.Millisecond)); !slices.Equal(gone, []string{"b"}) {
		t.Fatalf("expired %v at 1.1 s; want b (a still heard at 0.2 s)", gone)
	}
	if gone := r.expire(at(1200 * time.Millisecond)); !slices.Equal(gone, []string{"a"}) {
		t.Fatalf("expired %v at 1.2 s; want only a itself", gone)
	}
	if _, ok := r.next(); ok {
		t.Error("next while a is not heard; want none")
	}
	if gone := r.expire(at(5 * time.Second)); len(gone) != 0 {
		t.Fatalf("expired %v while a is not heard; want none", gone)
	}
	if got := names(r.view(8)); !slices.Equal(got, []string{"c"}) {
		t.Fatalf("view %v while cut off; want c kept", got)
	}
	// a hears itself again: c, silent since 0.6 s, is judged at once.
	if obs := r.observe(hb("a", "A1"), at(5*time.Second)); obs != obsJoined {
		t.Errorf("a heard again: %v; want obsJoined", obs)
	}
	if next, ok := r.next(); !ok || !next.Equal(at(1600*time.Millisecond)) {
		t.Errorf("next = %v, %v; want c's 1.6 s", next, ok)
	}
	if gone := r.expire(at(5 * time.Second)); !slices.Equal(gone, []string{"c"}) {
		t.Fatalf("expired %v after a is heard again; want c", gone)
	}
	if got := names(r.view(8)); !slices.Equal(got, []string{"a"}) {
		t.Errorf("view %v; want a", got)
	}
}

// TestRosterLeavingExpires: a leaving member is listed until its timeout.
func TestRosterLeavingExpires(t *testing.T) {
	r := newRoster("a", "A1", rosterTimeout)
	r.observe(hb("b", "B", 1), t0)
	r.observe(leavingHB("b", "B"), t0.Add(500*time.Millisecond))
	if gone := r.expire(t0.Add(1400 * time.Millisecond)); len(gone) != 0 {
		t.Errorf("expired %v; want b listed until 1.5 s", gone)
	}
	if gone := r.expire(t0.Add(1500 * time.Millisecond)); !slices.Equal(gone, []string{"b"}) {
		t.Errorf("expired %v; want b", gone)
	}
}

func TestYields(t *testing.T) {
	const margin = 250 * time.Millisecond
	tests := []struct {
		name          string
		mine, theirs  time.Duration
		myID, theirID string
		want          bool
	}{
		{"they are much older", time.Second, 10 * time.Second, "A", "B", true},
		{"I am much older", 10 * time.Second, time.Second, "B", "A", false},
		{"close ages, my id larger", time.Second, time.Second + margin, "B", "A", true},
		{"close ages, my id smaller", time.Second + margin, time.Second, "A", "B", false},
		{"just past the margin", time.Second, time.Second + margin + time.Millisecond, "A", "B", true},
	}
	for _, tt := range tests {
		if got := yields(tt.mine, tt.theirs, tt.myID, tt.theirID, margin); got != tt.want {
			t.Errorf("%s: yields = %v; want %v", tt.name, got, tt.want)
		}
		// The other side of the same meeting decides the opposite.
		if other := yields(tt.theirs, tt.mine, tt.theirID, tt.myID, margin); other == tt.want {
			t.Errorf("%s: both sides yield %v", tt.name, other)
		}
	}
}
