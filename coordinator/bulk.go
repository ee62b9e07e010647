package coordinator

import "time"

// Operations on many backends at once, for operator requests: they visit
// every backend, so they are not for the hot path.

// ForceMatching calls Force for every Running backend whose key satisfies
// match and returns how many it forced.
func (c *Coordinator) ForceMatching(now time.Time, r Reason, match func(key string) bool) int {
	// Collect first: Force moves entries within the heap.
	var hit []string
	for _, e := range c.heap {
		if e.state == Running && match(e.key) {
			hit = append(hit, e.key)
		}
	}
	for _, k := range hit {
		c.Force(k, now, r)
	}
	return len(hit)
}

// RemoveMatching removes every backend whose key satisfies match and returns
// their keys.
func (c *Coordinator) RemoveMatching(match func(key string) bool) []string {
	var keys []string
	for k, e := range c.entries {
		if match(k) {
			keys = append(keys, k)
			c.delete(e)
		}
	}
	return keys
}

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
