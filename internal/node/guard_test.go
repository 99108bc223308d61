package node

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
	"github.com/west-tunnel/west/internal/tunnel"
)

// rawRequest sends method and target, exactly as given, to addr and
// returns the status and the path the backend saw.
func rawRequest(t *testing.T, addr, method, target string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	body := ""
	if method == http.MethodPost {
		body = "Content-Length: 2\r\n\r\nhi"
	} else {
		body = "\r\n"
	}
	fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s", method, target, body)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("X-Backend-Path")
}

// guardedAdmin starts G and L, L's http:// listener routing / to a
// backend open to all and /admin to it for 10.0.0.0/8 only (not the
// loopback test client), and returns the listener's address.
func guardedAdmin(t *testing.T) string {
	t.Helper()
	be := backend(t)
	g := startNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	l := startNode(t, fmt.Sprintf(`{"west": {"nm": "L"}, "proxy": {"http://127.0.0.1:0": {"ea": "ws://%s",
		"/": {"ou": "%s/"},
		"/admin": {"ou": "%s/admin", "ca": ["10.0.0.0/8"]}}}}`, g.Addrs().Tunnel, be.URL, be.URL), Options{})
	var addr string
	for _, a := range l.Addrs().Proxies {
		addr = a
	}
	return addr
}

// A route's ca must hold whatever spelling of the path reaches it: a
// backend decodes and cleans the path it is sent, so "/%61dmin/x",
// "/x/../admin/x" and "//admin/x" sent through a wider open route are
// requests for its /admin/x.
func TestRouteACLPathSpellings(t *testing.T) {
	addr := guardedAdmin(t)
	if code, _ := rawRequest(t, addr, "GET", "/admin/x"); code != 403 {
		t.Fatalf("GET /admin/x: %d, want 403", code)
	}
	if code, _ := rawRequest(t, addr, "GET", "/pub/x"); code != 200 {
		t.Fatalf("GET /pub/x: %d, want 200", code)
	}
	for _, method := range []string{"GET", "POST"} {
		for _, target := range []string{"/%61dmin/x", "/%61dmin", "/pub/../admin/x", "/pub/%2e%2e/admin/x", "//admin/x", "/./admin/x"} {
			if code, seen := rawRequest(t, addr, method, target); code != 403 {
				t.Errorf("%s %s: %d (backend saw %q), want 403", method, target, code, seen)
			}
		}
	}
}

// TestRouteACLRefusalNamesItsList: a path that reaches a guarded route
// only once decoded and cleaned is refused naming that route's access
// list, not the wider route it matched as sent, which has none.
func TestRouteACLRefusalNamesItsList(t *testing.T) {
	addr := guardedAdmin(t)
	for _, target := range []string{"/admin/x", "/%61dmin/x", "/pub/../admin/x", "//admin/x"} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", target)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("GET %s: %v", target, err)
		}
		body, _ := io.ReadAll(resp.Body)
		c.Close()
		if resp.StatusCode != 403 || !strings.Contains(string(body), "not in the access list of /admin\n") {
			t.Errorf("GET %s: %d %q, want 403 naming the access list of /admin", target, resp.StatusCode, body)
		}
	}
}

// TestRouteACLDotSegments: dot segments reach a route's ca as the backend
// reads them, removed as RFC 3986 says: a final "." or ".." keeps its
// slash ("/admin/." is "/admin/", which a route "/admin/" takes), and
// under a route that renames its prefix ("/app" sends to "/v1"), the path
// sent is what the backend cleans ("/app/../v1/admin/x" reaches its
// "/v1/admin/x", which the route "/app/admin" guards). Paths without dot
// segments, encoded or not, go as they went; but "/admin", which many
// backends serve as "/admin/", is refused with it.
func TestRouteACLDotSegments(t *testing.T) {
	be := backend(t)
	g := startNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	l := startNode(t, fmt.Sprintf(`{"west": {"nm": "L"}, "proxy": {"http://127.0.0.1:0": {"ea": "ws://%[1]s",
		"/": {"ou": "%[2]s/"},
		"/admin/": {"ou": "%[2]s/admin/", "ca": ["10.0.0.0/8"]},
		"/app": {"ou": "%[2]s/v1"},
		"/app/admin": {"ou": "%[2]s/v1/admin", "ca": ["10.0.0.0/8"]}}}}`, g.Addrs().Tunnel, be.URL), Options{})
	var addr string
	for _, a := range l.Addrs().Proxies {
		addr = a
	}
	for _, method := range []string{"GET", "POST"} {
		for _, target := range []string{"/x/../admin/.", "/%61dmin/.", "//admin/.", "/x/../admin/y/..",
			"/app/../v1/admin/x", "/app/%2e%2e/v1/admin/x", "/app/x/../../v1/admin", "/admin"} {
			if code, seen := rawRequest(t, addr, method, target); code != 403 {
				t.Errorf("%s %s: %d (backend saw %q), want 403", method, target, code, seen)
			}
		}
		for _, target := range []string{"/x/y", "/my%20doc", "/app/x", "/app/my%20doc", "/adminx"} {
			if code, seen := rawRequest(t, addr, method, target); code != 200 {
				t.Errorf("%s %s: %d (backend saw %q), want 200", method, target, code, seen)
			}
		}
	}
}

