package bus_test

import (
	"encoding/json"
	"errors"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/micro"

	"github.com/idle-worker/idle-worker/bus"
)

func TestNewSubjects(t *testing.T) {
	tests := []struct {
		name       string
		prefix     string
		wantPrefix string
		wantErr    bool
	}{
		{name: "empty means default", prefix: "", wantPrefix: "idle"},
		{name: "default", prefix: "idle", wantPrefix: "idle"},
		{name: "two tokens", prefix: "acme.idle", wantPrefix: "acme.idle"},
		{name: "sixteen tokens", prefix: strings.Repeat("a.", 15) + "a", wantPrefix: strings.Repeat("a.", 15) + "a"},
		{name: "punctuation in a token", prefix: "a-b_c$d", wantPrefix: "a-b_c$d"},
		{name: "seventeen tokens", prefix: strings.Repeat("a.", 16) + "a", wantErr: true},
		{name: "star token", prefix: "acme.*", wantErr: true},
		{name: "gt token", prefix: "acme.>", wantErr: true},
		{name: "leading dot", prefix: ".idle", wantErr: true},
		{name: "trailing dot", prefix: "idle.", wantErr: true},
		{name: "double dot", prefix: "acme..idle", wantErr: true},
		{name: "space", prefix: "ac me", wantErr: true},
		{name: "tab", prefix: "idle\t", wantErr: true},
		{name: "non-ASCII", prefix: "idlé", wantErr: true},
		{name: "too long", prefix: strings.Repeat("x", 256), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := bus.NewSubjects(tt.prefix)
			if tt.wantErr {
				if !errors.Is(err, bus.ErrBadKey) {
					t.Fatalf("NewSubjects(%q) = %q, %v; want an error wrapping ErrBadKey", tt.prefix, s.Prefix(), err)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewSubjects(%q): %v", tt.prefix, err)
			}
			if got := s.Prefix(); got != tt.wantPrefix {
				t.Errorf("Prefix() = %q; want %q", got, tt.wantPrefix)
			}
		})
	}
}

func TestMustSubjectsPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("MustSubjects(\"a.*\") did not panic")
		}
	}()
	bus.MustSubjects("a.*")
}

func TestSubjectBuilders(t *testing.T) {
	idle := bus.MustSubjects("idle")
	acme := bus.MustSubjects("acme.idle")
	const key = "dev-7.gopls.0%2E16%2E1.9f2c"
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"Activity", idle.Activity(key), "idle.activity." + key},
		{"State", idle.State(key), "idle.state." + key},
		{"Quiesce", idle.Quiesce(key), "idle.quiesce." + key},
		{"Quiesce pattern", idle.Quiesce(">"), "idle.quiesce.>"},
		{"AdminList", idle.AdminList(), "idle.admin.list"},
		{"AdminGet", idle.AdminGet(), "idle.admin.get"},
		{"AdminQuiesce", idle.AdminQuiesce(), "idle.admin.quiesce"},
		{"AdminForget", idle.AdminForget(), "idle.admin.forget"},
		{"AdminMembers", idle.AdminMembers(), "idle.admin.members"},
		{"AdminGroup", idle.AdminGroup(), "idle.admin"},
		{"Store", idle.Store("own.3"), "idle.store.own.3"},
		{"Activity two-token prefix", acme.Activity("k"), "acme.idle.activity.k"},
		{"State two-token prefix", acme.State("k"), "acme.idle.state.k"},
		{"Quiesce two-token prefix", acme.Quiesce("k"), "acme.idle.quiesce.k"},
		{"AdminList two-token prefix", acme.AdminList(), "acme.idle.admin.list"},
		{"AdminGet two-token prefix", acme.AdminGet(), "acme.idle.admin.get"},
		{"AdminQuiesce two-token prefix", acme.AdminQuiesce(), "acme.idle.admin.quiesce"},
		{"AdminGroup two-token prefix", acme.AdminGroup(), "acme.idle.admin"},
		{"AdminMembers two-token prefix", acme.AdminMembers(), "acme.idle.admin.members"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %q; want %q", tt.got, tt.want)
			}
		})
	}
}

