//go:build race

package bus_test

// raceEnabled reports whether the race detector is on. It makes sync.Pool
// drop a quarter of what is put back, so code that reuses pooled buffers
// (encoding/json's scanner) allocates now and then.
const raceEnabled = true
