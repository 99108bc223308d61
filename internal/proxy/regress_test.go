package proxy

// Regression tests for bugs a review found (stop 30); each failed before
// its fix.

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
)

// TestPooledStreamWithUnaskedBytesIsNotReused: bytes a backend sends after
// a complete response (a body on a 204 or on a HEAD's answer), arriving
// once the stream is back in the pool, must not be read as the next
// request's response, which may be another client's. The pool drops such a
// stream, as http.Transport drops a connection that speaks while idle.
func TestPooledStreamWithUnaskedBytesIsNotReused(t *testing.T) {
	for _, tc := range []struct {
		name, first, method, late string
	}{
		{"204 then a whole response", "/nocontent", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"},
		{"HEAD answered with a body", "/head", "HEAD", "hello"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			backend := rawHTTPBackend(t, func(c net.Conn, req *http.Request) bool {
				switch req.URL.Path {
				case "/nocontent":
					io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n")
				case "/head":
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
				default:
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\ngenuine")
					return true
				}
				time.Sleep(100 * time.Millisecond) // after the stream is back in the pool
				io.WriteString(c, tc.late)
				return true
			})
			h := tunnelledTo(t, backend)
			_, addr := startServer(t, h)
			rawExchanges(t, addr, tc.method+" "+tc.first+" HTTP/1.1\r\nHost: h\r\n\r\n", tc.method)
			time.Sleep(time.Second) // the late bytes have arrived
			// Another client, on another connection.
			got := rawExchanges(t, addr, "GET /other HTTP/1.1\r\nHost: h\r\n\r\n", "GET")[0]
			if got.status != "200 OK" || got.body != "genuine" {
				t.Errorf("the next client got %s %q, want 200 \"genuine\"", got.status, got.body)
			}
		})
	}
}

// TestLoopWatchesClientPastHeaderTimeout: a client that leaves a slow
// response (a long poll) after the connection's header read deadline has
// passed still abandons the request. The loop's watch for its leaving read
// under that deadline, and once stopped watching for good, leaving the
// stream and the backend's request to live on until the backend answered.
func TestLoopWatchesClientPastHeaderTimeout(t *testing.T) {
	entered, ended := make(chan struct{}, 1), make(chan error, 1)
	_, backend, _ := countingBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		select {
		case <-r.Context().Done():
			ended <- r.Context().Err()
		case <-time.After(4 * time.Second):
			ended <- errors.New("never ended")
		}
	}))
	h := tunnelledTo(t, backend)
	_, addr := startServerWith(t, h, &http.Server{Handler: h, ReadHeaderTimeout: 200 * time.Millisecond, IdleTimeout: time.Minute})
	c := testutil.DialClient(t, addr)
	io.WriteString(c, "GET /poll HTTP/1.1\r\nHost: h\r\n\r\n")
	<-entered
	time.Sleep(500 * time.Millisecond) // past ReadHeaderTimeout
	c.Close()
	select {
	case err := <-ended:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("the backend's request: %v, want it canceled", err)
		}
	case <-time.After(2 * time.Second):
		t.Errorf("the backend's request outlived the client by 2s")
		<-ended
	}
}

// TestLoopIdleTimeouts: a kept-alive connection stays open as long as
// net/http would keep it. With IdleTimeout zero (and no ReadTimeout) there
// is no idle limit, where the loop kept the first request's
// ReadHeaderTimeout; with an IdleTimeout of a second, re-arming the
// deadline at most once a second closed connections idle for less.
func TestLoopIdleTimeouts(t *testing.T) {
	_, backend, _ := countingBackend(t, http.HandlerFunc(echoBackend))
	for _, tc := range []struct {
		name   string
		srv    func(h *HTTP) *http.Server
		pauses []time.Duration // before the second, third... request
	}{
		{"IdleTimeout zero", func(h *HTTP) *http.Server {
			return &http.Server{Handler: h, ReadHeaderTimeout: 200 * time.Millisecond}
		}, []time.Duration{500 * time.Millisecond}},
		{"IdleTimeout 1s, pauses of 600ms", func(h *HTTP) *http.Server {
			return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Second}
		}, []time.Duration{600 * time.Millisecond, 600 * time.Millisecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := tunnelledTo(t, backend)
			_, addr := startServerWith(t, h, tc.srv(h))
			c := testutil.DialClient(t, addr)
			br := bufio.NewReader(c)
			for i := 0; i <= len(tc.pauses); i++ {
				if i > 0 {
					time.Sleep(tc.pauses[i-1])
				}
				io.WriteString(c, "GET /echo HTTP/1.1\r\nHost: h\r\n\r\n")
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("request %d, after an idle pause shorter than the idle timeout: %v", i+1, err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
}

// TestHalfClosedClientIsNotToldSuccess: a client that half-closes after
// its request (printf ... | nc -N) may still read, but net/http cancels the
// request's context on the EOF and the request is abandoned. The client must
// not then be told it succeeded: the error handler wrote nothing, and
// net/http sent an implicit empty 200.
func TestHalfClosedClientIsNotToldSuccess(t *testing.T) {
	addr := slowAnswerListener(t)
	c := testutil.DialClient(t, addr)
	io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi")
	c.CloseWrite()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return // closed without an answer: acceptable
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK && string(body) != "done" {
		t.Errorf("the half-closed client got %s with body %q: a success for a request that was abandoned", resp.Status, body)
	}
}

// TestLoopDropsContentLengthOn204: a 204 carries no Content-Length (RFC 9110
// section 8.6), even when the backend sends one; net/http's path drops it,
// and the loop passed it on.
func TestLoopDropsContentLengthOn204(t *testing.T) {
	backend, _ := cannedBackend(t, "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n")
	h := tunnelledTo(t, backend)
	_, addr := startServer(t, h)
	c := testutil.DialClient(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	br := bufio.NewReader(c)
	head, err := br.ReadString('\n')
	for err == nil && head != "\r\n" {
		if strings.HasPrefix(strings.ToLower(head), "content-length:") {
			t.Errorf("204 sent to the client with %q", strings.TrimSpace(head))
		}
		head, err = br.ReadString('\n')
	}
}

// TestHalfClosedClientIsNotBlamedOnTheBackend: a client that half-closes
// before its answer is taken for gone, and its request abandoned (as
// nginx and net/http do); the loop then wrote it a 502 Bad Gateway, which
// blames the backend for what the client did, where net/http's path
// writes nothing. Neither should answer it now.
func TestHalfClosedClientIsNotBlamedOnTheBackend(t *testing.T) {
	addr := slowAnswerListener(t)
	for _, req := range []string{
		"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n",                         // the loop
		"POST /slow HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi", // net/http's path
	} {
		c := testutil.DialClient(t, addr)
		io.WriteString(c, req)
		c.CloseWrite()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("%q: %v", req, err)
		}
		if len(got) > 0 {
			t.Errorf("%q, then a half-close: the client was answered %q, want nothing", req, strings.SplitN(string(got), "\r\n", 2)[0])
		}
	}
}

// slowAnswerListener is a listener in front of a tunnel to a backend that
// reads the request and answers "done" 300 ms later.
func slowAnswerListener(t *testing.T) string {
	t.Helper()
	_, backend, _ := countingBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		time.Sleep(300 * time.Millisecond)
		io.WriteString(w, "done")
	}))
	_, addr := startServer(t, tunnelledTo(t, backend))
	return addr
}