func TestSubjectKeyCutters(t *testing.T) {
	s := bus.MustSubjects("acme.idle")
	cutters := map[string]func(string) (string, bool){
		"activity": s.ActivityKey,
		"state":    s.StateKey,
		"quiesce":  s.QuiesceKey,
	}
	tests := []struct {
		name    string
		cutter  string
		subject string
		wantKey string
		wantOK  bool
	}{
		{"activity key", "activity", "acme.idle.activity.a.b", "a.b", true},
		{"state key", "state", "acme.idle.state.a.b", "a.b", true},
		{"quiesce key", "quiesce", "acme.idle.quiesce.a.b", "a.b", true},
		{"empty key is cut, not judged", "activity", "acme.idle.activity.", "", true},
		{"no dot before key", "activity", "acme.idle.activity", "", false},
		{"other kind", "activity", "acme.idle.state.a", "", false},
		{"state is not activity", "state", "acme.idle.activity.a", "", false},
		{"quiesce is not state", "quiesce", "acme.idle.state.a", "", false},
		{"other prefix", "activity", "idle.activity.a", "", false},
		{"prefix is a prefix of a token", "activity", "acme.idlex.activity.a", "", false},
		{"kind is a prefix of a token", "activity", "acme.idle.activityx.a", "", false},
		{"empty subject", "state", "", "", false},
		{"admin subject", "quiesce", "acme.idle.admin.quiesce", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, ok := cutters[tt.cutter](tt.subject)
			if key != tt.wantKey || ok != tt.wantOK {
				t.Errorf("%sKey(%q) = %q, %v; want %q, %v", tt.cutter, tt.subject, key, ok, tt.wantKey, tt.wantOK)
			}
		})
	}
}

// TestSubjectsRoundTrip checks that each cutter inverts its builder.
func TestSubjectsRoundTrip(t *testing.T) {
	s := bus.MustSubjects("idle")
	for _, key := range []string{"a", "a.b.c", "dev-7.gopls.0%2E16%2E1.9f2c"} {
		if got, ok := s.ActivityKey(s.Activity(key)); !ok || got != key {
			t.Errorf("ActivityKey(Activity(%q)) = %q, %v; want %q, true", key, got, ok, key)
		}
		if got, ok := s.StateKey(s.State(key)); !ok || got != key {
			t.Errorf("StateKey(State(%q)) = %q, %v; want %q, true", key, got, ok, key)
		}
		if got, ok := s.QuiesceKey(s.Quiesce(key)); !ok || got != key {
			t.Errorf("QuiesceKey(Quiesce(%q)) = %q, %v; want %q, true", key, got, ok, key)
		}
	}
}

// TestSubjectsDocumented keeps subjects.md, the wire contract, in step with
// the code: every subject the code builds must be a row of the document's
// subject table, every row must be a subject the code builds, and every
// P.admin.<x> the document names must be an endpoint a running worker
// serves (and the other way round).
func TestSubjectsDocumented(t *testing.T) {
	raw, err := os.ReadFile("../subjects.md")
	if err != nil {
		t.Fatal(err)
	}
	s := bus.MustSubjects("idle")
	for _, p := range documentationProblems(string(raw), builtSubjects(t, s), servedAdminSubjects(t, s)) {
		t.Error(p)
	}
}

// TestDocumentationProblems shows that TestSubjectsDocumented can fail: it
// feeds documentationProblems a contract with a row missing, a row too many
// and an admin endpoint no worker serves.
func TestDocumentationProblems(t *testing.T) {
	built := []string{"P.activity.K", "P.state.K", "P.quiesce.K", "P.admin.list", "P.admin.get", "P.admin.quiesce"}
	served := map[string]bool{"P.admin.list": true, "P.admin.get": true, "P.admin.quiesce": true}
	const good = "| subject | who |\n|---|---|\n" +
		"| `P.activity.K` | backends |\n| `P.state.K` | brokers |\n| `P.quiesce.K` | worker |\n" +
		"| `P.admin.list` | operators |\n| `P.admin.get` | operators |\n| `P.admin.quiesce` | operators |\n"
	tests := []struct {
		name string
		doc  string
		want []string // substrings of the problems, in order; none for a good document
	}{
		{name: "good", doc: good},
		{name: "row missing", doc: strings.Replace(good, "| `P.state.K` | brokers |\n", "", 1),
			want: []string{"P.state.K is built by bus but missing"}},
		{name: "row renamed", doc: strings.Replace(good, "`P.activity.K`", "`P.activity.KEY`", 1),
			want: []string{"P.activity.K is built by bus but missing", "documents P.activity.KEY, which bus does not build"}},
		{name: "unserved endpoint in prose", doc: good + "\nUse `P.admin.purge` to forget everything.\n",
			want: []string{"names P.admin.purge, but the worker serves no such endpoint"}},
		{name: "served endpoint undocumented", doc: strings.Replace(good, "| `P.admin.get` | operators |\n", "", 1),
			want: []string{"P.admin.get is built by bus but missing", "the worker serves P.admin.get, which subjects.md does not document"}},
		{name: "no table", doc: "nothing here", want: []string{"no subject table rows"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := documentationProblems(tt.doc, built, served)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d problems %q; want %d like %q", len(got), got, len(tt.want), tt.want)
			}
			for i := range got {
				if !strings.Contains(got[i], tt.want[i]) {
					t.Errorf("problem %d = %q; want it to contain %q", i, got[i], tt.want[i])
				}
			}
		})
	}
}

