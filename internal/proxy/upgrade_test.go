package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
)

// TestH2CUpgradeIsNotForwarded: a client's "Upgrade: h2c" must not reach
// the backend. A backend that speaks h2c answers it with 101, and the
// connection turns into HTTP/2 frames the listener passes on unread: the
// client could then ask for any path of the backend, past the path table
// and the routes' access lists (h2c smuggling). RFC 9113 deprecates the
// upgrade; the request goes on as plain HTTP/1.1, as through Traefik and
// Envoy, and, from a Go release after golang/go#80416, the reverse proxy.
func TestH2CUpgradeIsNotForwarded(t *testing.T) {
	smuggled := make(chan string, 1)
	backend := rawHTTPBackend(t, func(c net.Conn, req *http.Request) bool {
		if !strings.EqualFold(req.Header.Get("Upgrade"), "h2c") {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain")
			return true
		}
		// As an h2c server would: switch, then serve what comes next,
		// whatever its path.
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
		line, _ := bufio.NewReader(c).ReadString('\n')
		smuggled <- line
		return false
	})
	target := mustURL(t, "http://"+backend+"/")
	h := NewHTTP(HTTPOptions{Dialer: tunnelPair(t), Routes: []Route{
		{Path: "/", Target: target},
		{Path: "/admin", Target: target, Allow: func(netip.Addr) bool { return false }},
	}})
	_, addr := startServer(t, h)
	for _, upgrade := range []string{"h2c", "H2C"} {
		c := testutil.DialClient(t, addr)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: "+upgrade+"\r\n"+
			"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			// Standing in for HTTP/2 frames: west reads none of it.
			io.WriteString(c, "GET /admin HTTP/1.1\r\nHost: h\r\n\r\n")
			select {
			case line := <-smuggled:
				t.Errorf("Upgrade: %s: switched to h2c, and the backend got %q past the access list of /admin", upgrade, line)
			case <-time.After(5 * time.Second):
				t.Errorf("Upgrade: %s: switched to h2c", upgrade)
			}
		} else if body, _ := io.ReadAll(resp.Body); resp.StatusCode != http.StatusOK || string(body) != "plain" {
			t.Errorf("Upgrade: %s: got %s %q, want the plain answer", upgrade, resp.Status, body)
		}
		c.Close()
	}
}

// TestUpgradeDropsHopByHopHeaders: a 101 is forwarded like any other
// answer, without the hop-by-hop fields of the backend's connection (RFC
// 9110, 7.6.1) but for the two the switch itself needs: "Connection:
// Upgrade" and Upgrade. The reverse proxy copies a 101's header as it
// came, so a field the backend named in Connection to keep it to that
// hop reached the client. The request, which the reverse proxy cleans
// itself, goes out as clean, and the switched connection still carries
// bytes both ways.
func TestUpgradeDropsHopByHopHeaders(t *testing.T) {
	asked := make(chan http.Header, 1)
	backend := rawHTTPBackend(t, func(c net.Conn, req *http.Request) bool {
		asked <- req.Header
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade, X-Secret\r\nUpgrade: tcp\r\n"+
			"X-Secret: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n"+
			"Te: trailers\r\nTrailer: X-Sum\r\nProxy-Authenticate: Basic\r\nX-End-To-End: kept\r\n\r\n")
		line, _ := bufio.NewReader(c).ReadString('\n')
		io.WriteString(c, "got "+line)
		return false
	})
	h := tunnelledTo(t, backend)
	_, loop := startServer(t, h)
	for _, addr := range []string{loop, netHTTPServer(t, h)} {
		upgradeWithHops(t, addr, asked)
	}
}

// upgradeWithHops switches a connection to addr with hop-by-hop fields
// each way, and checks those the backend got (from asked) and the client.
func upgradeWithHops(t *testing.T, addr string, asked <-chan http.Header) {
	t.Helper()
	c := testutil.DialClient(t, addr)
	io.WriteString(c, "GET /u HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade, X-Client-Hop\r\nUpgrade: tcp\r\n"+
		"X-Client-Hop: 1\r\nKeep-Alive: 300\r\nProxy-Connection: keep-alive\r\nX-Client-End: kept\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v, %v", resp, err)
	}

	sent := <-asked
	if got := sent.Values("Connection"); len(got) != 1 || got[0] != "Upgrade" {
		t.Errorf("the backend got Connection %q, want only \"Upgrade\"", got)
	}
	if got := sent.Get("Upgrade"); got != "tcp" {
		t.Errorf("the backend got Upgrade %q, want \"tcp\"", got)
	}
	for _, name := range []string{"X-Client-Hop", "Keep-Alive", "Proxy-Connection"} {
		if v := sent[name]; v != nil {
			t.Errorf("the backend got %s: %q", name, v)
		}
	}
	if sent.Get("X-Client-End") != "kept" {
		t.Errorf("the backend lost X-Client-End: %v", sent)
	}

	if got := resp.Header.Values("Connection"); len(got) != 1 || got[0] != "Upgrade" {
		t.Errorf("the client got Connection %q, want only \"Upgrade\"", got)
	}
	if got := resp.Header.Get("Upgrade"); got != "tcp" {
		t.Errorf("the client got Upgrade %q, want \"tcp\"", got)
	}
	for _, name := range []string{"X-Secret", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Proxy-Authenticate"} {
		if v := resp.Header[name]; v != nil {
			t.Errorf("the client got %s: %q", name, v)
		}
	}
	if resp.TransferEncoding != nil || resp.Close {
		t.Errorf("the client got Transfer-Encoding %q, close %v", resp.TransferEncoding, resp.Close)
	}
	if resp.Header.Get("X-End-To-End") != "kept" {
		t.Errorf("the client lost X-End-To-End: %v", resp.Header)
	}

	io.WriteString(c, "hello\n")
	if line, err := br.ReadString('\n'); line != "got hello\n" {
		t.Fatalf("over the switched connection: %q, %v", line, err)
	}
}
