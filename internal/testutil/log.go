package testutil

import (
	"bytes"
	"log/slog"
	"sync"
	"testing"
)

// Logger returns a logger writing text lines at level and above to t.Log.
// Lines logged after t has ended are dropped rather than panicking, since
// the goroutines of a stopping node may still log.
func Logger(t testing.TB, level slog.Leveler) *slog.Logger {
	w := &tWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

type tWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *tWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(string(bytes.TrimRight(b, "\n")))
	}
	return len(b), nil
}
