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
