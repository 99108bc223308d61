package node

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/west-tunnel/west/internal/testutil"
)

// Through a chain, the backend sees the X-Forwarded headers of the
// listener the client reached, not those of the middle west's listener,
// whose client is a west: on the fast loop and on net/http's path alike.
// A client's own X-Forwarded headers are replaced at the entry.
func TestForwardedHeadersCrossAChain(t *testing.T) {
	be := forwardedEcho(t)
	forHops(t, func(t *testing.T, hops int) {
		wantClientForwarded(t, through(t, hops, "http", be+"/", ""))
	})
}

// wantClientForwarded sends, from 127.0.0.2, requests with forged
// X-Forwarded headers to entry, a listener before an echo of them, and
// checks that the backend saw the client and the entry's own.
func wantClientForwarded(t *testing.T, entry string) {
	t.Helper()
	for _, c := range headSizes {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
		conn, err := d.Dial("tcp", entry)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if got, want := askForged(t, conn, c.extra), "[127.0.0.2]|[front.example]|[http]"; got != want {
			t.Errorf("%s: the backend saw %s, want %s", c.path, got, want)
		}
	}
}

// headSizes are request heads the loop serves and one it leaves to
// net/http (over 4 KiB).
var headSizes = []struct{ path, extra string }{
	{"loop", ""},
	{"net/http", "X-Big: " + strings.Repeat("b", 5000) + "\r\n"},
}

// forwardedEcho is a backend that answers with the X-Forwarded headers it
// got, and returns its URL.
func forwardedEcho(t *testing.T) string {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s|%s|%s", r.Header.Values("X-Forwarded-For"), r.Header.Values("X-Forwarded-Host"), r.Header.Values("X-Forwarded-Proto"))
	}))
	t.Cleanup(be.Close)
	return be.URL
}

// askForged sends, on conn, a request with forged X-Forwarded headers and
// the extra header lines, and returns the body of the answer.
func askForged(t *testing.T, conn net.Conn, extra string) string {
	t.Helper()
	fmt.Fprintf(conn, "GET /x HTTP/1.1\r\nHost: front.example\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: forged\r\n%s\r\n", extra)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// A raw tcp:// stream into a west's HTTP listener carries whatever its
// client wrote: its X-Forwarded headers are replaced, as any client's.
func TestForwardedHeadersFromRawTCPAreReplaced(t *testing.T) {
	be := forwardedEcho(t)
	var pre prebound
	gListen := pre.addr(t)
	g := startNode(t, fmt.Sprintf(`{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"},
		"proxy": {"http://%s": {"en": "L2", "/": {"ou": "%s/"}}}}`, gListen, be), Options{Listen: pre.listen})
	startNode(t, fmt.Sprintf(`{"west": {"nm": "L2"}, "wstc": {"ws://%s": {}}}`, g.Addrs().Tunnel), Options{})
	waitUp(t, g, "L2")
	l := startNode(t, fmt.Sprintf(`{"west": {"nm": "L"}, "proxy": {"tcp://127.0.0.1:0": {"ea": "ws://%s", "ou": "tcp://%s"}}}`,
		g.Addrs().Tunnel, gListen), Options{})
	var entry string
	for _, a := range l.Addrs().Proxies {
		entry = a
	}
	for _, c := range headSizes {
		got := askForged(t, testutil.DialClient(t, entry), c.extra)
		if strings.Contains(got, "6.6.6.6") || strings.Contains(got, "forged") {
			t.Errorf("%s: the backend saw the client's own X-Forwarded headers: %s", c.path, got)
		}
	}
}

// TestForwardedHeadersCrossAChainByName: the middle west's listener named
// by a host name in the entry's outgoing URL ("localhost", or the host's
// own DNS name) is dialled, not handed the stream; the HTTP it gets is
// still a peer west's, whose X-Forwarded headers name the client that
// reached the chain. The backend must see that client, not the middle
// west's own loopback address (which a backend that trusts
// X-Forwarded-For for "local" requests would take for a local client).
func TestForwardedHeadersCrossAChainByName(t *testing.T) {
	be := forwardedEcho(t)
	var pre prebound
	gListen := pre.addr(t)
	_, port, _ := net.SplitHostPort(gListen)
	g := startNode(t, fmt.Sprintf(`{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"},
		"proxy": {"http://%s": {"en": "L2", "/": {"ou": "%s/"}}}}`, gListen, be), Options{Listen: pre.listen})
	startNode(t, fmt.Sprintf(`{"west": {"nm": "L2"}, "wstc": {"ws://%s": {}}}`, g.Addrs().Tunnel), Options{})
	waitUp(t, g, "L2")
	l := startNode(t, fmt.Sprintf(`{"west": {"nm": "L"}, "proxy": {"http://127.0.0.1:0": {"ea": "ws://%s",
		"/": {"ou": "http://localhost:%s/"}}}}`, g.Addrs().Tunnel, port), Options{})
	wantClientForwarded(t, strings.TrimPrefix(proxyURL(t, l), "http://"))
}

// hostEcho is an HTTP server on [::1] that answers with the Host header
// it got.
func hostEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Host)
	}))
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return ln.Addr().String()
}

// An outgoing URL with an IPv6 zone (a link-local backend) sends the
// backend a Host without the zone, which names an interface of the far
// west and is no part of a Host (RFC 6874 leaves it out of HTTP): on
// the listener's own loop (a GET) as on net/http's path (a POST).
func TestZonedTargetHostHasNoZone(t *testing.T) {
	be := hostEcho(t)
	_, port, _ := net.SplitHostPort(be)
	g := startNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://[::1]:0"}}`, Options{})
	l := startNode(t, fmt.Sprintf(`{"west": {"nm": "L"},
		"proxy": {"http://[::1]:0": {"ea": "ws://%s", "/": {"ou": "http://[::1%%25lo]:%s/"}}}}`, g.Addrs().Tunnel, port), Options{})
	base := proxyURL(t, l)
	want := "[::1]:" + port
	if code, body := getStatus(t, base+"/get"); code != 200 || body != want {
		t.Errorf("GET: %d, the backend saw Host %q, want %q", code, body, want)
	}
	resp, err := http.Post(base+"/post", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != want {
		t.Errorf("POST: %d, the backend saw Host %q, want %q", resp.StatusCode, body, want)
	}
}
