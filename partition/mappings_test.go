package partition_test

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/conf"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/partition"
)

// The block has one mapping per verb and key length, in order, and
// nats-server accepts each.
func TestMappings(t *testing.T) {
	t.Parallel()
	s := bus.MustSubjects("acme.idle")
	b, err := partition.Mappings(s, 64)
	if err != nil {
		t.Fatal(err)
	}
	if b.Prefix() != "acme.idle" || b.Partitions() != 64 {
		t.Errorf("got prefix %q, %d partitions; want acme.idle, 64", b.Prefix(), b.Partitions())
	}
	list := b.List()
	if len(list) != 2*bus.MaxKeyTokens {
		t.Fatalf("got %d mappings; want %d", len(list), 2*bus.MaxKeyTokens)
	}
	want := map[int]partition.Mapping{
		0:                {"acme.idle.activity.*", "acme.idle.p.activity.{{partition(64,1)}}.{{wildcard(1)}}"},
		1:                {"acme.idle.activity.*.*", "acme.idle.p.activity.{{partition(64,1,2)}}.{{wildcard(1)}}.{{wildcard(2)}}"},
		bus.MaxKeyTokens: {"acme.idle.state.*", "acme.idle.p.state.{{partition(64,1)}}.{{wildcard(1)}}"},
		2*bus.MaxKeyTokens - 1: {
			"acme.idle.state.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*",
			"acme.idle.p.state.{{partition(64,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16)}}" +
				".{{wildcard(1)}}.{{wildcard(2)}}.{{wildcard(3)}}.{{wildcard(4)}}.{{wildcard(5)}}.{{wildcard(6)}}.{{wildcard(7)}}.{{wildcard(8)}}" +
				".{{wildcard(9)}}.{{wildcard(10)}}.{{wildcard(11)}}.{{wildcard(12)}}.{{wildcard(13)}}.{{wildcard(14)}}.{{wildcard(15)}}.{{wildcard(16)}}",
		},
	}
	for i, m := range list {
		if w, ok := want[i]; ok && m != w {
			t.Errorf("mapping %d: got %q -> %q; want %q -> %q", i, m.From, m.To, w.From, w.To)
		}
		k := i%bus.MaxKeyTokens + 1
		if got := strings.Count(m.From, "*"); got != k {
			t.Errorf("mapping %d: source %q has %d wildcards; want %d", i, m.From, got, k)
		}
		if err := server.ValidateMapping(m.From, m.To); err != nil {
			t.Errorf("mapping %d: nats-server refuses %q -> %q: %v", i, m.From, m.To, err)
		}
	}
	list[0].From = "changed"
	if b.List()[0].From == "changed" {
		t.Error("List returns the block's own slice; want a copy")
	}
}

func TestMappingsErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		prefix string
		n      int
		want   error // nil: accepted
	}{
		{"one partition", "idle", 1, nil},
		{"most partitions", "idle", partition.MaxPartitions, nil},
		{"no partition", "idle", 0, partition.ErrBadCount},
		{"negative", "idle", -1, partition.ErrBadCount},
		{"too many", "idle", partition.MaxPartitions + 1, partition.ErrBadCount},
		{"$ and a number", "acme.$1", 64, partition.ErrUnmappable},
		{"$ and a signed number", "$-2.idle", 64, partition.ErrUnmappable},
		{"a mapping function", "acme.{{wildcard(1)}}", 64, partition.ErrUnmappable},
		{"any {{…}}", "{{x}}", 64, partition.ErrUnmappable},
		{"both quotes", `a"b'c`, 64, partition.ErrUnmappable},
		{"$ and a word", "$SYS.idle", 64, nil},
		{"a lone $", "$.idle", 64, nil},
		{"short braces", "{{}}", 64, nil},
		{"a double quote", `a"b`, 64, nil},
		{"a single quote", `a'b`, 64, nil},
		{"a backslash", `a\b`, 64, nil},
		{"comment characters", "#x.x//y", 64, nil},
	}
	for _, tt := range tests {
		b, err := partition.Mappings(bus.MustSubjects(tt.prefix), tt.n)
		switch {
		case tt.want == nil && err != nil:
			t.Errorf("%s: Mappings(%q, %d): %v; want the mappings", tt.name, tt.prefix, tt.n, err)
		case tt.want != nil && !errors.Is(err, tt.want):
			t.Errorf("%s: Mappings(%q, %d): got %v; want an error wrapping %v", tt.name, tt.prefix, tt.n, err, tt.want)
		case tt.want == nil:
			// nats-server takes every accepted prefix literally.
			for _, m := range b.List() {
				if err := server.ValidateMapping(m.From, m.To); err != nil {
					t.Errorf("%s: nats-server refuses %q -> %q: %v", tt.name, m.From, m.To, err)
				}
			}
			s := bus.MustSubjects(tt.prefix)
			key := "a.b.c"
			if p, got := serverPartition(t, b, s, partition.State, key); p != partition.Of(key, tt.n) || got != key {
				t.Errorf("%s: %q maps to partition %d key %q; want %d, %q", tt.name, s.State(key), p, got, partition.Of(key, tt.n), key)
			}
		}
	}
}

