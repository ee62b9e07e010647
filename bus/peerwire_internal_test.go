package bus

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// peerQueries are a query of each verb, as the worker asking would make
// them, over 8 partitions.
func peerQueries(t testing.TB) map[string]peerQuery {
	pat, err := ParsePattern("a.>")
	if err != nil {
		t.Fatal(err)
	}
	return map[string]peerQuery{
		peerList:    {verb: peerList, partitions: 8, limit: 2, pat: pat},
		peerGet:     {verb: peerGet, partitions: 8, key: "a.one"},
		peerQuiesce: {verb: peerQuiesce, partitions: 8},
		peerForget:  {verb: peerForget, partitions: 8},
	}
}

const (
	peerBackendOne = `{"key":"a.one","state":"running","idle_for_ms":5,"idle_timeout_ms":30000,"attempts":0}`
	peerBackendTwo = `{"key":"a.two","state":"draining","idle_for_ms":9,"idle_timeout_ms":1000,"attempts":2}`
)

func TestParsePeerAnswer(t *testing.T) {
	qs := peerQueries(t)
	one := BackendInfo{Key: "a.one", State: "running", IdleForMS: 5, IdleTimeoutMS: 30000}
	two := BackendInfo{Key: "a.two", State: "draining", IdleForMS: 9, IdleTimeoutMS: 1000, Attempts: 2}
	tests := []struct {
		name string
		verb string
		body string
		want peerAnswer
		bad  string // a substring of the error; "" when the answer is good
	}{
		{name: "list", verb: peerList,
			body: `{"name":"w-1","partitions":[0,3,7],"count":5,"backends":[` + peerBackendOne + `,` + peerBackendTwo + `],"unacknowledged":1}`,
			want: peerAnswer{Name: "w-1", Partitions: []int{0, 3, 7}, Count: 5, Backends: []BackendInfo{one, two}, Unacknowledged: 1}},
		{name: "list empty", verb: peerList, body: `{"name":"w-1","partitions":[],"count":0}`,
			want: peerAnswer{Name: "w-1", Partitions: []int{}}},
		{name: "unknown members ignored", verb: peerList, body: `{"name":"w-1","partitions":[1],"count":0,"later":true}`,
			want: peerAnswer{Name: "w-1", Partitions: []int{1}}},
		{name: "get found", verb: peerGet, body: `{"name":"w-2","partitions":[2],"count":1,"backends":[` + peerBackendOne + `]}`,
			want: peerAnswer{Name: "w-2", Partitions: []int{2}, Count: 1, Backends: []BackendInfo{one}}},
		{name: "get not found", verb: peerGet, body: `{"name":"w-2","partitions":[2],"count":0}`,
			want: peerAnswer{Name: "w-2", Partitions: []int{2}}},
		{name: "quiesce", verb: peerQuiesce, body: `{"name":"w","partitions":[4],"count":12}`,
			want: peerAnswer{Name: "w", Partitions: []int{4}, Count: 12}},
		{name: "forget", verb: peerForget, body: `{"name":"w","partitions":[4],"count":3}`,
			want: peerAnswer{Name: "w", Partitions: []int{4}, Count: 3}},
		{name: "error drops the rest", verb: peerList, body: `{"name":"w","error":"bus: worker shutting down","partitions":[99],"count":-1}`,
			want: peerAnswer{Name: "w", Error: "bus: worker shutting down"}},

		{name: "not an object", verb: peerList, body: `[]`, bad: "JSON object"},
		{name: "empty", verb: peerList, body: ``, bad: "JSON object"},
		{name: "truncated", verb: peerList, body: `{"name":"w"`, bad: "peer answer"},
		{name: "no name", verb: peerList, body: `{"partitions":[],"count":0}`, bad: "member name"},
		{name: "name with space", verb: peerList, body: `{"name":"w 1","partitions":[],"count":0}`, bad: "member name"},
		{name: "name too long", verb: peerList, body: `{"name":"` + strings.Repeat("w", maxMemberName+1) + `","count":0}`, bad: "member name"},
		{name: "name not a string", verb: peerList, body: `{"name":7}`, bad: `"name"`},
		{name: "partition too high", verb: peerQuiesce, body: `{"name":"w","partitions":[8],"count":0}`, bad: "partitions"},
		{name: "partition negative", verb: peerQuiesce, body: `{"name":"w","partitions":[-1],"count":0}`, bad: "partitions"},
		{name: "partitions twice", verb: peerQuiesce, body: `{"name":"w","partitions":[1,1],"count":0}`, bad: "partitions"},
		{name: "partitions descending", verb: peerQuiesce, body: `{"name":"w","partitions":[2,1],"count":0}`, bad: "partitions"},
		{name: "negative count", verb: peerForget, body: `{"name":"w","partitions":[],"count":-1}`, bad: "negative"},
		{name: "negative unacknowledged", verb: peerList, body: `{"name":"w","partitions":[],"count":0,"unacknowledged":-2}`, bad: "negative"},
		{name: "count overflows int", verb: peerForget, body: `{"name":"w","count":1e400}`, bad: `"count"`},
		{name: "list beyond limit", verb: peerList,
			body: `{"name":"w","partitions":[],"count":3,"backends":[` + peerBackendOne + `,` + peerBackendTwo + `,` + strings.Replace(peerBackendOne, "a.one", "a.three", 1) + `]}`,
			bad:  "limit"},
		{name: "list beyond count", verb: peerList, body: `{"name":"w","partitions":[],"count":0,"backends":[` + peerBackendOne + `]}`, bad: "total"},
		{name: "list key outside match", verb: peerList,
			body: `{"name":"w","partitions":[],"count":1,"backends":[` + strings.Replace(peerBackendOne, "a.one", "b.one", 1) + `]}`, bad: "does not match"},
		{name: "bad key", verb: peerList,
			body: `{"name":"w","partitions":[],"count":1,"backends":[` + strings.Replace(peerBackendOne, "a.one", "a..one", 1) + `]}`, bad: "empty token"},
		{name: "bad state", verb: peerList,
			body: `{"name":"w","partitions":[],"count":1,"backends":[` + strings.Replace(peerBackendOne, "running", "sleeping", 1) + `]}`, bad: "state"},
		{name: "negative idle", verb: peerList,
			body: `{"name":"w","partitions":[],"count":1,"backends":[` + strings.Replace(peerBackendOne, `"idle_for_ms":5`, `"idle_for_ms":-5`, 1) + `]}`, bad: "negative"},
		{name: "get other key", verb: peerGet,
			body: `{"name":"w","partitions":[],"count":1,"backends":[` + peerBackendTwo + `]}`, bad: "one backend"},
		{name: "get count without backend", verb: peerGet, body: `{"name":"w","partitions":[],"count":1}`, bad: "one backend"},
		{name: "get two", verb: peerGet,
			body: `{"name":"w","partitions":[],"count":2,"backends":[` + peerBackendOne + `,` + peerBackendOne + `]}`, bad: "one backend"},
		{name: "quiesce with backends", verb: peerQuiesce,
			body: `{"name":"w","partitions":[],"count":1,"backends":[` + peerBackendOne + `]}`, bad: "carries backends"},
		{name: "forget with unacknowledged", verb: peerForget, body: `{"name":"w","partitions":[],"count":1,"unacknowledged":1}`, bad: "carries backends"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parsePeerAnswer([]byte(tt.body), qs[tt.verb])
			if tt.bad != "" {
				if !errors.Is(err, ErrBadPayload) || !strings.Contains(err.Error(), tt.bad) {
					t.Fatalf("parsePeerAnswer(%s) = %+v, %v; want an error wrapping ErrBadPayload with %q", tt.body, got, err, tt.bad)
				}
				return
			}
			if err != nil {
				t.Fatalf("parsePeerAnswer(%s): %v", tt.body, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parsePeerAnswer(%s) = %+v; want %+v", tt.body, got, tt.want)
			}
		})
	}
}

