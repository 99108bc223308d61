// Package monotime reads the monotonic clock as int64 nanoseconds, for
// times kept in atomics.
//
// time.Time's UnixNano is the wall clock, which steps: NTP setting a
// clock that booted without a battery-backed one (a Raspberry Pi, a
// fresh VM) moves it by days, an operator's date by anything. Idle and
// deadline checks read from it would then end busy flows and
// connections at once, or keep idle ones for as long as the step.
// Readings here are Unix nanoseconds as of the process's start,
// advanced by the monotonic clock since, so 0 stays long ago and a
// reading still says roughly when it was.
package monotime

import "time"

// start carries the monotonic reading that every other reading is
// measured from.
var start = time.Now()

var startUnix = start.UnixNano()

// Now returns the current reading. time.Since reads only the monotonic
// clock, where time.Now reads the wall clock too: Now is on every
// tunnel read.
func Now() int64 { return startUnix + int64(time.Since(start)) }

// At returns t as a reading. t from time.Now, or from one by Add, carries
// a monotonic reading and is measured on that clock; any other t is
// measured on the wall clock, as its Unix nanoseconds.
func At(t time.Time) int64 { return startUnix + int64(t.Sub(start)) }

// Since returns the time elapsed since reading n.
func Since(n int64) time.Duration { return time.Duration(Now() - n) }
