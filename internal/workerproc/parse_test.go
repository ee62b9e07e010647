package workerproc

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestKeys(t *testing.T) {
	k := Keys{Instance: "crash"}
	for _, tt := range []struct {
		i     int
		key   string
		group string
	}{
		{0, "crash.g0.0", "crash.g0.>"},
		{999, "crash.g0.999", "crash.g0.>"},
		{1000, "crash.g1.1000", "crash.g1.>"},
		{999_999, "crash.g999.999999", "crash.g999.>"},
	} {
		if got := k.Key(tt.i); got != tt.key {
			t.Errorf("Key(%d) = %q; want %q", tt.i, got, tt.key)
		}
		if got := k.Group(tt.i / GroupSize); got != tt.group {
			t.Errorf("Group(%d) = %q; want %q", tt.i/GroupSize, got, tt.group)
		}
		if got, ok := k.Index(tt.key); !ok || got != tt.i {
			t.Errorf("Index(%q) = %d, %v; want %d, true", tt.key, got, ok, tt.i)
		}
	}
	for _, key := range []string{
		"", "crash", "crash.g0", "crash.g0.", "other.g0.1", "crash.g1.1", // 1 is in group 0
		"crash.g0.01", "crash.g0.+1", "crash.g0.-1", "crash.g0.1.2", "crashx.g0.1", "crash.x0.1",
	} {
		if i, ok := k.Index(key); ok {
			t.Errorf("Index(%q) = %d, true; want false", key, i)
		}
	}
}

func TestParseStatus(t *testing.T) {
	const status = "Name:\tidle-worker\nVmPeak:\t 1000 kB\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t9\n"
	for _, tt := range []struct {
		name    string
		in      string
		want    Memory
		wantErr bool
	}{
		{"both", status, Memory{RSS: 100 << 20, HWM: 200 << 20}, false},
		{"no HWM", "VmRSS:\t 1 kB\n", Memory{}, true},
		{"not kB", "VmRSS:\t 1 MB\nVmHWM:\t 1 kB\n", Memory{}, true},
		{"not a number", "VmRSS:\t x kB\nVmHWM:\t 1 kB\n", Memory{}, true},
		{"empty", "", Memory{}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatus([]byte(tt.in))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parseStatus = %+v, %v; want %+v, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestSumMetric(t *testing.T) {
	const text = `# HELP idle_worker_backends Tracked backends by state.
# TYPE idle_worker_backends gauge
idle_worker_backends{state="draining"} 2
idle_worker_backends{state="quiesced"} 0
idle_worker_backends{state="running"} 1e+06
# HELP idle_worker_backends_x Not the same metric.
idle_worker_backends_x 7
idle_worker_restored_backends 12345
`
	for _, tt := range []struct {
		name    string
		metric  string
		in      string
		want    float64
		wantErr error
	}{
		{"labelled series add up", MetricBackends, text, 1_000_002, nil},
		{"a plain series", MetricRestored, text, 12345, nil},
		{"a name that only starts the same", "idle_worker_backends_x", text, 7, nil},
		{"missing", "idle_worker_nothing", text, 0, ErrNoMetric},
		{"a bad value", "m", "m{a=\"b\"} x\n", 0, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := sumMetric(strings.NewReader(tt.in), tt.metric)
			switch {
			case tt.name == "a bad value":
				if err == nil {
					t.Errorf("got %v, nil; want an error", got)
				}
			case !errors.Is(err, tt.wantErr) || got != tt.want:
				t.Errorf("sumMetric(%s) = %v, %v; want %v, %v", tt.metric, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestTally(t *testing.T) {
	ms := time.Millisecond
	// Backends 0-5: answered at 10, 40, 60, 85, 100 ms, and never.
	at := []time.Duration{10 * ms, 40 * ms, 60 * ms, 85 * ms, 100 * ms, -1}
	replyAt := func(i int) (time.Duration, bool) { return at[i], at[i] >= 0 }
	for _, tt := range []struct {
		name    string
		tracked []bool
		want    Outcome
	}{
		{"all tracked", []bool{true, true, true, true, true, true}, Outcome{
			Answered: 5, Required: 3, RequiredTracked: 3, Late: 2, LateTracked: 2, Unanswered: 1, UnansweredTracked: 1,
		}},
		{"none tracked", []bool{false, false, false, false, false, false}, Outcome{
			Answered: 5, Required: 3, Late: 2, Unanswered: 1, Missing: []int{0, 1, 2}, LostFirst: 10 * ms,
		}},
		{"a short tracked list is false beyond its end", []bool{true}, Outcome{
			Answered: 5, Required: 3, RequiredTracked: 1, Late: 2, Unanswered: 1, Missing: []int{1, 2}, LostFirst: 40 * ms,
		}},
		{"the kill's edge: exactly the margin before is required", []bool{true, true, false, true, false, false}, Outcome{
			Answered: 5, Required: 3, RequiredTracked: 2, Late: 2, LateTracked: 1, Unanswered: 1, Missing: []int{2}, LostFirst: 60 * ms,
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.want.N, tt.want.Killed, tt.want.Margin = len(at), 110*ms, 50*ms
			got := Tally(len(at), replyAt, tt.tracked, 110*ms, 50*ms)
			if got.String() != tt.want.String() || len(got.Missing) != len(tt.want.Missing) || got.LostFirst != tt.want.LostFirst {
				t.Errorf("Tally:\ngot  %+v\nwant %+v", got, tt.want)
			}
			for j := range got.Missing {
				if got.Missing[j] != tt.want.Missing[j] {
					t.Errorf("Missing = %v; want %v", got.Missing, tt.want.Missing)
					break
				}
			}
			if got.Lost() != tt.want.Required-tt.want.RequiredTracked {
				t.Errorf("Lost() = %d; want %d", got.Lost(), tt.want.Required-tt.want.RequiredTracked)
			}
		})
	}
}

func TestTail(t *testing.T) {
	for _, tt := range []struct {
		name   string
		writes []string
		want   string
	}{
		{"fits", []string{"ab", "cd"}, "abcd"},
		{"exactly full", []string{"abcdefgh"}, "abcdefgh"},
		{"the front goes", []string{"abcdefgh", "ij"}, "[...]\ncdefghij"},
		{"one long write", []string{"0123456789abcdef"}, "[...]\n89abcdef"},
		{"a quarter goes at least", []string{"abcdefgh", "i"}, "[...]\ncdefghi"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := newTail(8)
			for _, w := range tt.writes {
				if n, err := b.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write(%q) = %d, %v", w, n, err)
				}
			}
			if got := b.String(); got != tt.want {
				t.Errorf("String() = %q; want %q", got, tt.want)
			}
		})
	}
	b := newTail(8)
	_, _ = b.Write([]byte("abcdef"))
	if got := b.Last(3); got != "[...]\ndef" {
		t.Errorf("Last(3) = %q; want %q", got, "[...]\ndef")
	}
}
