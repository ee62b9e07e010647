package coordinator

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// TestImports keeps the coordinator a pure model: standard library time,
// errors, fmt, math, sort/slices/maps, strings and container/* only, and
// the B-tree of its key index (a pure data structure: no I/O, no
// goroutines). The Makefile's check-imports allows the same set.
func TestImports(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go not on PATH")
	}
	out, err := exec.Command(goBin, "list", "-f", `{{join .Imports " "}}`, ".").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	allowed := map[string]bool{
		"errors": true, "fmt": true, "math": true, "slices": true, "sort": true,
		"maps": true, "strings": true, "time": true,
		"github.com/google/btree": true,
	}
	imports := strings.Fields(string(out))
	if len(imports) == 0 {
		t.Fatalf("go list: got no imports; want at least time")
	}
	for _, imp := range imports {
		if !allowed[imp] && !strings.HasPrefix(imp, "container/") {
			t.Errorf("import %q: got a package outside the allowed set; want only errors, fmt, math, slices, sort, maps, strings, time, container/*, github.com/google/btree", imp)
		}
	}
}
