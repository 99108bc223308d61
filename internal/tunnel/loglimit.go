package tunnel

import (
	"sync"
	"time"
)

// logLimit lets a line that a peer can cause as often as it likes (one per
// stream, per frame, per connection) reach the log at most once a second,
// and counts those it holds back, so that a flood does not fill the log at
// its own rate.
type logLimit struct {
	mu      sync.Mutex
	last    time.Time // when a line last passed
	skipped int       // lines held back since
}

// allow reports whether a line may pass now and, if so, how many were
// held back since the last that did.
func (l *logLimit) allow() (ok bool, skipped int) {
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
