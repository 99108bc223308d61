package monotime

import (
	"testing"
	"time"
)

// TestReadings: readings follow the monotonic clock from Unix
// nanoseconds at the start, and At measures a time with a monotonic
// reading on it, and one without on the wall clock.
func TestReadings(t *testing.T) {
	before := time.Now()
	n := Now()
	if wall := before.UnixNano(); n < wall-int64(time.Second) || n > wall+int64(time.Second) {
		t.Fatalf("Now() = %d, far from the wall clock's %d", n, wall)
	}
	time.Sleep(20 * time.Millisecond)
	if d := Since(n); d < 20*time.Millisecond {
		t.Fatalf("Since a reading 20 ms ago: %v", d)
	}
	later := before.Add(time.Hour)
	if got := At(later) - At(before); got != int64(time.Hour) {
		t.Fatalf("At(t+1h) - At(t) = %v", time.Duration(got))
	}
	// time.Unix carries no monotonic reading: the wall clock measures it.
	wallOnly := time.Unix(0, before.UnixNano()+int64(time.Minute))
	if got := At(wallOnly); got != startUnix+(wallOnly.UnixNano()-start.UnixNano()) {
		t.Fatalf("At of a wall-clock time: %d", got)
	}
	// Round(0) strips the monotonic reading; the start is the start
	// either way.
	if At(start) != startUnix || At(start.Round(0)) != startUnix {
		t.Fatalf("At(start) = %d and %d, want %d", At(start), At(start.Round(0)), startUnix)
	}
}
