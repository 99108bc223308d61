package tunnel

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
	"github.com/west-tunnel/west/internal/wire"
)

// newShedHarness is newHarness with the server's listener and ConnState
// hook counting handshakes, as the node serves it, and its warnings
// kept in logs.
func newShedHarness(t *testing.T, opts ServerOptions, logs *testutil.Buffer, shed *atomic.Int64) *harness {
	t.Helper()
	opts.Handler = echoHandler
	opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	opts.OnShed = func() { shed.Add(1) }
	h := &harness{t: t, server: NewServer(opts)}
	h.http = httptest.NewUnstartedServer(h.server)
	h.http.Listener = h.server.Listener(h.http.Listener)
	h.http.Config.ConnState = h.server.ConnState // httptest calls it from its own hook
	h.http.Start()
	h.url = "ws" + strings.TrimPrefix(h.http.URL, "http")
	t.Cleanup(func() {
		h.server.Close()
		h.http.Close()
	})
	return h
}

// dialIdle opens a TCP connection to addr from local (any if nil) that
// sends nothing.
func dialIdle(t *testing.T, local net.Addr, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: local}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// expectShed checks that c is closed by the server without a word, long
// before any handshake timeout.
func expectShed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(make([]byte, 1))
	var ne net.Error
	if n != 0 || err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection beyond the bound: read %d bytes, %v; want it closed at once", n, err)
	}
}

func TestHandshakesShedPerAddress(t *testing.T) {
	var logs testutil.Buffer
	var shed atomic.Int64
	h := newShedHarness(t, ServerOptions{}, &logs, &shed)
	addr := h.http.Listener.Addr().String()

	// A tunnel up before the flood, from the same address as the flood.
	c := h.startClient(ClientOptions{Name: "node-a"})
	waitFor(t, "session", func() bool { return h.server.Session("node-a") != nil })
	waitFor(t, "upgraded connection uncounted", func() bool { return h.server.handshakes() == 0 })

	idle := make([]net.Conn, DefaultMaxHandshakesPerIP)
	for i := range idle {
		idle[i] = dialIdle(t, nil, addr)
	}
	waitFor(t, "idle connections counted", func() bool { return h.server.handshakes() == DefaultMaxHandshakesPerIP })

	const burst = 20
	start := time.Now()
	for range burst {
		expectShed(t, dialIdle(t, nil, addr))
	}
	elapsed := time.Since(start)
	if got := shed.Load(); got != burst {
		t.Errorf("shed counted %d, want %d", got, burst)
	}
	// At most a line a second, with how many it left out.
	lines := strings.Count(logs.String(), "sheds connections")
	if lines < 1 || lines > int(elapsed/time.Second)+1 {
		t.Errorf("%d log lines for %d connections shed in %v, want one a second:\n%s", lines, burst, elapsed, logs.String())
	}
	if !strings.Contains(logs.String(), "too many from one address") {
		t.Errorf("log does not say why:\n%s", logs.String())
	}

	// The tunnel up before still carries streams.
	conn, err := c.Dial(context.Background(), wire.Header{Kind: wire.KindTCP, Target: "echo:1"})
	if err != nil {
		t.Fatalf("dial over the tunnel up before the flood: %v", err)
	}
	roundTrip(t, conn, []byte("still here"))

	// Once the idle connections go, the count does, and a new client
	// gets in.
	for _, c := range idle {
		c.Close()
	}
	waitFor(t, "closed connections uncounted", func() bool { return h.server.handshakes() == 0 })
	h.startClient(ClientOptions{Name: "node-b"})
	waitFor(t, "session after the flood", func() bool { return h.server.Session("node-b") != nil })
	waitFor(t, "upgraded connection uncounted", func() bool { return h.server.handshakes() == 0 })
}

func TestHandshakesShedInAll(t *testing.T) {
	var logs testutil.Buffer
	var shed atomic.Int64
	h := newShedHarness(t, ServerOptions{maxHandshakesPerIP: 2, maxHandshakes: 3}, &logs, &shed)
	addr := h.http.Listener.Addr().String()
	from := func(ip string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(ip)} }
	// Linux routes all of 127.0.0.0/8 to loopback, so each of these
	// source addresses is a client of its own.
	dialIdle(t, from("127.0.0.1"), addr)
	dialIdle(t, from("127.0.0.1"), addr)
	waitFor(t, "two counted", func() bool { return h.server.handshakes() == 2 })
	expectShed(t, dialIdle(t, from("127.0.0.1"), addr)) // its address's bound
	if !strings.Contains(logs.String(), "too many from one address") {
		t.Errorf("log does not say why:\n%s", logs.String())
	}

	dialIdle(t, from("127.0.0.2"), addr)
	waitFor(t, "three counted", func() bool { return h.server.handshakes() == 3 })
	// Under its address's bound, over the server's.
	expectShed(t, dialIdle(t, from("127.0.0.3"), addr))
	if got := shed.Load(); got != 2 {
		t.Errorf("shed counted %d, want 2", got)
	}
	if got := h.server.handshakes(); got != 3 {
		t.Errorf("%d counted after shedding, want 3", got)
	}
}

// TestHandshakeKey: the per-address bound counts an IPv6 /64 as one
// address, so that a holder of one cannot spread a flood over its
// 2^64 addresses; IPv4 addresses, and IPv4 in IPv6, count singly.
func TestHandshakeKey(t *testing.T) {
	for _, tc := range []struct{ a, b string }{
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff"},
		{"2001:db8:1:2::1", "2001:db8:1:2:8000::7"},
		{"192.0.2.1", "192.0.2.1"},
	} {
		if ka, kb := handshakeKey(netip.MustParseAddr(tc.a)), handshakeKey(netip.MustParseAddr(tc.b)); ka != kb {
			t.Errorf("%s and %s count apart (%s, %s), want as one", tc.a, tc.b, ka, kb)
		}
	}
	for _, tc := range []struct{ a, b string }{
		{"2001:db8:1:2::1", "2001:db8:1:3::1"},
		{"192.0.2.1", "192.0.2.2"},
		{"::ffff:192.0.2.1", "::ffff:192.0.2.2"},
	} {
		a, b := netip.MustParseAddr(tc.a).Unmap(), netip.MustParseAddr(tc.b).Unmap()
		if ka, kb := handshakeKey(a), handshakeKey(b); ka == kb {
			t.Errorf("%s and %s count as one (%s), want apart", tc.a, tc.b, ka)
		}
	}
}
