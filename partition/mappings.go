package partition

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/idle-worker/idle-worker/bus"
)

// Sentinel errors. Errors returned by this package wrap one of them; test
// with errors.Is.
var (
	// ErrBadCount: a partition count outside 1..MaxPartitions.
	ErrBadCount = errors.New("partition: bad partition count")
	// ErrUnmappable: a prefix or account name that a mapping or a
	// nats-server configuration file cannot carry as it is.
	ErrUnmappable = errors.New("partition: cannot be written as a mapping")
)

// Mapping is one nats-server subject mapping: a message published on a
// subject that From matches is delivered instead on the subject that To
// makes of it.
type Mapping struct {
	// From is the source: P.<verb> followed by one "*" per key token.
	From string
	// To is the destination: P.p.<verb>.{{partition(n,1,…,k)}} followed by
	// {{wildcard(1)}} … {{wildcard(k)}}.
	To string
}

// Block is the mappings that partition one prefix: see Mappings.
type Block struct {
	prefix string
	n      int
	list   []Mapping
}

// Mappings returns the mappings that route the heartbeats and state reports
// of every key of 1 to bus.MaxKeyTokens tokens under s's prefix to the key's
// partition among n (1..MaxPartitions): P.activity.K to
// Subject(s, Activity, Of(K, n), K), P.state.K to Subject(s, State, …).
// Errors wrap ErrBadCount, or ErrUnmappable for a prefix with a token that
// nats-server reads as a placeholder in a destination ($1, {{…}}) or with
// both kinds of quote, which no configuration file can carry.
func Mappings(s bus.Subjects, n int) (Block, error) {
	if n < 1 || n > MaxPartitions {
		return Block{}, fmt.Errorf("%w: %d is not in 1..%d", ErrBadCount, n, MaxPartitions)
	}
	prefix := s.Prefix()
	for tok := range strings.SplitSeq(prefix, ".") {
		if placeholder(tok) {
			return Block{}, fmt.Errorf("%w: prefix %q: nats-server reads its token %q in a mapping's destination as a wildcard or function", ErrUnmappable, prefix, tok)
		}
	}
	if _, ok := quoteKey(prefix); !ok {
		return Block{}, fmt.Errorf("%w: prefix %q has both \" and ', so a configuration file cannot quote it", ErrUnmappable, prefix)
	}
	b := Block{prefix: prefix, n: n, list: make([]Mapping, 0, 2*bus.MaxKeyTokens)}
	for _, v := range verbs() {
		var wildcards, indexes, copies strings.Builder
		for k := 1; k <= bus.MaxKeyTokens; k++ {
			if k > 1 {
				wildcards.WriteString(".")
				copies.WriteString(".")
			}
			wildcards.WriteString("*")
			fmt.Fprintf(&indexes, ",%d", k)
			fmt.Fprintf(&copies, "{{wildcard(%d)}}", k)
			b.list = append(b.list, Mapping{
				From: source(s, v, wildcards.String()),
				To:   subject(s, v, "{{partition("+strconv.Itoa(n)+indexes.String()+")}}", copies.String()),
			})
		}
	}
	return b, nil
}

// source returns the subject where v's messages for key are published.
func source(s bus.Subjects, v Verb, key string) string {
	if v == State {
		return s.State(key)
	}
	return s.Activity(key)
}

// subject is Subject with the partition token given as a string.
func subject(s bus.Subjects, v Verb, p, key string) string {
	return s.Prefix() + "." + space + "." + string(v) + "." + p + "." + key
}

// placeholder reports whether nats-server reads tok, as a token of a
// mapping's destination, as a placeholder rather than a literal:
// indexPlaceHolders in server/subject_transform.go (v2.15.2, :241-247 for
// "$" and a number, :251 for "{{…}}").
func placeholder(tok string) bool {
	if len(tok) > 1 && tok[0] == '$' {
		if _, err := strconv.Atoi(tok[1:]); err == nil {
			return true
		}
	}
	return len(tok) > 4 && strings.HasPrefix(tok, "{{") && strings.HasSuffix(tok, "}}")
}

// Prefix returns the prefix P the mappings are for.
func (b Block) Prefix() string { return b.prefix }

// Partitions returns the partition count n.
func (b Block) Partitions() int { return b.n }

// List returns the mappings: Activity's for keys of 1 to bus.MaxKeyTokens
// tokens, then State's. To load them into a running server, pass each to
// (*server.Account).AddMapping.
func (b Block) List() []Mapping { return slices.Clone(b.list) }

// Config returns the mappings as a block of nats-server configuration for
// the global account (servers without accounts), with a comment heading:
//
//	mappings {
//	  "P.activity.*": "P.p.activity.{{partition(n,1)}}.{{wildcard(1)}}"
//	  …
//	}
//
// Every server that clients connect to needs it.
func (b Block) Config() string {
	var w strings.Builder
	b.heading(&w)
	b.body(&w, "")
	return w.String()
}

// AccountConfig returns the mappings as a nats-server accounts block for
// the account named account, to merge into the configuration's accounts
// block:
//
//	accounts {
//	  "NAME" {
//	    mappings { … }
//	  }
//	}
//
// Errors wrap ErrUnmappable when the name is empty or cannot be quoted.
func (b Block) AccountConfig(account string) (string, error) {
	name, ok := quoteKey(account)
	if account == "" || !ok {
		return "", fmt.Errorf("%w: account name %q", ErrUnmappable, account)
	}
	var w strings.Builder
	b.heading(&w)
	fmt.Fprintf(&w, "accounts {\n  %s {\n", name)
	b.body(&w, "    ")
	w.WriteString("  }\n}\n")
	return w.String(), nil
}

// heading writes the comment that opens both forms of the block.
func (b Block) heading(w *strings.Builder) {
	fmt.Fprintf(w, "# Subject mappings of idle-worker: prefix %q, %d partitions, keys of 1 to %d tokens.\n", b.prefix, b.n, bus.MaxKeyTokens)
	fmt.Fprintf(w, "# They deliver %s.activity.K and %s.state.K on %s.%s.<activity|state>.<partition>.K instead,\n", b.prefix, b.prefix, b.prefix, space)
	fmt.Fprintf(w, "# so a subscriber to %s.activity.> sees them no more. Every nats-server that clients\n", b.prefix)
	w.WriteString("# connect to needs them: a mapping applies where a message enters.\n")
}

// body writes the mappings block, each line indented by indent.
func (b Block) body(w *strings.Builder, indent string) {
	w.WriteString(indent + "mappings {\n")
	for _, m := range b.list {
		from, _ := quoteKey(m.From) // Mappings checked the prefix
		fmt.Fprintf(w, "%s  %s: %s\n", indent, from, quoteValue(m.To))
	}
	w.WriteString(indent + "}\n")
}

// quoteKey quotes s as a key of a nats-server configuration file, where a
// quoted key has no escapes: in double quotes, or in single quotes if s has
// a double quote. It is false when s has both.
func quoteKey(s string) (string, bool) {
	switch {
	case !strings.Contains(s, `"`):
		return `"` + s + `"`, true
	case !strings.Contains(s, `'`):
		return `'` + s + `'`, true
	}
	return "", false
}

// quoteValue quotes s as a string value of a nats-server configuration
// file: in double quotes, with \ and " escaped.
func quoteValue(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}
