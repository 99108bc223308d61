package lograte

import (
	"testing"
	"time"
)

// TestLimit: the first line passes, those within the second after it do
// not, and the next that passes carries their count.
func TestLimit(t *testing.T) {
	var l Limit
	if ok, skipped := l.Allow(); !ok || skipped != 0 {
		t.Fatalf("first line: %v, %d; want it to pass", ok, skipped)
	}
	for range 3 {
		if ok, _ := l.Allow(); ok {
			t.Fatal("a line within the second passed")
		}
	}
	l.last = l.last.Add(-time.Second) // the second is over
	if ok, skipped := l.Allow(); !ok || skipped != 3 {
		t.Fatalf("after the second: %v, %d; want it to pass with 3 held back", ok, skipped)
	}
}
