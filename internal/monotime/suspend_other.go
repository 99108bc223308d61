//go:build !linux

package monotime

import "time"

// Suspended returns how long this machine has been suspended since it
// booted, where the system says; here it does not, and it is 0.
func Suspended() time.Duration { return 0 }
