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
)

// Through a chain, the backend sees the X-Forwarded headers of the
// listener the client reached, not those of the middle west's listener,
// whose client is a west: on the fast loop and on net/http's path alike.
// A client's own X-Forwarded headers are replaced at the entry.
func TestForwardedHeadersCrossAChain(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s|%s|%s", r.Header.Values("X-Forwarded-For"), r.Header.Values("X-Forwarded-Host"), r.Header.Values("X-Forwarded-Proto"))
	}))
	defer be.Close()
	forHops(t, func(t *testing.T, hops int) {
		entry := through(t, hops, "http", be.URL+"/", "")
		for _, c := range []struct{ path, extra string }{
			{"loop", ""},
			// A head over 4 KiB goes to net/http.
			{"net/http", "X-Big: " + strings.Repeat("b", 5000) + "\r\n"},
		} {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
			conn, err := d.Dial("tcp", entry)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "GET /x HTTP/1.1\r\nHost: front.example\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: forged\r\n%s\r\n", c.extra)
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("%s: %v", c.path, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if want := "[127.0.0.2]|[front.example]|[http]"; string(body) != want {
				t.Errorf("%s: the backend saw %s, want %s", c.path, body, want)
			}
		}
	})
}

// A raw tcp:// stream into a west's HTTP listener carries whatever its
// client wrote: its X-Forwarded headers are replaced, as any client's.
func TestForwardedHeadersFromRawTCPAreReplaced(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s|%s", r.Header.Values("X-Forwarded-For"), r.Header.Values("X-Forwarded-Host"))
	}))
	defer be.Close()
	var pre prebound
	gListen := pre.addr(t)
	g := startNode(t, fmt.Sprintf(`{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"},
		"proxy": {"http://%s": {"en": "L2", "/": {"ou": "%s/"}}}}`, gListen, be.URL), Options{Listen: pre.listen})
	startNode(t, fmt.Sprintf(`{"west": {"nm": "L2"}, "wstc": {"ws://%s": {}}}`, g.Addrs().Tunnel), Options{})
	waitUp(t, g, "L2")
	l := startNode(t, fmt.Sprintf(`{"west": {"nm": "L"}, "proxy": {"tcp://127.0.0.1:0": {"ea": "ws://%s", "ou": "tcp://%s"}}}`,
		g.Addrs().Tunnel, gListen), Options{})
	var entry string
	for _, a := range l.Addrs().Proxies {
		entry = a
	}
	for _, extra := range []string{"", "X-Big: " + strings.Repeat("b", 5000) + "\r\n"} {
		conn := dialEntry(t, entry)
		fmt.Fprintf(conn, "GET /x HTTP/1.1\r\nHost: front.example\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: forged\r\n%s\r\n", extra)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(body), "6.6.6.6") || strings.Contains(string(body), "forged") {
			t.Errorf("head of %d bytes: the backend saw the client's own X-Forwarded headers: %s", len(extra), body)
		}
	}
}