// parsed returns the mappings of a configuration parsed by nats-server's
// own parser, at path (a chain of map keys).
func parsed(t *testing.T, config string, path ...string) map[string]string {
	t.Helper()
	m, err := conf.Parse(config)
	if err != nil {
		t.Fatalf("nats-server cannot parse the block: %v\n%s", err, config)
	}
	var cur any = m
	for _, k := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			t.Fatalf("at %q: got %T; want a map", k, cur)
		}
		if cur, ok = mm[k]; !ok {
			t.Fatalf("no key %q in %v", k, slices.Collect(maps.Keys(mm)))
		}
	}
	mm, ok := cur.(map[string]any)
	if !ok {
		t.Fatalf("mappings: got %T; want a map", cur)
	}
	out := map[string]string{}
	for k, v := range mm {
		s, ok := v.(string)
		if !ok {
			t.Fatalf("mapping %q: got %T; want a string", k, v)
		}
		out[k] = s
	}
	return out
}

// nats-server's configuration parser reads back exactly the mappings, in
// both forms, whatever printable characters the prefix has.
func TestConfigParses(t *testing.T) {
	t.Parallel()
	for _, prefix := range []string{"idle", "acme.idle", `a"b`, `a'b`, `a\b.c\"`, "#x.x//y", "$SYS.{a}", "x;y.z,w"} {
		b, err := partition.Mappings(bus.MustSubjects(prefix), 8)
		if err != nil {
			t.Fatalf("Mappings(%q): %v", prefix, err)
		}
		want := map[string]string{}
		for _, m := range b.List() {
			want[m.From] = m.To
		}
		if got := parsed(t, b.Config(), "mappings"); !maps.Equal(got, want) {
			t.Errorf("prefix %q: Config parses to %d mappings %v; want %d %v", prefix, len(got), got, len(want), want)
		}
		for _, account := range []string{"IDLE", "my account", `a"b`} {
			c, err := b.AccountConfig(account)
			if err != nil {
				t.Fatalf("AccountConfig(%q): %v", account, err)
			}
			if got := parsed(t, c, "accounts", account, "mappings"); !maps.Equal(got, want) {
				t.Errorf("prefix %q, account %q: AccountConfig parses to %v; want %v", prefix, account, got, want)
			}
		}
	}
}

func TestAccountConfigErrors(t *testing.T) {
	t.Parallel()
	b, err := partition.Mappings(bus.MustSubjects("idle"), 8)
	if err != nil {
		t.Fatal(err)
	}
	for _, account := range []string{"", `a"b'c`} {
		if _, err := b.AccountConfig(account); !errors.Is(err, partition.ErrUnmappable) {
			t.Errorf("AccountConfig(%q): got %v; want an error wrapping ErrUnmappable", account, err)
		}
	}
}

func ExampleMappings() {
	b, err := partition.Mappings(bus.MustSubjects("idle"), 64)
	if err != nil {
		panic(err)
	}
	for _, m := range b.List()[:2] {
		fmt.Printf("%s -> %s\n", m.From, m.To)
	}
	fmt.Println(partition.Subject(bus.MustSubjects("idle"), partition.Activity, partition.Of("dev-7.gopls", 64), "dev-7.gopls"))
	// Output:
	// idle.activity.* -> idle.p.activity.{{partition(64,1)}}.{{wildcard(1)}}
	// idle.activity.*.* -> idle.p.activity.{{partition(64,1,2)}}.{{wildcard(1)}}.{{wildcard(2)}}
	// idle.p.activity.47.dev-7.gopls
}