// FuzzParsePeerAnswer feeds hostile answers to the parser of every verb:
// it never panics, and an answer it accepts encodes and parses back to
// itself.
func FuzzParsePeerAnswer(f *testing.F) {
	for _, seed := range []string{
		`{"name":"w-1","partitions":[0,3,7],"count":5,"backends":[` + peerBackendOne + `,` + peerBackendTwo + `],"unacknowledged":1}`,
		`{"name":"w-2","partitions":[2],"count":1,"backends":[` + peerBackendOne + `]}`,
		`{"name":"w","partitions":[4],"count":12}`,
		`{"name":"w","error":"bus: worker shutting down"}`,
		`{"name":"w","partitions":[1,1],"count":0}`,
		`{"name":"w","count":1e400}`,
		`{"name":"\u0000"}`,
		`[]`, ``, `null`, `{"backends":null}`,
	} {
		f.Add([]byte(seed))
	}
	qs := peerQueries(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, verb := range peerVerbs {
			a, err := parsePeerAnswer(body, qs[verb])
			if err != nil {
				if !errors.Is(err, ErrBadPayload) {
					t.Fatalf("%s: error %v does not wrap ErrBadPayload", verb, err)
				}
				continue
			}
			again, err := parsePeerAnswer(encodePeerAnswer(a), qs[verb])
			if err != nil {
				t.Fatalf("%s: %+v encoded does not parse: %v", verb, a, err)
			}
			if !reflect.DeepEqual(normalAnswer(again), normalAnswer(a)) {
				t.Fatalf("%s: round trip of %+v gave %+v", verb, a, again)
			}
		}
	})
}

