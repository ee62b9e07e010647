package coordinator

import "time"

// DueCount returns how many backends may be due at now: those CollectDue
// would return, plus running ones whose deadline index is stale (they were
// refreshed since). It costs O(k) for k such backends.
func (c *Coordinator) DueCount(now time.Time) int {
	t := c.offset(now)
	n := 0
	var walk func(i int)
	walk = func(i int) {
		if i >= len(c.heap) || c.heap[i].due > t {
			return
		}
		n++
		walk(2*i + 1)
		walk(2*i + 2)
	}
	walk(0)
	return n
}
