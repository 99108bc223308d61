package proxy

// What a client can make a listener hold or log, as often as it likes.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
	"github.com/west-tunnel/west/internal/tunnel"
	"github.com/west-tunnel/west/internal/wire"
)

// countLevel counts the lines at level in a text log.
func countLevel(log, level string) int {
	return strings.Count(log, "level="+level)
}

// TestTCPRefusedClientsLogLittle: a client outside a tcp:// listener's
// access list, or any client while the peer is down, can connect as often
// as it likes; each connection is refused, but the log, at the default
// level, should get about one line a second, as for every other line
// others can cause at will (lograte).
func TestTCPRefusedClientsLogLittle(t *testing.T) {
	const conns = 200
	for _, tc := range []struct {
		name string
		opts TCPOptions
	}{
		{"outside ca", TCPOptions{Target: "127.0.0.1:1", Dialer: &refusingDialer{},
			Allow: func(netip.Addr) bool { return false }}},
		{"peer down", TCPOptions{Target: "127.0.0.1:1", Dialer: &refusingDialer{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var log testutil.Buffer
			tc.opts.Logger = slog.New(slog.NewTextHandler(&log, nil)) // Info: west's default
			addr := startTCP(t, tc.opts)
			start := time.Now()
			for range conns {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					continue // refused so fast that the connect saw the reset
				}
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				io.Copy(io.Discard, c) // until the listener hangs up
				c.Close()
			}
			time.Sleep(100 * time.Millisecond)
			secs := int(time.Since(start)/time.Second) + 1
			if n := countLevel(log.String(), "WARN"); n > secs+2 {
				t.Errorf("%d refused connections in %d s gave %d warning lines; want about one a second", conns, secs, n)
			}
		})
	}
}

// TestHTTPPeerDownLogsLittle: while the peer is down, every request to
// an http:// listener is answered 503; anyone who reaches the listener
// can send as many as it likes, and each gives a warning line.
func TestHTTPPeerDownLogsLittle(t *testing.T) {
	var log testutil.Buffer
	h := NewHTTP(HTTPOptions{
		Routes: []Route{{Path: "/", Target: mustURL(t, "http://127.0.0.1:1/")}},
		Dialer: DialerFunc(func(context.Context, wire.Header) (net.Conn, error) { return nil, tunnel.ErrPeerDown }),
		Logger: slog.New(slog.NewTextHandler(&log, nil)),
	})
	_, addr := startServer(t, h)
	const reqs = 200
	start := time.Now()
	c := &http.Client{}
	for i := range reqs {
		resp, err := c.Get(fmt.Sprintf("http://%s/x%d", addr, i))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("status %d, want 503", resp.StatusCode)
		}
	}
	secs := int(time.Since(start)/time.Second) + 1
	if n := countLevel(log.String(), "WARN"); n > secs+2 {
		t.Errorf("%d requests answered 503 in %d s gave %d warning lines; want about one a second", reqs, secs, n)
	}
}

// TestStalledRequestBodyIsCut: a client sends a request head announcing a
// body, a few bytes of it, and then nothing, for ever. A connection that
// idles between requests is closed after the server's IdleTimeout, and
// one that stalls in its head after ReadHeaderTimeout; one that stalls
// in its body is held for ever, with its tunnel stream and the far
// side's connection to the backend (nginx: client_body_timeout, 60 s).
func TestStalledRequestBodyIsCut(t *testing.T) {
	backendOpen := new(atomic.Int64)
	backend, _ := rawBackend(t, func(c net.Conn) {
		backendOpen.Add(1)
		defer backendOpen.Add(-1)
		io.Copy(io.Discard, c) // reads all it gets, answers nothing
	})
	h := tunnelledTo(t, backend)
	const idle = time.Second
	_, addr := startServerWith(t, h, &http.Server{Handler: h, ReadHeaderTimeout: idle / 2, IdleTimeout: idle})
	const clients = 20
	var conns []net.Conn
	for range clients {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nhello")
		conns = append(conns, c)
	}
	time.Sleep(4 * idle)
	held := 0
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1024)); isTimeout(err) {
			held++
		}
	}
	t.Logf("after %v of silence: %d of %d clients still connected; %d backend connections open", 4*idle, held, clients, backendOpen.Load())
	if held > 0 || backendOpen.Load() > 0 {
		t.Errorf("clients silent mid-body for 4× IdleTimeout: %d of %d still held, with %d backend connections; want none", held, clients, backendOpen.Load())
	}
}