// normalAnswer makes empty slices nil, as JSON does not tell them apart
// here.
func normalAnswer(a peerAnswer) peerAnswer {
	if len(a.Partitions) == 0 {
		a.Partitions = nil
	}
	if len(a.Backends) == 0 {
		a.Backends = nil
	}
	return a
}

func TestMergeList(t *testing.T) {
	b := func(keys ...string) []BackendInfo {
		var out []BackendInfo
		for _, k := range keys {
			out = append(out, BackendInfo{Key: k, State: "running"})
		}
		return out
	}
	tests := []struct {
		name      string
		limit     int
		answers   []peerAnswer
		keys      []string
		total     int
		unacked   int
		truncated bool
	}{
		{name: "none", limit: 10, keys: []string{}},
		{name: "one member", limit: 10, answers: []peerAnswer{{Count: 2, Backends: b("a", "b"), Unacknowledged: 1}},
			keys: []string{"a", "b"}, total: 2, unacked: 1},
		{name: "interleaved", limit: 10,
			answers: []peerAnswer{{Count: 2, Backends: b("a", "c")}, {Count: 3, Backends: b("b", "d", "e"), Unacknowledged: 2}, {}},
			keys:    []string{"a", "b", "c", "d", "e"}, total: 5, unacked: 2},
		{name: "limit cuts the union", limit: 3,
			answers: []peerAnswer{{Count: 3, Backends: b("a", "c", "e")}, {Count: 5, Backends: b("b", "d", "f")}},
			keys:    []string{"a", "b", "c"}, total: 8, truncated: true},
		{name: "each member truncated, union not", limit: 2,
			answers: []peerAnswer{{Count: 1, Backends: b("a")}, {Count: 1, Backends: b("b")}},
			keys:    []string{"a", "b"}, total: 2},
		{name: "a key two members hold counts once", limit: 10,
			answers: []peerAnswer{{Count: 2, Backends: b("a", "b")}, {Count: 2, Backends: b("b", "c")}},
			keys:    []string{"a", "b", "c"}, total: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := mergeList(tt.limit, tt.answers)
			var keys []string
			for _, x := range got.Backends {
				keys = append(keys, x.Key)
			}
			if !got.OK || got.Backends == nil || !slices.Equal(keys, tt.keys) {
				t.Errorf("mergeList: got ok %v keys %v; want ok, %v", got.OK, keys, tt.keys)
			}
			if got.Total != tt.total || got.Unacknowledged != tt.unacked || got.Truncated != tt.truncated {
				t.Errorf("mergeList: got total %d unacknowledged %d truncated %v; want %d %d %v",
					got.Total, got.Unacknowledged, got.Truncated, tt.total, tt.unacked, tt.truncated)
			}
		})
	}
}

