//go:build race

package bus

// raceOn reports whether the race detector is on: it makes sync.Pool drop
// items, so code using encoding/json's pooled scanner allocates now and then.
const raceOn = true
