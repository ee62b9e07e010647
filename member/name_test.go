package member_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/idle-worker/idle-worker/member"
)

func TestCheckName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"worker-1", true},
		{"db-1.example_COM-k3x9qa", true},
		{strings.Repeat("x", member.MaxNameLen), true},
		{"", false},
		{strings.Repeat("x", member.MaxNameLen+1), false},
		{"has space", false},
		{"star*", false},
		{"gt>", false},
		{"slash/", false},
		{"ünïcode", false},
		{"nul\x00", false},
		{"new\nline", false},
	}
	for _, tt := range tests {
		err := member.CheckName(tt.name)
		if (err == nil) != tt.ok {
			t.Errorf("CheckName(%q) = %v; want ok %v", tt.name, err, tt.ok)
		}
		if err != nil && !errors.Is(err, member.ErrBadName) {
			t.Errorf("CheckName(%q) = %v; want it to wrap ErrBadName", tt.name, err)
		}
	}
}

func TestDefaultName(t *testing.T) {
	a, b := member.DefaultName(), member.DefaultName()
	for _, n := range []string{a, b} {
		if err := member.CheckName(n); err != nil {
			t.Errorf("DefaultName() = %q: %v", n, err)
		}
	}
	if a == b {
		t.Errorf("DefaultName() twice = %q; want two names", a)
	}
	i, j := strings.LastIndexByte(a, '-'), strings.LastIndexByte(b, '-')
	if i < 1 || j < 1 || a[:i] != b[:j] {
		t.Errorf("DefaultName() = %q and %q; want one host part and two suffixes", a, b)
	}
}
