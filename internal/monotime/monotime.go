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

import (
	"math"
	"time"
)

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
//
// A reading lies between MinInt64/2 and MaxInt64/2 (the years 1824 and
// 2116), so that one taken from another, as Since and the deadline checks
// do, cannot overflow: a t further away, such as time.Time{} or a
// deadline that never comes (time.Now().Add(math.MaxInt64)), is taken as
// the nearer bound, not wrapped around to the other end.
func At(t time.Time) int64 {
	d := t.Sub(start) // at most MaxInt64 either way
	switch {
	case d > 0 && d > time.Duration(math.MaxInt64/2-startUnix):
		return math.MaxInt64 / 2
	case d < 0 && d < time.Duration(math.MinInt64/2-startUnix):
		return math.MinInt64 / 2
	}
	return startUnix + int64(d)
}

// Since returns the time elapsed since reading n.
func Since(n int64) time.Duration { return time.Duration(Now() - n) }
