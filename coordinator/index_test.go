package coordinator

import (
	"slices"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// scanAll runs one Scan and returns the keys it visited; stopAt > 0 makes
// visit return false on the stopAt-th key.
func scanAll(c *Coordinator, after, prefix string, maxVisit, stopAt int) (keys []string, next string, more bool) {
	next, more = c.Scan(t0, after, prefix, maxVisit, func(b Backend) bool {
		keys = append(keys, b.Key)
		return stopAt <= 0 || len(keys) < stopAt
	})
	return keys, next, more
}

func TestScan(t *testing.T) {
	c := New(DefaultPolicy())
	for _, k := range []string{"dev-7.gopls.2", "dev-70.x", "dev-7", "dev-7.gopls.1", "dev-8.b", "dev-7.a", "dev-7.gopls.3", "a"} {
		markDefault(t, c, k, t0)
	}
	markDefault(t, c, "dev-7.gone", t0)
	c.Remove("dev-7.gone")
	tests := []struct {
		name          string
		after, prefix string
		maxVisit      int
		stopAt        int
		want          []string
		wantNext      string
		wantMore      bool
	}{
		{name: "everything", want: []string{"a", "dev-7", "dev-7.a", "dev-7.gopls.1", "dev-7.gopls.2", "dev-7.gopls.3", "dev-70.x", "dev-8.b"},
			wantNext: "dev-8.b"},
		{name: "token prefix excludes dev-70", prefix: "dev-7.",
			want: []string{"dev-7.a", "dev-7.gopls.1", "dev-7.gopls.2", "dev-7.gopls.3"}, wantNext: "dev-7.gopls.3"},
		{name: "byte prefix includes dev-70", prefix: "dev-7",
			want: []string{"dev-7", "dev-7.a", "dev-7.gopls.1", "dev-7.gopls.2", "dev-7.gopls.3", "dev-70.x"}, wantNext: "dev-70.x"},
		{name: "slice", prefix: "dev-7.", maxVisit: 2, want: []string{"dev-7.a", "dev-7.gopls.1"}, wantNext: "dev-7.gopls.1", wantMore: true},
		{name: "resume", after: "dev-7.gopls.1", prefix: "dev-7.", maxVisit: 2,
			want: []string{"dev-7.gopls.2", "dev-7.gopls.3"}, wantNext: "dev-7.gopls.3"},
		{name: "slice ending at the range's end has no more", prefix: "dev-7.gopls.", maxVisit: 3,
			want: []string{"dev-7.gopls.1", "dev-7.gopls.2", "dev-7.gopls.3"}, wantNext: "dev-7.gopls.3"},
		{name: "resume after a removed key", after: "dev-7.gone", prefix: "dev-7.", maxVisit: 1,
			want: []string{"dev-7.gopls.1"}, wantNext: "dev-7.gopls.1", wantMore: true},
		{name: "resume after a key never tracked", after: "dev-7.b", prefix: "dev-7.",
			want: []string{"dev-7.gopls.1", "dev-7.gopls.2", "dev-7.gopls.3"}, wantNext: "dev-7.gopls.3"},
		{name: "after before the prefix starts at the prefix", after: "a", prefix: "dev-8.", want: []string{"dev-8.b"}, wantNext: "dev-8.b"},
		{name: "after past the prefix", after: "dev-9", prefix: "dev-7.", want: nil, wantNext: "dev-9"},
		{name: "after the last key", after: "dev-8.b", want: nil, wantNext: "dev-8.b"},
		{name: "no key with the prefix", prefix: "web.", want: nil, wantNext: ""},
		{name: "visit stops", prefix: "dev-7.", stopAt: 2, want: []string{"dev-7.a", "dev-7.gopls.1"}, wantNext: "dev-7.gopls.1", wantMore: true},
		{name: "visit stops at the last key", prefix: "dev-8.", stopAt: 1, want: []string{"dev-8.b"}, wantNext: "dev-8.b"},
		{name: "negative maxVisit is no bound", prefix: "dev-7.gopls.", maxVisit: -1,
			want: []string{"dev-7.gopls.1", "dev-7.gopls.2", "dev-7.gopls.3"}, wantNext: "dev-7.gopls.3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, next, more := scanAll(c, tt.after, tt.prefix, tt.maxVisit, tt.stopAt)
			if !slices.Equal(got, tt.want) || next != tt.wantNext || more != tt.wantMore {
				t.Errorf("Scan(%q, %q, %d): got %q, next %q, more %v; want %q, next %q, more %v",
					tt.after, tt.prefix, tt.maxVisit, got, next, more, tt.want, tt.wantNext, tt.wantMore)
			}
		})
	}
	if c.probe.key != "" {
		t.Errorf("probe key after Scan: got %q; want empty (no caller string kept alive)", c.probe.key)
	}
}

// TestScanSnapshots: Scan hands over the same snapshots as Get, and visit
// may read the Coordinator.
func TestScanSnapshots(t *testing.T) {
	c := New(Policy{DefaultIdleTimeout: time.Minute, RetryInterval: time.Second})
	for i, k := range []string{"b", "a", "c", "d"} {
		mustMark(t, c, k, t0.Add(time.Duration(i)*time.Second), time.Duration(i+1)*time.Minute)
	}
	c.MarkDraining("b", t0.Add(4*time.Second))
	forceNow(t, c, "c", t0.Add(5*time.Second), Maintenance)
	c.MarkQuiesced("d", t0.Add(5*time.Second))
	now := t0.Add(time.Minute)
	var got []string
	c.Scan(now, "", "", 0, func(b Backend) bool {
		got = append(got, b.Key)
		if want, ok := c.Get(b.Key, now); !ok || b != want {
			t.Errorf("Scan snapshot: got %+v; want %+v as Get has it", b, want)
		}
		return true
	})
	if want := []string{"a", "b", "c", "d"}; !slices.Equal(got, want) {
		t.Errorf("got %q; want %q", got, want)
	}
}

