package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/partition"
)

func TestWriteMappings(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		prefix  string
		n       int
		wantVar string // "" when the block is written
	}{
		{name: "default", prefix: "idle", n: 64},
		{name: "custom", prefix: "acme.idle", n: 7},
		{name: "prefix read as a wildcard", prefix: "acme.$1", n: 64, wantVar: "IDLE_SUBJECT_PREFIX"},
		{name: "bad count", prefix: "idle", n: 0, wantVar: "IDLE_PARTITIONS"},
	}
	for _, tt := range tests {
		var b strings.Builder
		err := writeMappings(&b, config{SubjectPrefix: tt.prefix, Partitions: tt.n})
		if tt.wantVar != "" {
			var ce *configError
			if !errors.As(err, &ce) || ce.Var != tt.wantVar {
				t.Errorf("%s: got %v; want a configError naming %s", tt.name, err, tt.wantVar)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		block, err := partition.Mappings(bus.MustSubjects(tt.prefix), tt.n)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := b.String(), block.Config(); got != want {
			t.Errorf("%s: wrote\n%s\nwant\n%s", tt.name, got, want)
		}
	}
}
