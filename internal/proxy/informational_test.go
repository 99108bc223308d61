package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
)

// TestInformationalDropsHopByHopHeaders: an intermediary removes the
// Connection header, and the fields it names, from every message it
// forwards (RFC 9110, 7.6.1), 1xx answers included. The loop did so for
// a 103 Early Hints; net/http's path passed them on, as the reverse
// proxy copies a 1xx's header as it comes.
func TestInformationalDropsHopByHopHeaders(t *testing.T) {
	backend := rawHTTPBackend(t, func(c net.Conn, req *http.Request) bool {
		io.Copy(io.Discard, req.Body)
		io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nConnection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n"+
			"Link: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	h := NewHTTP(HTTPOptions{Routes: []Route{{Path: "/", Target: mustURL(t, "http://"+backend+"/")}}, Dialer: tunnelPair(t)})
	_, loop := startServer(t, h)
	for _, tc := range []struct{ name, addr, raw string }{
		{"loop GET", loop, "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"net/http GET", netHTTPServer(t, h), "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"net/http POST", loop, "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi"},
	} {
		c := testutil.DialClient(t, tc.addr)
		io.WriteString(c, tc.raw)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		hints, err := http.ReadResponse(bufio.NewReader(c), nil)
		c.Close()
		if err != nil || hints.StatusCode != http.StatusEarlyHints {
			t.Fatalf("%s: %v, %v; want the 103", tc.name, hints, err)
		}
		if hints.Header.Get("Link") == "" {
			t.Errorf("%s: the 103 lost its Link: %v", tc.name, hints.Header)
		}
		for _, name := range []string{"Connection", "X-Hop", "Keep-Alive"} {
			if v := hints.Header[name]; v != nil {
				t.Errorf("%s: the 103 passed on %s: %q", tc.name, name, v)
			}
		}
	}
}
