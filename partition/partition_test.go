package partition_test

import (
	"hash/fnv"
	"math"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"pgregory.net/rapid"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/partition"
)

func TestOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		key  string
		n    int
		want int
	}{
		// FNV-1a 32-bit test vectors: "a" hashes to 0xe40c292c and
		// "foobar" to 0xbf9cf968; math.MaxInt32 leaves most of the hash.
		{"one token, whole hash", "a", math.MaxInt32, 0xe40c292c - math.MaxInt32},
		{"tokens joined without dots", "foo.bar", math.MaxInt32, 0xbf9cf968 - math.MaxInt32},
		{"one token", "a", 64, 0xe40c292c % 64},
		{"recommended key shape", "dev-7.gopls.0%2E16%2E1.9f2c", 64, 7},
		{"recommended key shape, 1024", "dev-7.gopls.0%2E16%2E1.9f2c", 1024, 199},
		{"a.bc", "a.bc", 64, 11},
		{"ab.c shares a.bc's partition", "ab.c", 64, 11},
		{"16 tokens", "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p", 1024, 501},
		{"one partition", "x", 1, 0},
	}
	for _, tt := range tests {
		if got := partition.Of(tt.key, tt.n); got != tt.want {
			t.Errorf("%s: Of(%q, %d): got %d; want %d", tt.name, tt.key, tt.n, got, tt.want)
		}
	}
}

// Of panics on n = 0, as an integer division by zero does, rather than
// returning a partition that does not exist.
func TestOfZeroPartitions(t *testing.T) {
	t.Parallel()
	defer func() {
		if recover() == nil {
			t.Error("Of(\"a\", 0) returned; want a panic")
		}
	}()
	partition.Of("a", 0)
}

func TestOfAllocs(t *testing.T) {
	key := strings.Repeat("abcdefghijklmno.", 15) + "abcdefghijklmno"
	if got := testing.AllocsPerRun(100, func() { partition.Of(key, 64) }); got != 0 {
		t.Errorf("Of: %v allocations per call; want 0", got)
	}
}

// serverPartition returns the partition and key that nats-server's own
// subject transform, given the block's mapping for key's length, routes
// P.<v>.key to: the reference Of and Mappings are checked against.
func serverPartition(t fataler, b partition.Block, s bus.Subjects, v partition.Verb, key string) (int, string) {
	t.Helper()
	k := strings.Count(key, ".") + 1
	i := k - 1
	if v == partition.State {
		i += bus.MaxKeyTokens
	}
	m := b.List()[i]
	tr, err := server.NewSubjectTransform(m.From, m.To)
	if err != nil {
		t.Fatalf("nats-server refuses mapping %q -> %q: %v", m.From, m.To, err)
	}
	src := s.Activity(key)
	if v == partition.State {
		src = s.State(key)
	}
	dest, err := tr.Match(src)
	if err != nil {
		t.Fatalf("mapping %q -> %q does not match %q: %v", m.From, m.To, src, err)
	}
	gotV, p, gotKey, ok := partition.ParseSubject(s, dest)
	if !ok || gotV != v {
		t.Fatalf("%q maps to %q; want %s under P.p.%s.<p>", src, dest, v, v)
	}
	return p, gotKey
}

// fataler is what serverPartition needs of a *testing.T or *rapid.T.
type fataler interface {
	Helper()
	Fatalf(format string, args ...any)
}

// keyGen generates valid backend keys of 1 to bus.MaxKeyTokens tokens, of
// any printable ASCII but ".", within bus.MaxKeyBytes.
func keyGen() *rapid.Generator[string] {
	var printable []rune
	for c := rune(0x21); c <= 0x7e; c++ {
		if c != '.' {
			printable = append(printable, c)
		}
	}
	token := rapid.StringOfN(rapid.RuneFrom(printable), 1, 20, -1)
	return rapid.Custom(func(t *rapid.T) string {
		toks := rapid.SliceOfN(token, 1, bus.MaxKeyTokens).Draw(t, "tokens")
		key := strings.Join(toks, ".")
		if bus.ValidateKey(key) != nil {
			t.Skip("not a valid key (too long, or a wildcard token)")
		}
		return key
	})
}

// Every valid key, for both verbs, goes where nats-server's own transform
// of the block's mapping sends it: partition Of(key, n), key intact.
func TestOfMatchesServerTransform(t *testing.T) {
	t.Parallel()
	s := bus.MustSubjects("acme.idle")
	blocks := map[int]partition.Block{}
	for _, n := range []int{1, 2, 7, 64, partition.MaxPartitions} {
		b, err := partition.Mappings(s, n)
		if err != nil {
			t.Fatal(err)
		}
		blocks[n] = b
	}
	rapid.Check(t, func(rt *rapid.T) {
		key := keyGen().Draw(rt, "key")
		n := rapid.SampledFrom([]int{1, 2, 7, 64, partition.MaxPartitions}).Draw(rt, "n")
		want := partition.Of(key, n)
		for _, v := range []partition.Verb{partition.Activity, partition.State} {
			p, got := serverPartition(rt, blocks[n], s, v, key)
			if p != want || got != key {
				rt.Fatalf("%s of %q among %d: nats-server routes to partition %d key %q; Of says %d", v, key, n, p, got, want)
			}
		}
	})
}

// FuzzOf checks any valid key against an independent FNV-1a (hash/fnv over
// the key without its dots) and the range [0, n).
func FuzzOf(f *testing.F) {
	for _, s := range []string{"a", "foo.bar", "dev-7.gopls.0%2E16%2E1.9f2c", "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p", strings.Repeat("x", 255)} {
		f.Add(s, uint32(63))
		f.Add(s, uint32(0))
		f.Add(s, uint32(math.MaxInt32-1))
	}
	f.Fuzz(func(t *testing.T, key string, m uint32) {
		if bus.ValidateKey(key) != nil {
			t.Skip()
		}
		n := int(m%math.MaxInt32) + 1 // 1..math.MaxInt32
		got := partition.Of(key, n)
		if got < 0 || got >= n {
			t.Fatalf("Of(%q, %d) = %d; want it in [0, %d)", key, n, got, n)
		}
		h := fnv.New32a()
		h.Write([]byte(strings.ReplaceAll(key, ".", "")))
		if want := int(h.Sum32() % uint32(n)); got != want {
			t.Fatalf("Of(%q, %d) = %d; hash/fnv says %d", key, n, got, want)
		}
	})
}

func BenchmarkOf(b *testing.B) {
	for _, bm := range []struct{ name, key string }{
		{"1 token", "backend-1"},
		{"recommended key", "dev-7.gopls.0%2E16%2E1.9f2c"},
		{"16 tokens 255 bytes", strings.Repeat("abcdefghijklmno.", 15) + "abcdefghijklmno"},
	} {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bm.key)))
			sum := 0
			for b.Loop() {
				sum += partition.Of(bm.key, 64)
			}
			_ = sum
		})
	}
}
