// Package logtest collects log output in tests: a Buffer is an io.Writer
// that several goroutines may write to (a worker's loop, nats.go's
// callbacks, an embedded server) while the test reads it.
package logtest

import (
	"bytes"
	"sync"
)

// Buffer is a concurrency-safe bytes.Buffer for log output.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
