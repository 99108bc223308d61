//go:build race

package sockio

import (
	"runtime"
	"unsafe"
)

// ioSync stands for the kernel between a write and the read that gets its
// bytes, as in package syscall: the race detector then sees what one
// goroutine did before it wrote as done before another read, in tests that
// pass data over loopback as they do through the net package's calls.
var ioSync int64

func raceBeforeWrite() { runtime.RaceReleaseMerge(unsafe.Pointer(&ioSync)) }

func raceWritten(p []byte) {
	if len(p) > 0 {
		runtime.RaceReadRange(unsafe.Pointer(&p[0]), len(p))
	}
}

func raceRead(p []byte, n int) {
	if n > 0 {
		runtime.RaceWriteRange(unsafe.Pointer(&p[0]), n)
	}
	runtime.RaceAcquire(unsafe.Pointer(&ioSync))
}