// TestMergeListModel checks mergeList against a naive model: members hold
// disjoint sets of keys and each answers with its first limit keys and its
// count; the merge is the first limit keys of the union, with the union's
// size.
func TestMergeListModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		members := rapid.IntRange(1, 4).Draw(t, "members")
		limit := rapid.IntRange(1, 6).Draw(t, "limit")
		keys := rapid.SliceOfDistinct(rapid.StringMatching(`[a-e]{1,3}`), func(s string) string { return s }).Draw(t, "keys")
		held := make([][]string, members)
		for _, k := range keys {
			m := rapid.IntRange(0, members-1).Draw(t, "holder of "+k)
			held[m] = append(held[m], k)
		}
		var answers []peerAnswer
		for _, h := range held {
			slices.Sort(h)
			a := peerAnswer{Count: len(h)}
			for _, k := range h[:min(limit, len(h))] {
				a.Backends = append(a.Backends, BackendInfo{Key: k})
			}
			answers = append(answers, a)
		}
		got := mergeList(limit, answers)
		want := slices.Sorted(slices.Values(keys))
		want = want[:min(limit, len(want))]
		var gotKeys []string
		for _, b := range got.Backends {
			gotKeys = append(gotKeys, b.Key)
		}
		if !slices.Equal(gotKeys, want) || got.Total != len(keys) || got.Truncated != (len(keys) > limit) {
			t.Fatalf("mergeList = keys %v total %d truncated %v; want %v %d %v",
				gotKeys, got.Total, got.Truncated, want, len(keys), len(keys) > limit)
		}
	})
}

func TestUncovered(t *testing.T) {
	tests := []struct {
		n       int
		answers []peerAnswer
		want    []int
	}{
		{n: 4, want: []int{0, 1, 2, 3}},
		{n: 4, answers: []peerAnswer{{Partitions: []int{0, 2}}, {Partitions: []int{1, 3}}}},
		{n: 4, answers: []peerAnswer{{Partitions: []int{0, 2}}, {Partitions: []int{2}}}, want: []int{1, 3}},
		{n: 1, answers: []peerAnswer{{Partitions: []int{0}}}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.n, tt.answers), func(t *testing.T) {
			if got := uncovered(tt.n, tt.answers); !slices.Equal(got, tt.want) {
				t.Errorf("uncovered(%d, %v) = %v; want %v", tt.n, tt.answers, got, tt.want)
			}
		})
	}
}

func TestFoundAndOwnerAnswered(t *testing.T) {
	one := BackendInfo{Key: "a.one", State: "running"}
	answers := []peerAnswer{{Partitions: []int{1, 4}}, {Partitions: []int{2}, Count: 1, Backends: []BackendInfo{one}}}
	if b, ok := found(answers); !ok || b != one {
		t.Errorf("found = %+v, %v; want %+v, true", b, ok, one)
	}
	if _, ok := found(answers[:1]); ok {
		t.Error("found in an answer without the backend; want not found")
	}
	for p, want := range map[int]bool{0: false, 1: true, 2: true, 3: false, 4: true} {
		if got := ownerAnswered(answers, p); got != want {
			t.Errorf("ownerAnswered(%d) = %v; want %v", p, got, want)
		}
	}
}