// builtSubjects returns the subjects s builds, written as the contract
// writes them: prefix P, backend key K.
func builtSubjects(t *testing.T, s bus.Subjects) []string {
	t.Helper()
	generic := func(subject string) string {
		rest, ok := strings.CutPrefix(subject, s.Prefix()+".")
		if !ok {
			t.Fatalf("subject %q does not start with %q", subject, s.Prefix()+".")
		}
		return "P." + rest
	}
	return []string{
		generic(s.Activity("K")),
		generic(s.State("K")),
		generic(s.Quiesce("K")),
		generic(s.AdminList()),
		generic(s.AdminGet()),
		generic(s.AdminQuiesce()),
		generic(s.AdminForget()),
		generic(s.AdminMembers()),
		generic(s.Store(">")),
	}
}

var (
	// rowRE finds the rows of the subject table: | `P.x.y` | ...
	rowRE = regexp.MustCompile("(?m)^\\|\\s*`(P\\.[^`]*)`\\s*\\|")
	// adminRE finds every `P.admin.<x>` in the document.
	adminRE = regexp.MustCompile("`(P\\.admin\\.[^`\\s]+)`")
)

// documentationProblems compares the contract doc with the subjects bus
// builds and the admin endpoints a worker serves.
func documentationProblems(doc string, built []string, served map[string]bool) []string {
	var problems []string
	var rows []string
	for _, m := range rowRE.FindAllStringSubmatch(doc, -1) {
		rows = append(rows, m[1])
	}
	if len(rows) == 0 {
		return []string{"subjects.md has no subject table rows like | `P.activity.K` |"}
	}
	for _, subj := range built {
		if !slices.Contains(rows, subj) {
			problems = append(problems, "subject "+subj+" is built by bus but missing from the table in subjects.md")
		}
	}
	for _, row := range rows {
		if !slices.Contains(built, row) {
			problems = append(problems, "subjects.md documents "+row+", which bus does not build")
		}
	}
	documented := map[string]bool{}
	for _, m := range adminRE.FindAllStringSubmatch(doc, -1) {
		documented[m[1]] = true
	}
	for _, subj := range sortedKeys(documented) {
		if !served[subj] {
			problems = append(problems, "subjects.md names "+subj+", but the worker serves no such endpoint (it serves "+strings.Join(sortedKeys(served), ", ")+")")
		}
	}
	for _, subj := range sortedKeys(served) {
		if !documented[subj] {
			problems = append(problems, "the worker serves "+subj+", which subjects.md does not document")
		}
	}
	return problems
}

// servedAdminSubjects runs a worker and asks its micro service (INFO) which
// endpoints it serves, as P.admin.<x>.
func servedAdminSubjects(t *testing.T, s bus.Subjects) map[string]bool {
	t.Helper()
	e := newEnv(t, bus.WorkerConfig{Subjects: s})
	nc, err := e.Connect()
	if err != nil {
		t.Fatal(err)
	}
	subject, err := micro.ControlSubject(micro.InfoVerb, bus.ServiceName, "")
	if err != nil {
		t.Fatal(err)
	}
	msg, err := nc.Request(subject, nil, waitBound)
	if err != nil {
		t.Fatalf("request %s: %v", subject, err)
	}
	var info micro.Info
	if err := json.Unmarshal(msg.Data, &info); err != nil {
		t.Fatalf("decoding service info %s: %v", msg.Data, err)
	}
	served := map[string]bool{}
	for _, ep := range info.Endpoints {
		rest, ok := strings.CutPrefix(ep.Subject, s.Prefix()+".")
		if !ok {
			t.Fatalf("endpoint %s has subject %q outside prefix %q", ep.Name, ep.Subject, s.Prefix())
		}
		served["P."+rest] = true
	}
	if len(served) == 0 {
		t.Fatalf("service info %s lists no endpoints", msg.Data)
	}
	return served
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
