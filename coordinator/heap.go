package coordinator

// The deadline index: a binary min-heap of the entries that have a next
// action (Running: idle deadline; Draining with redelivery: next attempt),
// ordered by entry.due, each entry knowing its position so it can be removed
// or moved in O(log n). Written out rather than through container/heap to
// avoid interface calls on the hot path.

func (c *Coordinator) push(e *entry, due int64) {
	e.due = due
	e.idx = int32(len(c.heap))
	c.heap = append(c.heap, e)
	c.up(len(c.heap) - 1)
}

// remove takes e out of the heap.
func (c *Coordinator) remove(e *entry) {
	i := int(e.idx)
	last := len(c.heap) - 1
	if i != last {
		c.swap(i, last)
	}
	c.heap[last] = nil
	c.heap = c.heap[:last]
	e.idx = -1
	if i != last {
		if !c.down(i) {
			c.up(i)
		}
	}
	// Give memory back after a mass drain; the 4x hysteresis keeps a
	// steady population from reallocating.
	if cap(c.heap) > 1024 && len(c.heap) < cap(c.heap)/4 {
		c.heap = append(make([]*entry, 0, cap(c.heap)/2), c.heap...)
	}
}

// fix restores heap order after entry i's key changed either way.
func (c *Coordinator) fix(i int) {
	if !c.down(i) {
		c.up(i)
	}
}

func (c *Coordinator) less(i, j int) bool { return c.heap[i].due < c.heap[j].due }

func (c *Coordinator) swap(i, j int) {
	h := c.heap
	h[i], h[j] = h[j], h[i]
	h[i].idx = int32(i)
	h[j].idx = int32(j)
}

func (c *Coordinator) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !c.less(i, p) {
			return
		}
		c.swap(i, p)
		i = p
	}
}

// down sifts i towards the leaves and reports whether it moved.
func (c *Coordinator) down(i int) bool {
	start, n := i, len(c.heap)
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && c.less(r, l) {
			m = r
		}
		if !c.less(m, i) {
			break
		}
		c.swap(i, m)
		i = m
	}
	return i > start
}
