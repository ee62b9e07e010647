package workerproc

import "sync"

// tail keeps the last max bytes written to it, for a process's output: a
// worker that logs for minutes must not grow the caller's memory.
type tail struct {
	mu  sync.Mutex
	max int
	b   []byte
	cut bool // bytes were dropped from the front
}

func newTail(max int) *tail { return &tail{max: max} }

// Write keeps the end of p and of what came before, max bytes in all.
func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		// Drop in chunks of at least a quarter, so that a stream of
		// small writes does not copy the whole buffer each time.
		over = max(over, t.max/4)
		t.b = append(t.b[:0], t.b[over:]...)
		t.cut = true
	}
	return len(p), nil
}

// String returns what is kept, after a marker when the front was dropped.
func (t *tail) String() string { return t.Last(t.max) }

// Last returns at most the last n bytes kept, after a marker when anything
// before them was dropped.
func (t *tail) Last(n int) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	b, cut := t.b, t.cut
	if len(b) > n {
		b, cut = b[len(b)-n:], true
	}
	if cut {
		return "[...]\n" + string(b)
	}
	return string(b)
}
