package proxy

// Framing that a backend or client gets wrong: the answer is what
// net/http's server would give, on every path (a review of HTTP parsing).

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
)

// rawAnswer writes raw on a new connection to addr and returns what came
// back before the connection closed or went quiet for a while.
func rawAnswer(t *testing.T, addr, raw string) string {
	t.Helper()
	c := testutil.DialClient(t, addr)
	defer c.Close()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	buf := make([]byte, 4096)
	for {
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := c.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			return got.String()
		}
	}
}

// TestResponseHeaderNamesNetHTTPWouldDrop: net/http's textproto reads a
// response header name with a space in it ("Transfer-Encoding : chunked",
// Go issue 34540) as a header of its own, which frames nothing, and
// net/http's server never writes such a name. The loop must not either:
// passed on next to the Content-Length (or chunking) the listener chose,
// it gives the client, or a proxy in front of the listener that reads
// "Transfer-Encoding : chunked" as Transfer-Encoding, a second framing of
// the response.
func TestResponseHeaderNamesNetHTTPWouldDrop(t *testing.T) {
	answers := map[string]string{
		"/cl":      "HTTP/1.1 200 OK\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\nhello",
		"/chunked": "HTTP/1.1 200 OK\r\nContent-Length : 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Sum : 1\r\n\r\n",
		"/hints":   "HTTP/1.1 103 Early Hints\r\nContent-Length : 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
	}
	backend := rawHTTPBackend(t, func(c net.Conn, req *http.Request) bool {
		io.WriteString(c, answers[req.URL.Path])
		return true
	})
	_, addr := startServer(t, tunnelledTo(t, backend))
	for path := range answers {
		for _, extra := range []string{"", "Connection: X-Other\r\n"} { // the loop's, and net/http's
			got := rawAnswer(t, addr, "GET "+path+" HTTP/1.1\r\nHost: x\r\n"+extra+"Connection: close\r\n\r\n")
			if !strings.HasPrefix(got, "HTTP/1.1 200 ") && !strings.HasPrefix(got, "HTTP/1.1 103 ") {
				t.Fatalf("GET %s (%q): got %q", path, extra, got)
			}
			for _, line := range strings.Split(got, "\r\n") {
				if name, _, ok := strings.Cut(line, ":"); ok && strings.ContainsAny(name, " \t") {
					t.Errorf("GET %s (%q): the client got the header line %q, which net/http would not write; whole answer %q",
						path, extra, line, got)
				}
			}
		}
	}
}

// TestBackendStatusBelow100: a backend's status line "HTTP/1.1 099 ..." is
// no answer a client can be given (net/http's server panics on
// WriteHeader(99), and a status code is three digits): the client gets a
// 502, on each path, and not a 1xx of "99" nor a dropped connection.
func TestBackendStatusBelow100(t *testing.T) {
	backend := rawHTTPBackend(t, func(c net.Conn, req *http.Request) bool {
		io.Copy(io.Discard, req.Body)
		io.WriteString(c, "HTTP/1.1 099 Weird\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	h := NewHTTP(HTTPOptions{Routes: []Route{{Path: "/", Target: mustURL(t, "http://"+backend+"/")}},
		Dialer: tunnelPair(t), Timeout: 3 * time.Second})
	_, addr := startServer(t, h)
	for _, raw := range []string{
		"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n",                        // the loop
		"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: X-Other\r\n\r\n", // net/http, stream transport
		"POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nz", // net/http, http.Transport
	} {
		got := rawAnswer(t, addr, raw)
		if !strings.HasPrefix(got, "HTTP/1.1 502 ") {
			t.Errorf("%q: the client got %q, want a 502", raw, got)
		}
	}
}

// TestMalformedRequestBodyIs400: a request whose chunked body is
// malformed is the client's fault: it gets a 400 and the connection
// closes, not a 502 that blames the gateway (the backend, for its part,
// sees its request cut short).
func TestMalformedRequestBodyIs400(t *testing.T) {
	_, backend, _ := countingBackend(t, http.HandlerFunc(echoBackend))
	_, addr := startServer(t, tunnelledTo(t, backend))
	for _, body := range []string{
		"+3\r\nabc\r\n0\r\n\r\n",       // a sign
		"0x3\r\nabc\r\n0\r\n\r\n",      // a 0x prefix
		"3\r\nabcX\r\n0\r\n\r\n",       // no CRLF after the data
		"3\nabc\n0\n\n",                // bare LF
		"fffffffffffffffff\r\nabc\r\n", // too large
	} {
		raw := "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body
		got := rawAnswer(t, addr, raw)
		if !strings.HasPrefix(got, "HTTP/1.1 400 ") || !strings.Contains(got, "Connection: close\r\n") {
			t.Errorf("body %q: got %q, want a 400 closing the connection", body, got)
		}
	}
}

// TestTrailerListsOnlyTrailersSent: a chunked response that arrives whole
// has its trailers read before the loop writes the head, and the loop
// listed all their names in its Trailer field, those it then leaves out
// too. "Trailer: Content-Length" or "Transfer-Encoding" is one a client
// must refuse (RFC 9110, 6.5.1; net/http's does, and so lost the whole
// response), and the list named fields that never came. net/http's path
// passes the response on readably.
func TestTrailerListsOnlyTrailersSent(t *testing.T) {
	backend, _ := cannedBackend(t, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n"+
		"X-Sum: 1\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\nKeep-Alive: timeout=5\r\n\r\n")
	_, addr := startServer(t, tunnelledTo(t, backend))
	for _, extra := range []string{"", "Connection: X-Other\r\n"} { // the loop's, and net/http's
		c := testutil.DialClient(t, addr)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n"+extra+"\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%q: %v", extra, err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil || string(body) != "abc" || resp.Trailer.Get("X-Sum") != "1" {
			t.Errorf("%q: body %q, %v, trailer %v", extra, body, err, resp.Trailer)
		}
		for name := range resp.Trailer {
			// net/http's path passes the others on, unlisted; the loop
			// leaves them out.
			if name != "X-Sum" && extra == "" {
				t.Errorf("the loop passed on trailer %s", name)
			}
		}
		c.Close()
	}
}
