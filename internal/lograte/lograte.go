// Package lograte keeps a log line that others can cause as often as they
// like (once per connection, stream, frame or datagram) to at most one a
// second, and counts those it holds back, so that a flood does not fill
// the log at its own rate.
package lograte

import (
	"sync"
	"time"
)

// Limit passes one line a second. The zero value is ready to use.
type Limit struct {
	mu      sync.Mutex
	last    time.Time // when a line last passed
	skipped int       // lines held back since
}

// Allow reports whether a line may pass now and, if so, how many were
// held back since the last that did.
func (l *Limit) Allow() (ok bool, skipped int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if now.Sub(l.last) < time.Second {
		l.skipped++
		return false, 0
	}
	skipped, l.last, l.skipped = l.skipped, now, 0
	return true, skipped
}
