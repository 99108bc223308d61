package monotime

import (
	"math"
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

// TestAtFarAway: a time too far away for a reading, as a deadline that
// never comes made with math.MaxInt64, or the zero time, is the furthest
// reading that way: it compares with now as its time does, and the time
// between them does not overflow.
func TestAtFarAway(t *testing.T) {
	const fifty = 50 * 365 * 24 * time.Hour
	for _, never := range []time.Time{
		time.Now().Add(math.MaxInt64), // its monotonic reading dropped: measured on the wall clock
		time.Unix(1<<40, 0),
		time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC),
	} {
		at, now := At(never), Now()
		if at <= now || time.Duration(at-now) < fifty {
			t.Errorf("At(%v) = %d, %v from now (%d); want over 50 years later", never, at, time.Duration(at-now), now)
		}
	}
	for _, long := range []time.Time{{}, time.Now().Add(math.MinInt64), time.Unix(-1<<40, 0)} {
		at := At(long)
		if since := Since(at); at >= Now() || since < fifty {
			t.Errorf("At(%v) = %d, %v ago; want over 50 years earlier", long, at, since)
		}
	}
}
