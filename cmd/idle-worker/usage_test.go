package main

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

func TestParseArgs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args    []string
		want    command
		wantErr string // substring; "" for success
	}{
		{args: nil, want: serve},
		{args: []string{"-h"}, want: help},
		{args: []string{"-help"}, want: help},
		{args: []string{"--help"}, want: help},
		{args: []string{"help"}, want: help},
		{args: []string{"-version"}, want: printVersion},
		{args: []string{"--version"}, want: printVersion},
		{args: []string{"version"}, want: printVersion},
		{args: []string{"mappings"}, want: printMappings},
		{args: []string{"-mappings"}, wantErr: `unknown argument "-mappings"`},
		{args: []string{"mappings", "64"}, wantErr: `unexpected argument "64" after "mappings"`},
		{args: []string{"foo"}, wantErr: `unknown argument "foo"`},
		{args: []string{"-v"}, wantErr: `unknown argument "-v"`},
		{args: []string{""}, wantErr: `unknown argument ""`},
		{args: []string{"--HELP"}, wantErr: `unknown argument "--HELP"`},
		{args: []string{"-h", "foo"}, wantErr: `unexpected argument "foo" after "-h"`},
		{args: []string{"version", "-h"}, wantErr: `unexpected argument "-h" after "version"`},
	}
	for _, tt := range tests {
		got, err := parseArgs(tt.args)
		switch {
		case tt.wantErr == "" && (err != nil || got != tt.want):
			t.Errorf("parseArgs(%q): got %v, %v; want %v, nil", tt.args, got, err, tt.want)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("parseArgs(%q): got %v, %v; want an error saying %s", tt.args, got, err, tt.wantErr)
		}
	}
}

// envVars returns, for every variable of config, its name, default and
// description from the struct tags.
func envVars(t *testing.T) []struct{ name, def, desc string } {
	t.Helper()
	var vars []struct{ name, def, desc string }
	ty := reflect.TypeFor[config]()
	for i := range ty.NumField() {
		f := ty.Field(i)
		name := f.Tag.Get("envconfig")
		if name == "" {
			continue
		}
		vars = append(vars, struct{ name, def, desc string }{envPrefix + "_" + name, f.Tag.Get("default"), f.Tag.Get("desc")})
	}
	if len(vars) < 30 {
		t.Fatalf("got %d variables from config's tags; want every IDLE_* variable", len(vars))
	}
	return vars
}

// The usage lists every variable with its default and its whole
// description.
func TestUsage(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	if err := usage(&b); err != nil {
		t.Fatalf("usage: %v", err)
	}
	out := b.String()
	if !strings.HasPrefix(out, "Usage: idle-worker [-h | -version | mappings]\n") {
		t.Errorf("usage: got %q; want it to start with the synopsis", truncate(out))
	}
	for _, v := range envVars(t) {
		if v.desc == "" {
			t.Errorf("%s: no desc tag; want its meaning, as in the README's table", v.name)
			continue
		}
		def := v.def
		if def == "" {
			def = "empty"
		}
		head := "\n  " + v.name + " (default: " + def + ")\n"
		i := strings.Index(out, head)
		if i < 0 {
			t.Errorf("usage: want a line %q", strings.TrimSpace(head))
			continue
		}
		// The description follows, indented, up to the blank line.
		body, _, _ := strings.Cut(out[i+len(head):], "\n\n")
		if got := strings.Join(strings.Fields(body), " "); got != v.desc {
			t.Errorf("usage of %s: got description %q; want %q", v.name, got, v.desc)
		}
	}
	if strings.Contains(out, "HTTPAddrSet") || strings.Contains(out, "HTTP_ADDR_SET") {
		t.Errorf("usage: lists the internal HTTPAddrSet field")
	}
}

// The README's configuration table lists every variable, and no other.
func TestREADMEListsEveryVariable(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	inTable := map[string]bool{}
	row := regexp.MustCompile("^\\| (`IDLE_[A-Z_]+`(, `IDLE_[A-Z_]+`)*) \\|")
	for _, line := range strings.Split(string(b), "\n") {
		if m := row.FindStringSubmatch(line); m != nil {
			for _, name := range strings.Split(m[1], ", ") {
				inTable[strings.Trim(name, "`")] = true
			}
		}
	}
	for _, v := range envVars(t) {
		if !inTable[v.name] {
			t.Errorf("README.md: no row for %s in the configuration table", v.name)
		}
		delete(inTable, v.name)
	}
	for name := range inTable {
		t.Errorf("README.md: a row for %s, which the config does not have", name)
	}
}

func TestWrap(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("word ", 40)
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"empty", "", nil},
		{"short", "one two", []string{"one two"}},
		{"exactly the width", strings.Repeat("x", usageWidth), []string{strings.Repeat("x", usageWidth)}},
		{"one word too long", strings.Repeat("x", usageWidth+5), []string{strings.Repeat("x", usageWidth+5)}},
		{"breaks between words", strings.Repeat("x", usageWidth-2) + " yy", []string{strings.Repeat("x", usageWidth-2), "yy"}},
		{"spaces collapse", "  a \n b  ", []string{"a b"}},
	}
	for _, tt := range tests {
		if got := wrap(tt.in); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: wrap(%q): got %q; want %q", tt.name, tt.in, got, tt.want)
		}
	}
	lines := wrap(long)
	for _, l := range lines {
		if len(l) > usageWidth {
			t.Errorf("wrap: got a line of %d bytes; want at most %d", len(l), usageWidth)
		}
	}
	if got := strings.Join(lines, " "); got != strings.TrimSpace(long) {
		t.Errorf("wrap: the lines joined give %q; want the words of the input", got)
	}
}

func truncate(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}
