//go:build !race

package bus

// raceOn reports whether the race detector is on; see race_internal_test.go.
const raceOn = false
