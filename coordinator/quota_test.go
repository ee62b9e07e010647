package coordinator

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestMaxPerInstance walks Policy.MaxPerInstance through its cases. Each
// case runs its calls on a fresh Coordinator (a one-minute idle timeout,
// forgetting after an hour, MaxPerInstance 2 unless the case says
// otherwise) and checks each call's error: nil, ErrFull itself (the
// MaxBackends bound), or ErrFull wrapped and naming a full instance.
func TestMaxPerInstance(t *testing.T) {
	type op struct {
		at  time.Duration
		do  string // "mark", "restore", "remove", "quiesce", "collect"
		key string
		// refused wants the call refused by the bound of instance full;
		// bare wants it refused with ErrFull itself (MaxBackends).
		refused bool
		full    string
		bare    bool
		// want is the Change of a mark.
		want Change
	}
	tests := []struct {
		name         string
		maxPerInst   int
		maxBackends  int
		ops          []op
		wantLen      int
		wantTrackedK []string // tracked at the end
	}{
		{name: "limit per instance", ops: []op{
			{do: "mark", key: "svc.1", want: Added}, {do: "mark", key: "svc.2", want: Added},
			{do: "mark", key: "svc.3", refused: true, full: "svc"},
		}, wantLen: 2, wantTrackedK: []string{"svc.1", "svc.2"}},
		{name: "deeper keys share the first token", ops: []op{
			{do: "mark", key: "svc.a.1", want: Added}, {do: "mark", key: "svc.b.1", want: Added},
			{do: "mark", key: "svc.c.1", refused: true, full: "svc"},
		}, wantLen: 2},
		{name: "other instances unaffected", ops: []op{
			{do: "mark", key: "svc.1", want: Added}, {do: "mark", key: "svc.2", want: Added},
			{do: "mark", key: "api.1", want: Added}, {do: "mark", key: "api.2", want: Added},
			{do: "mark", key: "api.3", refused: true, full: "api"}, {do: "mark", key: "svc.3", refused: true, full: "svc"},
			{do: "mark", key: "db.1", want: Added},
		}, wantLen: 5},
		{name: "tracked keys keep working", ops: []op{
			{do: "mark", key: "svc.1", want: Added}, {do: "mark", key: "svc.2", want: Added},
			{at: time.Second, do: "mark", key: "svc.1", want: 0},
			{at: time.Second, do: "quiesce", key: "svc.2"},
			{at: 2 * time.Second, do: "mark", key: "svc.2", want: Rearmed},
		}, wantLen: 2},
		{name: "a key without a dot is its own instance", maxPerInst: 1, ops: []op{
			{do: "mark", key: "solo", want: Added}, {do: "mark", key: "solo2", want: Added},
			{do: "mark", key: "solo", want: 0},
			{do: "mark", key: "solo.1", refused: true, full: "solo"},
		}, wantLen: 2, wantTrackedK: []string{"solo", "solo2"}},
		{name: "an empty first token is an instance too", maxPerInst: 1, ops: []op{
			{do: "mark", key: ".a", want: Added}, {do: "mark", key: ".b", refused: true, full: ""},
			{do: "mark", key: "", refused: true, full: ""},
		}, wantLen: 1},
		{name: "draining and quiesced backends count", ops: []op{
			{do: "mark", key: "svc.1", want: Added}, {do: "mark", key: "svc.2", want: Added},
			{at: time.Minute, do: "collect"}, // both drained
			{at: time.Minute, do: "quiesce", key: "svc.1"},
			{at: time.Minute, do: "mark", key: "svc.3", refused: true, full: "svc"},
		}, wantLen: 2},
		{name: "slot freed by Remove", ops: []op{
			{do: "mark", key: "svc.1", want: Added}, {do: "mark", key: "svc.2", want: Added},
			{do: "remove", key: "svc.1"},
			{do: "mark", key: "svc.3", want: Added},
			{do: "mark", key: "svc.1", refused: true, full: "svc"},
		}, wantLen: 2, wantTrackedK: []string{"svc.2", "svc.3"}},
		{name: "slot freed by forgetting", ops: []op{
			{do: "mark", key: "svc.1", want: Added}, {do: "mark", key: "svc.2", want: Added},
			{at: time.Second, do: "quiesce", key: "svc.1"},
			{at: time.Hour, do: "mark", key: "svc.3", refused: true, full: "svc"}, // not yet collected
			{at: time.Hour + time.Second, do: "collect"},
			{at: time.Hour + time.Second, do: "mark", key: "svc.3", want: Added},
		}, wantLen: 2, wantTrackedK: []string{"svc.3"}},
		{name: "Restore refused", ops: []op{
			{do: "mark", key: "svc.1", want: Added}, {do: "mark", key: "svc.2", want: Added},
			{do: "restore", key: "svc.3", refused: true, full: "svc"},
			{do: "restore", key: "svc.1"}, // replaces: no new slot
			{do: "restore", key: "api.1"},
		}, wantLen: 3, wantTrackedK: []string{"svc.1", "svc.2", "api.1"}},
		{name: "Restore counts toward the limit", ops: []op{
			{do: "restore", key: "svc.1"}, {do: "restore", key: "svc.2"},
			{do: "mark", key: "svc.3", refused: true, full: "svc"},
		}, wantLen: 2},
		{name: "MaxBackends is checked first", maxBackends: 3, ops: []op{
			{do: "mark", key: "svc.1", want: Added}, {do: "mark", key: "svc.2", want: Added},
			{do: "mark", key: "api.1", want: Added},
			{do: "mark", key: "api.2", bare: true}, {do: "mark", key: "svc.3", bare: true},
			{do: "restore", key: "db.1", bare: true},
		}, wantLen: 3},
		{name: "zero: no bound", maxPerInst: -1, ops: []op{
			{do: "mark", key: "svc.1", want: Added}, {do: "mark", key: "svc.2", want: Added},
			{do: "mark", key: "svc.3", want: Added}, {do: "restore", key: "svc.4"},
		}, wantLen: 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Policy{DefaultIdleTimeout: time.Minute, ForgetAfter: time.Hour, MaxPerInstance: 2, MaxBackends: tt.maxBackends}
			switch {
			case tt.maxPerInst < 0:
				p.MaxPerInstance = 0
			case tt.maxPerInst > 0:
				p.MaxPerInstance = tt.maxPerInst
			}
			c := New(p)
			for i, o := range tt.ops {
				now := t0.Add(o.at)
				var err error
				switch o.do {
				case "mark":
					var ch Change
					ch, err = c.MarkActivity(o.key, now)
					if ch != o.want {
						t.Errorf("op %d: MarkActivity(%q): got change %03b; want %03b", i, o.key, ch, o.want)
					}
				case "restore":
					err = c.Restore(Record{Key: o.key, IdleTimeout: time.Minute, State: Running, Generation: 1}, now)
				case "remove":
					c.Remove(o.key)
				case "quiesce":
					c.MarkQuiesced(o.key, now)
				case "collect":
					c.CollectDue(now)
				default:
					t.Fatalf("bad op %q", o.do)
				}
				refused := o.refused || o.bare
				switch {
				case !refused && err != nil:
					t.Fatalf("op %d: %s(%q): got %v; want nil", i, o.do, o.key, err)
				case o.bare && err != ErrFull:
					t.Fatalf("op %d: %s(%q): got %v; want ErrFull itself (MaxBackends)", i, o.do, o.key, err)
				case o.refused && (!errors.Is(err, ErrFull) || err == ErrFull ||
					!strings.Contains(err.Error(), fmt.Sprintf("instance %q", o.full))):
					t.Fatalf("op %d: %s(%q): got %v; want ErrFull wrapped, naming instance %q", i, o.do, o.key, err, o.full)
				}
				if refused {
					if _, ok := c.State(o.key); ok {
						t.Fatalf("op %d: %s(%q) refused: got it tracked; want untracked", i, o.do, o.key)
					}
				}
				checkInvariants(t, c)
			}
			if got := c.Len(); got != tt.wantLen {
				t.Errorf("Len: got %d; want %d", got, tt.wantLen)
			}
			for _, k := range tt.wantTrackedK {
				if _, ok := c.State(k); !ok {
					t.Errorf("State(%q): got untracked; want tracked", k)
				}
			}
		})
	}
}
