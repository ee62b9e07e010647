package coordinator

import (
	"strings"
	"time"

	"github.com/google/btree"
)

// The key index: every entry, ordered by key (byte-wise, as Go compares
// strings), in a B-tree of entry pointers. It changes only when a key is
// added or removed (mark of a new key, Remove, Restore), never on a
// heartbeat of a tracked key, and answers ordered and prefix questions in
// O(log n) to find the start, then O(1) amortized per key visited.

// indexDegree is the B-tree's degree: a node holds indexDegree-1 to
// 2*indexDegree-1 entry pointers, at most 63 (504 bytes), so a million keys
// make a tree four levels deep.
const indexDegree = 32

func newIndex() *btree.BTreeG[*entry] {
	return btree.NewG(indexDegree, func(a, b *entry) bool { return a.key < b.key })
}

// Scan visits, in ascending byte order of key, the tracked backends whose
// keys start with prefix and sort after after ("" starts at the first),
// calling visit with a snapshot of each at now, until visit returns false
// or maxVisit backends have been visited (maxVisit <= 0: no bound). It
// returns next, the key of the last backend visited (after itself when
// none was), and more, whether a key with prefix sorts after next:
// Scan(now, next, prefix, ...) resumes exactly there.
//
// The position of a scan is a key, not a pointer into the index, so a scan
// done in slices may change the Coordinator between slices: resuming after
// a key that has been removed meanwhile goes on from the first key greater
// than it. Each key is visited at most once and in order; a key added
// between slices is visited if and only if it sorts after the position.
//
// Keys that share a prefix are contiguous in the index, so a scan costs
// O(log n) to find its start plus O(1) amortized per backend visited, and
// a scan of a prefix never looks at keys outside it. A prefix meant to
// select whole tokens must end with ".": "dev-7." does not select
// "dev-70.x".
//
// visit must not change the Coordinator (reading it is fine): to act on
// the backends of a slice, collect their keys and act after Scan returns.
func (c *Coordinator) Scan(now time.Time, after, prefix string, maxVisit int, visit func(Backend) bool) (next string, more bool) {
	t := c.offset(now)
	next = after
	c.probe.key = max(after, prefix)
	n, stopped := 0, false
	c.index.AscendGreaterOrEqual(&c.probe, func(e *entry) bool {
		switch {
		case e.key == after:
			return true // the position itself: resume strictly after it
		case !strings.HasPrefix(e.key, prefix):
			return false // past the prefix's range
		case stopped || maxVisit > 0 && n >= maxVisit:
			more = true
			return false
		}
		n++
		next = e.key
		stopped = !visit(c.snapshot(e, t))
		return true
	})
	c.probe.key = "" // keep no caller's string alive
	return next, more
}