// scanRef is the naive reference of a scan slice: sort every tracked key,
// keep those with prefix after after, take maxVisit of them.
func scanRef(keys map[string]bool, after, prefix string, maxVisit, stopAt int) (want []string, next string, more bool) {
	var all []string
	for k := range keys {
		if strings.HasPrefix(k, prefix) && k > after {
			all = append(all, k)
		}
	}
	slices.Sort(all)
	n := len(all)
	if maxVisit > 0 {
		n = min(n, maxVisit)
	}
	if stopAt > 0 {
		n = min(n, stopAt)
	}
	want, next = all[:n], after
	if n > 0 {
		next = all[n-1]
	}
	return want, next, n < len(all)
}

// TestScanModel checks Scan and List against a naive scan-and-sort over
// random keys, prefixes, slice sizes and resumptions, with keys added,
// removed and restored between the slices of a scan in progress.
func TestScanModel(t *testing.T) {
	tokens := []string{"a", "ab", "b", "a-1", "a0"}
	tokenGen := rapid.SampledFrom(tokens)
	keyGen := rapid.Custom(func(t *rapid.T) string {
		return strings.Join(rapid.SliceOfN(tokenGen, 1, 3).Draw(t, "tokens"), ".")
	})
	// Prefixes: whole-token ones ("a.", "a.b.") and byte ones ("a", "").
	prefixGen := rapid.Custom(func(t *rapid.T) string {
		p := strings.Join(rapid.SliceOfN(tokenGen, 0, 2).Draw(t, "prefix_tokens"), ".")
		if p != "" && rapid.Bool().Draw(t, "dot") {
			p += "."
		}
		return p
	})
	rapid.Check(t, func(t *rapid.T) {
		c := New(Policy{DefaultIdleTimeout: time.Minute})
		keys := map[string]bool{}
		// A scan in progress: its prefix, its position, whether it is done.
		var prefix, after string
		done := true
		t.Repeat(map[string]func(*rapid.T){
			"Mark": func(t *rapid.T) {
				k := keyGen.Draw(t, "key")
				if _, err := c.MarkActivity(k, t0); err != nil {
					t.Fatal(err)
				}
				keys[k] = true
			},
			"Remove": func(t *rapid.T) {
				k := keyGen.Draw(t, "key")
				if got, want := c.Remove(k), keys[k]; got != want {
					t.Fatalf("Remove(%q): got %v; want %v", k, got, want)
				}
				delete(keys, k)
			},
			"Restore": func(t *rapid.T) {
				k := keyGen.Draw(t, "key")
				if err := c.Restore(Record{Key: k, IdleTimeout: time.Minute, State: Quiesced}, t0); err != nil {
					t.Fatal(err)
				}
				keys[k] = true
			},
			"Start": func(t *rapid.T) {
				prefix, done = prefixGen.Draw(t, "prefix"), false
				// Start at the beginning or after any key, tracked or not.
				after = ""
				if rapid.Bool().Draw(t, "from_a_key") {
					after = keyGen.Draw(t, "after")
				}
			},
			"Slice": func(t *rapid.T) {
				if done {
					t.Skip("no scan in progress")
				}
				maxVisit := rapid.IntRange(-1, 4).Draw(t, "max_visit")
				stopAt := rapid.IntRange(0, 3).Draw(t, "stop_at")
				want, wantNext, wantMore := scanRef(keys, after, prefix, maxVisit, stopAt)
				got, next, more := scanAll(c, after, prefix, maxVisit, stopAt)
				if !slices.Equal(got, want) || next != wantNext || more != wantMore {
					t.Fatalf("Scan(%q, %q, %d) stopping at %d: got %q, next %q, more %v; want %q, next %q, more %v",
						after, prefix, maxVisit, stopAt, got, next, more, want, wantNext, wantMore)
				}
				after, done = next, !more
			},
			"List": func(t *rapid.T) {
				limit := rapid.IntRange(-1, 4).Draw(t, "limit")
				p := prefixGen.Draw(t, "prefix")
				match := func(k string) bool { return strings.HasPrefix(k, p) }
				want, _, _ := scanRef(keys, "", p, limit, 0)
				total := 0
				for k := range keys {
					if match(k) {
						total++
					}
				}
				got, gotTotal := c.List(t0, match, limit)
				gotKeys := make([]string, len(got))
				for i, b := range got {
					gotKeys[i] = b.Key
				}
				if !slices.Equal(gotKeys, want) || gotTotal != total {
					t.Fatalf("List(prefix %q, %d): got %q, total %d; want %q, total %d", p, limit, gotKeys, gotTotal, want, total)
				}
			},
			"": func(t *rapid.T) {
				checkInvariants(t, c)
				if c.Len() != len(keys) {
					t.Fatalf("Len: got %d; want %d", c.Len(), len(keys))
				}
			},
		})
	})
}
