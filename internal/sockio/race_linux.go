//go:build race

package sockio

// raceEnabled sends reads and writes through package syscall under the
// race detector. Its Read and Write tell the detector that a write comes
// before the read of its bytes, with the same marks the net package's
// reads and writes make, so that a test which orders goroutines through a
// loopback connection is seen to; raw calls would make no marks.
const raceEnabled = true
