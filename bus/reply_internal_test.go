package bus

import (
	"errors"
	"testing"
)

func TestReplyFilterAllow(t *testing.T) {
	f, err := newReplyFilter(nil, MustSubjects("idle"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		reply string
		want  bool
	}{
		{"_INBOX.abc.def", true},
		{"_INBOX_backend-dev-7.xyz", true},
		{"_INBOX_operator.abc.1", true},
		{"", false},
		{"idle.state.dev-8.gopls.1.bb", false},
		{"idle.quiesce.dev-8.x", false},
		{"idle.activity.x", false},
		{"$KV.idle_registry.m.hwm", false},
		{"$JS.API.STREAM.DELETE.IDLE_QUIESCE", false},
		{"$SYS.REQ.SERVER.PING", false},
		{"$O.bucket.x", false},
		{"other.subject", false},
		{"_INBOX", false},
		{"_INBOX.>", false},
		{"_INBOX.*", false},
		{"_INBOX.a b", false},
		{"_inbox.lower", false},
	}
	for _, tt := range tests {
		if got := f.allow(tt.reply); got != tt.want {
			t.Errorf("allow(%q) = %v; want %v", tt.reply, got, tt.want)
		}
	}
}

// TestReplyFilterNeverOwnOrDollar: configured prefixes cannot reopen the
// worker's own subjects or $-subjects.
func TestReplyFilterConfig(t *testing.T) {
	subj := MustSubjects("acme.idle")
	tests := []struct {
		name     string
		prefixes []string
		wantErr  bool
	}{
		{"default", nil, false},
		{"custom inboxes", []string{"_R.", "replies."}, false},
		{"empty list", []string{}, true},
		{"empty prefix", []string{""}, true},
		{"dollar", []string{"$KV."}, true},
		{"own prefix", []string{"acme.idle."}, true},
		{"covers own prefix", []string{"acme."}, true},
		{"under own prefix", []string{"acme.idle.state."}, true},
		{"wildcard", []string{"_INBOX.*"}, true},
		{"space", []string{"_IN BOX."}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := newReplyFilter(tt.prefixes, subj)
			if (err != nil) != tt.wantErr {
				t.Fatalf("newReplyFilter(%q): %v; want error %v", tt.prefixes, err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrBadKey) {
				t.Errorf("error %v does not wrap ErrBadKey", err)
			}
		})
	}
	f, err := newReplyFilter([]string{"replies."}, subj)
	if err != nil {
		t.Fatal(err)
	}
	for reply, want := range map[string]bool{"replies.1": true, "_INBOX.1": false, "acme.idle.state.x": false} {
		if got := f.allow(reply); got != want {
			t.Errorf("custom filter allow(%q) = %v; want %v", reply, got, want)
		}
	}
}
