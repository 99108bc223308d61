//go:build !race

package sockio

// raceEnabled: see race_linux.go.
const raceEnabled = false
