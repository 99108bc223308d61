package monotime

import (
	"time"

	"golang.org/x/sys/unix"
)

// Suspended returns how long this machine has been suspended since it
// booted: CLOCK_BOOTTIME counts that time and CLOCK_MONOTONIC, which Go's
// monotonic readings and timers follow, does not. It grows only while the
// machine sleeps, and a few microseconds either way between two reads.
func Suspended() time.Duration {
	var boot, mono unix.Timespec
	if unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot) != nil || unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono) != nil {
		return 0
	}
	return time.Duration(boot.Nano() - mono.Nano())
}
