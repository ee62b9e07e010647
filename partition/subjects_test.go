package partition_test

import (
	"testing"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/partition"
)

func TestSubject(t *testing.T) {
	t.Parallel()
	tests := []struct {
		prefix string
		v      partition.Verb
		p      int
		key    string
		want   string
	}{
		{"idle", partition.Activity, 7, "dev-7.gopls", "idle.p.activity.7.dev-7.gopls"},
		{"idle", partition.State, 0, "a", "idle.p.state.0.a"},
		{"acme.idle", partition.Activity, 1023, ">", "acme.idle.p.activity.1023.>"},
	}
	for _, tt := range tests {
		if got := partition.Subject(bus.MustSubjects(tt.prefix), tt.v, tt.p, tt.key); got != tt.want {
			t.Errorf("Subject(%q, %s, %d, %q): got %q; want %q", tt.prefix, tt.v, tt.p, tt.key, got, tt.want)
		}
	}
}

func TestParseSubject(t *testing.T) {
	t.Parallel()
	s := bus.MustSubjects("acme.idle")
	tests := []struct {
		subject string
		ok      bool
		v       partition.Verb
		p       int
		key     string
	}{
		{subject: "acme.idle.p.activity.7.dev-7.gopls", ok: true, v: partition.Activity, p: 7, key: "dev-7.gopls"},
		{subject: "acme.idle.p.state.0.a", ok: true, v: partition.State, p: 0, key: "a"},
		{subject: "acme.idle.p.state.1023.a.b.c", ok: true, v: partition.State, p: 1023, key: "a.b.c"},
		// A subscription subject.
		{subject: "acme.idle.p.state.5.>", ok: true, v: partition.State, p: 5, key: ">"},
		{subject: "acme.idle.p.activity.1024.a"},  // not below MaxPartitions
		{subject: "acme.idle.p.activity.99999.a"}, // too long
		{subject: "acme.idle.p.activity.07.a"},    // not as Itoa writes it
		{subject: "acme.idle.p.activity.-1.a"},    // not a number
		{subject: "acme.idle.p.activity.x.a"},     // not a number
		{subject: "acme.idle.p.activity..a"},      // empty partition
		{subject: "acme.idle.p.activity.7"},       // no key
		{subject: "acme.idle.p.activity.7."},      // empty key
		{subject: "acme.idle.p.activityx.7.a"},    // another verb
		{subject: "acme.idle.p.quiesce.7.a"},      // another verb
		{subject: "acme.idle.p.activity"},         // nothing after the verb
		{subject: "acme.idle.activity.a"},         // the unmapped subject
		{subject: "acme.idlex.p.activity.7.a"},    // another prefix
		{subject: "idle.p.activity.7.a"},          // another prefix
		{subject: "acme.idle.q.activity.7.a"},     // another namespace
		{subject: "acme.idle.p"},                  // too short
		{subject: ""},                             // empty
	}
	for _, tt := range tests {
		v, p, key, ok := partition.ParseSubject(s, tt.subject)
		if ok != tt.ok || v != tt.v || p != tt.p || key != tt.key {
			t.Errorf("ParseSubject(%q): got %q, %d, %q, %v; want %q, %d, %q, %v", tt.subject, v, p, key, ok, tt.v, tt.p, tt.key, tt.ok)
		}
	}
}

// Every partition's subject parses back to itself, for both verbs.
func TestSubjectRoundTrip(t *testing.T) {
	t.Parallel()
	s := bus.MustSubjects("idle")
	for _, v := range []partition.Verb{partition.Activity, partition.State} {
		for p := range partition.MaxPartitions {
			gotV, gotP, key, ok := partition.ParseSubject(s, partition.Subject(s, v, p, "k.1"))
			if !ok || gotV != v || gotP != p || key != "k.1" {
				t.Fatalf("ParseSubject(Subject(%s, %d, \"k.1\")): got %q, %d, %q, %v", v, p, gotV, gotP, key, ok)
			}
		}
	}
}

func TestParseSubjectAllocs(t *testing.T) {
	s := bus.MustSubjects("acme.idle")
	subject := partition.Subject(s, partition.State, 63, "dev-7.gopls.0%2E16%2E1.9f2c")
	if got := testing.AllocsPerRun(100, func() { partition.ParseSubject(s, subject) }); got != 0 {
		t.Errorf("ParseSubject: %v allocations per call; want 0", got)
	}
}
