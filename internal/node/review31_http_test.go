package node

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// dialEntry connects to a listener as a raw HTTP client whose reads and
// writes give up after 10 s.
func dialEntry(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// A stream of server-sent events, or a long poll, whose backend sends its
// head at once and its first event later: the client gets the head at
// once, as through net/http and the reverse proxy (which flush the head
// of a body of unknown length), not only with the first event. A browser's
// EventSource opens on the head; a client with a header timeout gives up.
func TestReview31StreamHeadBeforeFirstEvent(t *testing.T) {
	release := make(chan struct{})
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		select {
		case <-release:
			io.WriteString(w, "data: first\n\n")
		case <-r.Context().Done():
		}
	}))
	defer be.Close()
	forHops(t, func(t *testing.T, hops int) {
		entry := through(t, hops, "http", be.URL+"/", "")
		c := dialEntry(t, entry)
		io.WriteString(c, "GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
		// The backend holds its first event until the head has come:
		// the head must come without it.
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("the head of an event stream whose first event is not out yet: %v", err)
		}
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("got %s %q", resp.Status, resp.Header.Get("Content-Type"))
		}
		release <- struct{}{}
		event, err := bufio.NewReader(resp.Body).ReadString('\n')
		if err != nil || event != "data: first\n" {
			t.Fatalf("the first event: %q, %v", event, err)
		}
	})
}
