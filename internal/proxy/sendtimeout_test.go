package proxy

import (
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
)

// endlessBackend answers every request with a body that never ends, and
// counts the answers still being written.
func endlessBackend(t *testing.T) (addr string, open *atomic.Int64) {
	open = new(atomic.Int64)
	addr = rawHTTPBackend(t, func(c net.Conn, req *http.Request) bool {
		open.Add(1)
		defer open.Add(-1)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
		chunk := make([]byte, 64<<10)
		for {
			if _, err := c.Write(chunk); err != nil {
				return false
			}
		}
	})
	return addr, open
}

// TestClientTakingNothingIsCut: a client asks for a download and then
// reads nothing, for ever. Its connection was held for ever, and with it
// the tunnel stream, a window of unread data on the listener's west and
// the far side's connection to the backend. Now a client that takes
// nothing of an answer for the idle timeout is gone (nginx:
// send_timeout), on the loop's path and on net/http's.
func TestClientTakingNothingIsCut(t *testing.T) {
	for _, tc := range []struct{ name, request string }{
		{"loop", "GET /big HTTP/1.1\r\nHost: x\r\n\r\n"},
		// One with a body, even an empty one, goes to net/http.
		{"net/http", "POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			backend, open := endlessBackend(t)
			h := tunnelledTo(t, backend)
			const idle = time.Second
			_, addr := startServerWith(t, h, &http.Server{Handler: h, ReadHeaderTimeout: idle, IdleTimeout: idle})
			c := testutil.DialClient(t, addr)
			io.WriteString(c, tc.request)
			waitUntil(t, 5*time.Second, "the backend to start answering", func() bool { return open.Load() == 1 })
			start := time.Now()
			waitUntil(t, 10*idle, "the backend's answer to end once the client had taken nothing for the idle timeout",
				func() bool { return open.Load() == 0 })
			t.Logf("the backend's answer ended %v after it began", time.Since(start).Round(time.Millisecond))
		})
	}
}

// waitUntil fails t if cond does not hold within d.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