// TestRouteACLDotSegmentsOneBackendSpeltTwice: two routes to one backend
// whose URLs spell it differently (a host's case, a port's leading zero,
// https's default port left out) are still one backend, whose other
// route's ca holds for a dot segment sent through the first.
func TestRouteACLDotSegmentsOneBackendSpeltTwice(t *testing.T) {
	be := backend(t)
	port := be.Listener.Addr().(*net.TCPAddr).Port
	g := startNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	for _, urls := range [][2]string{
		{fmt.Sprintf("http://localhost:%d", port), fmt.Sprintf("http://LOCALHOST:%d", port)},
		// Nothing need listen on 443: the request is refused before it
		// is sent, or else fails with 502.
		{"https://127.0.0.1", "https://127.0.0.1:443"},
		{"https://127.0.0.1:443", "https://127.0.0.1:0443"},
	} {
		l := startNode(t, fmt.Sprintf(`{"west": {"nm": "L"}, "proxy": {"http://127.0.0.1:0": {"ea": "ws://%s",
			"/app": {"ou": "%s/v1/public"},
			"/adm": {"ou": "%s/v1/admin", "ca": ["10.0.0.0/8"]}}}}`, g.Addrs().Tunnel, urls[0], urls[1]), Options{})
		var addr string
		for _, a := range l.Addrs().Proxies {
			addr = a
		}
		// The backend reads /v1/public/../admin/x as /v1/admin/x.
		for _, target := range []string{"/adm/x", "/app/../admin/x"} {
			if code, seen := rawRequest(t, addr, "GET", target); code != 403 {
				t.Errorf("routes to %s and %s: GET %s: %d (backend saw %q), want 403", urls[0], urls[1], target, code, seen)
			}
		}
		if urls[0][:5] == "http:" {
			if code, seen := rawRequest(t, addr, "GET", "/app/x"); code != 200 {
				t.Errorf("routes to %s and %s: GET /app/x: %d (backend saw %q), want 200", urls[0], urls[1], code, seen)
			}
		}
	}
}

// west_dial_failures_total{reason="peer_down"} counts what a listener
// here could not send for want of a tunnel: a udp:// listener's flows as
// well as HTTP requests and TCP connections.
func TestPeerDownCountsUDPFlows(t *testing.T) {
	// A tunnel server that is not there: the client stays down.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	echo := udpEcho(t)
	l, _ := runNode(t, fmt.Sprintf(`{"west": {"nm": "L", "cp": "127.0.0.1:0"},
		"proxy": {"udp://%s": {"ea": "ws://%s", "ou": "udp://%s"}}}`, freeUDPAddr(t), dead, echo), Options{})
	var entry string
	for _, a := range l.Addrs().Proxies {
		entry = a
	}
	conn, err := net.Dial("udp", entry)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cp := "http://" + l.Addrs().Control + "/metrics"
	deadline := time.Now().Add(20 * time.Second)
	for {
		conn.Write([]byte("anyone there?"))
		_, body := fetch(t, http.DefaultClient, cp)
		if n, _ := metric(body, "west_dial_failures_total", `reason="peer_down"`); n >= 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no peer_down dial failure counted for a udp flow with the tunnel down")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// A secret kept with white space at its ends (an env file's "TOKEN= x",
// a file saved with a leading tab) reaches the server through an HTTP
// header, which loses that space. Both ends read the same secret, so the
// client must be admitted.
func TestTokenWithSurroundingSpace(t *testing.T) {
	t.Setenv("WEST_TEST_TOKEN_SPACED", "  token-of-L-0123456789abcdef \t")
	g := startNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0",
		"tokens": {"L": "env:WEST_TEST_TOKEN_SPACED"}}}`, Options{})
	srv := "ws://" + g.Addrs().Tunnel
	l := startNode(t, fmt.Sprintf(`{"west": {"nm": "L"}, "wstc": {%q: {"token": "env:WEST_TEST_TOKEN_SPACED"}}}`, srv), Options{})
	waitClient(t, l, srv, tunnel.StateUp)
}

// With the peer down, clients that each send from a new port (as DNS
// resolvers do) are each counted as peer_down, but logged at most once a
// second per listener.
func TestPeerDownUDPFlowsLoggedSparingly(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	var log testutil.Buffer
	l, _ := runNode(t, fmt.Sprintf(`{"west": {"nm": "L", "cp": "127.0.0.1:0"},
		"proxy": {"udp://%s": {"ea": "ws://%s", "ou": "udp://%s"}}}`, freeUDPAddr(t), dead, udpEcho(t)),
		Options{Logger: slog.New(slog.NewTextHandler(&log, nil))})
	var entry string
	for _, a := range l.Addrs().Proxies {
		entry = a
	}
	const clients = 40
	for range clients {
		// Each open to the end, so that no two share a port, and a flow.
		c, err := net.Dial("udp", entry)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("anyone there?"))
	}
	cp := "http://" + l.Addrs().Control + "/metrics"
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body := fetch(t, http.DefaultClient, cp)
		if n, _ := metric(body, "west_dial_failures_total", `reason="peer_down"`); n >= clients {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("peer_down counted fewer than the %d clients:\n%s", clients, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := strings.Count(log.String(), "udp flow: tunnel stream failed"); n < 1 || n > 12 {
		t.Errorf("%d log lines for %d failed flows, want one a second at most:\n%s", n, clients, log.String())
	}
}
