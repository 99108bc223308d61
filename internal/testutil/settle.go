package testutil

import (
	"sync/atomic"
	"testing"
	"time"
)

// Settle waits until counter has not moved for quiet, and returns it: a
// flow that has stopped against a limit, such as a full window. It fails
// the test if the counter still moves after 20 s.
func Settle(t testing.TB, counter *atomic.Int64, quiet time.Duration) int64 {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	last, since := int64(-1), time.Now()
	for time.Since(since) < quiet {
		if time.Now().After(deadline) {
			t.Fatalf("still moving after 20s: %d", last)
		}
		if n := counter.Load(); n != last {
			last, since = n, time.Now()
		}
		time.Sleep(20 * time.Millisecond)
	}
	return last
}

// Reach waits until counter is at least n, and fails the test if it is
// not after 20 s. Before a Settle, it keeps a pause of a flow on a busy
// machine from passing for the flow's end.
func Reach(t testing.TB, counter *atomic.Int64, n int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for counter.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("reached %d after 20s, not %d", counter.Load(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
