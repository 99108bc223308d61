package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/proxy"
	"github.com/west-tunnel/west/internal/testutil"
	"github.com/west-tunnel/west/internal/tunnel"
	"github.com/west-tunnel/west/internal/wire"
)

// askLoop sends a GET (the request loop's path) and a POST (net/http's)
// to url and wants each answered 508, saying why, rather than sent round
// the loop until the tunnels' stream limits, or memory, run out.
func askLoop(t *testing.T, url string) {
	t.Helper()
	c := &http.Client{Timeout: 30 * time.Second}
	for _, method := range []string{"GET", "POST"} {
		req, _ := http.NewRequest(method, url, strings.NewReader("body"))
		if method == "GET" {
			req.Body, req.ContentLength = nil, 0
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s through a loop: %v", method, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusLoopDetected || !strings.Contains(string(body), "request loop") {
			t.Fatalf("%s through a loop: %d %q, want 508 naming the loop", method, resp.StatusCode, body)
		}
	}
}

// TestChainLoopRefused: a route whose ou leads back to its own listener,
// through another west (use case 1 turned on itself) or through the west
// itself (its tunnel client dials its own tunnel server), is a loop: each
// turn opened another stream, handed to the listener in process, which
// opened another.
func TestChainLoopRefused(t *testing.T) {
	t.Run("two wests", func(t *testing.T) {
		var pre prebound
		aP, bP := pre.addr(t), pre.addr(t)
		b := startNode(t, fmt.Sprintf(`{"west": {"nm": "B"}, "wsts": {"sp": "ws://127.0.0.1:0"},
			"proxy": {"http://%s": {"en": "A", "/x": {"ou": "http://%s/x"}}}}`, bP, aP), Options{Listen: pre.listen})
		startNode(t, fmt.Sprintf(`{"west": {"nm": "A"},
			"proxy": {"http://%s": {"ea": "ws://%s", "/x": {"ou": "http://%s/x"}}}}`, aP, b.Addrs().Tunnel, bP), Options{Listen: pre.listen})
		waitUp(t, b, "A")
		askLoop(t, "http://"+aP+"/x")
	})
	t.Run("one west", func(t *testing.T) {
		// Streams from a tunnel server to its client have no limit:
		// this loop had no end.
		var pre prebound
		p, tun := pre.addr(t), pre.addr(t)
		s := startNode(t, fmt.Sprintf(`{"west": {"nm": "S"}, "wsts": {"sp": "ws://%s"}, "wstc": {"ws://%s": {}},
			"proxy": {"http://%s": {"en": "S", "/x": {"ou": "http://%s/x/y"}}}}`, tun, tun, p, p), Options{Listen: pre.listen})
		waitUp(t, s, "S")
		askLoop(t, "http://"+p+"/x")
	})
}

// TestChainViaNamesEachListener: a chain's backend reads one West-Via
// entry for each west listener the request passed, and the client's own
// Via as it sent it, and a chain that passes two listeners of one west is
// no loop.
func TestChainViaNamesEachListener(t *testing.T) {
	via := make(chan []string, 1)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		via <- append(r.Header.Values("Via"), r.Header.Values("West-Via")...)
	}))
	t.Cleanup(be.Close)
	var pre prebound
	gA, gB := pre.addr(t), pre.addr(t)
	// client -> G:gA -> L2 -> G:gB -> L2 -> backend
	g := startNode(t, fmt.Sprintf(`{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"},
		"proxy": {"http://%s": {"en": "L2", "/a": {"ou": "http://%s/b"}},
			"http://%s": {"en": "L2", "/b": {"ou": "%s/end"}}}}`, gA, gB, gB, be.URL), Options{Listen: pre.listen})
	startL2(t, g)
	for _, method := range []string{"GET", "POST"} {
		req, _ := http.NewRequest(method, "http://"+gA+"/a", strings.NewReader("body"))
		if method == "GET" {
			req.Body, req.ContentLength = nil, 0
		}
		req.Header.Set("Via", "1.1 client-proxy")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", method, resp.StatusCode)
		}
		got := strings.Join(<-via, ", ")
		entries := strings.Split(got, ", ")
		if len(entries) != 3 || entries[0] != "1.1 client-proxy" || !strings.HasPrefix(entries[1], "west-") ||
			!strings.HasPrefix(entries[2], "west-") || entries[1] == entries[2] {
			t.Fatalf("%s: backend read Via and West-Via %q, want the client's Via alone and one West-Via of each listener", method, got)
		}
	}
}

// TestChainBackToAnotherRouteIsNoLoop: a chain that leaves a listener by
// one route and comes back to it for another (G's /a leads through L2 to
// G's own /b, as through a gateway on a peer that sends some paths back)
// passes the listener twice but is no loop: it ends at /b's backend. It
// was answered 508, the listener's one name in West-Via taken for a
// loop's, where each route now has its own.
func TestChainBackToAnotherRouteIsNoLoop(t *testing.T) {
	via := make(chan []string, 1)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		via <- r.Header.Values("West-Via")
	}))
	t.Cleanup(be.Close)
	var pre prebound
	gA := pre.addr(t)
	// client -> G:gA/a -> L2 -> G:gA/b -> L2 -> backend
	g := startNode(t, fmt.Sprintf(`{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"},
		"proxy": {"http://%s": {"en": "L2", "/a": {"ou": "http://%s/b"}, "/b": {"ou": "%s/end"}}}}`, gA, gA, be.URL),
		Options{Listen: pre.listen})
	startL2(t, g)
	client := &http.Client{Timeout: 10 * time.Second}
	for _, method := range []string{"GET", "POST"} {
		req, _ := http.NewRequest(method, "http://"+gA+"/a", strings.NewReader("body"))
		if method == "GET" {
			req.Body, req.ContentLength = nil, 0
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s through G's /a and back to its /b: %d %q, want the backend's 200", method, resp.StatusCode, body)
		}
		if got := <-via; len(got) != 2 || got[0] == got[1] {
			t.Fatalf("%s: the backend read West-Via %q, want one entry for each route passed", method, got)
		}
	}
}

// TestTCPLoopBounded: a tcp:// route that leads back to its own listener
// through the west's own tunnel is a loop that nothing in its bytes can
// mark, and every stream of it goes from the tunnel server to its
// client. Those had no limit, so each turn took another stream and more
// goroutines, without end. The client's limit (DefaultMaxStreams, here
// lowered to 64) ends the loop: the connection that started it is cut,
// the log says why, and the streams end. The hop count now ends it far
// sooner (TestTCPLoopRefused); the limit still does where the count is
// lost, as with a west that predates it, which this one plays.
func TestTCPLoopBounded(t *testing.T) {
	defaultMaxStreams = 64
	t.Cleanup(func() { defaultMaxStreams = DefaultMaxStreams })
	var pre prebound
	p, tun := pre.addr(t), pre.addr(t)
	var logs testutil.Buffer
	s := startNode(t, fmt.Sprintf(`{"west": {"nm": "S"}, "wsts": {"sp": "ws://%s"}, "wstc": {"ws://%s": {}},
		"proxy": {"tcp://%s": {"en": "S", "ou": "tcp://%s"}}}`, tun, tun, p, p),
		Options{Listen: pre.listen, Logger: slog.New(slog.NewTextHandler(&logs, nil)), Mux: tunnel.MuxOptions{NoHops: true}})
	waitUp(t, s, "S")
	loopConn(t, p)
	if !strings.Contains(logs.String(), "too many open streams") {
		t.Errorf("the log does not say the loop met the stream limit:\n%s", logs.String())
	}
	waitFor(t, "the loop's streams to end", func() bool { return s.Server().Session("S").Streams() == 0 })
}

// TestClientMaxStreams: a wstc entry's max_streams bounds the streams its
// server may have open towards the west at once; one more is refused as
// overloaded, and the limit holds again once one ends.
func TestClientMaxStreams(t *testing.T) {
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	go func() {
		for {
			c, err := target.Accept()
			if err != nil {
				return
			}
			// Open until the stream's client has closed its side.
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	g := startNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	l := startNode(t, fmt.Sprintf(`{"west": {"nm": "L", "cp": "127.0.0.1:0"}, "wstc": {"ws://%s": {"max_streams": 3}}}`,
		g.Addrs().Tunnel), Options{})
	waitUp(t, g, "L")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	open := func() (net.Conn, error) {
		return g.Server().Dial(ctx, "L", wire.Header{Kind: wire.KindTCP, Target: target.Addr().String()})
	}
	var streams []net.Conn
	for range 3 {
		s, err := open()
		if err != nil {
			t.Fatalf("stream %d of 3: %v", len(streams)+1, err)
		}
		streams = append(streams, s)
	}
	var reject *wire.RejectError
	if _, err := open(); !errors.As(err, &reject) || reject.Code != wire.CodeOverloaded {
		t.Fatalf("a fourth stream with max_streams 3: %v, want it refused as overloaded", err)
	}
	// Counted as a tunnel server's refusals are, as the README's
	// west_dial_failures_total says: reason "overloaded".
	client := &http.Client{Timeout: 5 * time.Second}
	_, body := fetch(t, client, "http://"+l.Addrs().Control+"/metrics")
	if v, _ := metric(body, "west_dial_failures_total", `reason="overloaded"`); v != 1 {
		t.Errorf(`L's west_dial_failures_total{reason="overloaded"} = %v after refusing one stream over its max_streams; want 1`, v)
	}
	streams[0].Close()
	waitFor(t, "a stream's place freed", func() bool {
		s, err := open()
		if err != nil {
			return false
		}
		streams = append(streams, s)
		return true
	})
	for _, s := range streams {
		s.Close()
	}
}

// loopRig is a loop of routes through wests' own listeners (loopWests).
type loopRig struct {
	entry string   // the looping listener's address
	real  []string // the addresses of listeners to a real target
	nodes []*Node  // the wests: S, or A and B
	logs  *testutil.Buffer
}

// loopWests starts a loop of routes of scheme ("tcp" or "udp") through
// wests' own listeners: on one west, whose tunnel client dials its own
// tunnel server and whose listener's route leads back to itself; or on
// two, A dialling B, A's listener leading to B's and B's back to A's. The
// targets may name the listeners by another host (host; "" keeps
// 127.0.0.1), which a far side dials rather than hand the stream over.
// With real not "", each west has one more listener of scheme, to real,
// through the loop's tunnel (B's through A), for a real client. Each west
// has a control port, and with old (two wests) A behaves as a west that
// predates header version 2.
func loopWests(t *testing.T, scheme string, wests int, host, real string, old bool) *loopRig {
	t.Helper()
	var pre prebound
	addr := func() string {
		if scheme == "udp" {
			return freeUDPAddr(t)
		}
		return pre.addr(t)
	}
	spelt := func(a string) string {
		if host == "" {
			return a
		}
		_, port, _ := net.SplitHostPort(a)
		return net.JoinHostPort(host, port)
	}
	rig := &loopRig{entry: addr(), logs: new(testutil.Buffer)}
	opts := Options{Listen: pre.listen, Logger: slog.New(slog.NewTextHandler(rig.logs, nil))}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the wests' logs:\n%s", rig.logs)
		}
	})
	route := func(from, to, peer string) string {
		return fmt.Sprintf(`%q: {%s, "ou": "%s://%s"}`, scheme+"://"+from, peer, scheme, to)
	}
	withReal := func(proxies, peer string) string {
		if real == "" {
			return proxies
		}
		r := addr()
		rig.real = append(rig.real, r)
		return proxies + ", " + route(r, real, peer)
	}
	if wests == 1 {
		tun := pre.addr(t)
		proxies := withReal(route(rig.entry, spelt(rig.entry), `"en": "S"`), `"en": "S"`)
		s := startNode(t, fmt.Sprintf(`{"west": {"nm": "S", "cp": "127.0.0.1:0"}, "wsts": {"sp": "ws://%s"}, "wstc": {"ws://%s": {}},
			"proxy": {%s}}`, tun, tun, proxies), opts)
		rig.nodes = []*Node{s}
		rig.waitUp(t)
		return rig
	}
	bP := addr()
	b := startNode(t, fmt.Sprintf(`{"west": {"nm": "B", "cp": "127.0.0.1:0"}, "wsts": {"sp": "ws://127.0.0.1:0"}, "proxy": {%s}}`,
		withReal(route(bP, spelt(rig.entry), `"en": "A"`), `"en": "A"`)), opts)
	ea := fmt.Sprintf(`"ea": "ws://%s"`, b.Addrs().Tunnel)
	aOpts := opts
	aOpts.Mux.NoHops = old
	a := startNode(t, fmt.Sprintf(`{"west": {"nm": "A", "cp": "127.0.0.1:0"}, "proxy": {%s}}`,
		withReal(route(rig.entry, spelt(bP), ea), ea)), aOpts)
	rig.nodes = []*Node{a, b}
	rig.waitUp(t)
	return rig
}

// waitUp waits for the tunnel's two ends: the server may hold its
// session before the client has taken its own.
func (r *loopRig) waitUp(t *testing.T) {
	t.Helper()
	waitFor(t, "the tunnel up at both ends", func() bool {
		server, client := r.tunnel()
		return server != nil && client != nil
	})
}

// sum sums the metric name, with labels, over the wests' control ports.
func (r *loopRig) sum(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	var sum float64
	for _, n := range r.nodes {
		_, body := fetch(t, client, "http://"+n.Addrs().Control+"/metrics")
		v, _ := metric(body, name, labels...)
		sum += v
	}
	return sum
}

// tunnel is the session of the loop's tunnel on its server, and on its
// client.
func (r *loopRig) tunnel() (server, client *tunnel.Session) {
	if len(r.nodes) == 1 {
		return r.nodes[0].Server().Session("S"), r.nodes[0].Client(r.nodes[0].State().Clients[0].URL).Status().Session
	}
	return r.nodes[1].Server().Session("A"), r.nodes[0].Client("ws://" + r.nodes[1].Addrs().Tunnel).Status().Session
}

// loopLogged checks that the logs name the loop, as the far side that
// refused its stream logs it.
func (r *loopRig) loopLogged(t *testing.T) {
	t.Helper()
	waitFor(t, "the loop's refusal logged", func() bool {
		s := r.logs.String()
		return strings.Contains(s, "stream refused: a route leads back to itself (loop)") &&
			strings.Contains(s, fmt.Sprintf("handed through %d wests' own listeners: a route leads back to itself", proxy.MaxHops))
	})
}

// loopConn connects to the looping listener at addr, sends, and wants
// the connection ended.
func loopConn(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if errors.Is(err, syscall.ECONNRESET) {
		// The listener opens its stream as it accepts, so the loop may
		// go round and reset the connection before connect returns.
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	c.Write([]byte("round and round"))
	if _, err := io.ReadAll(c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the looping connection: %v, want it ended", err)
	}
}

// TestTCPLoopRefused: a tcp:// route that leads back to its own listener,
// through the west's own tunnel or a peer's listener, or by a name of the
// listener's address that the far side dials rather than hand the stream
// over, ends after proxy.MaxHops turns: each listener a stream is handed
// to opens the next with the hop count one more, and the far side
// refuses it at the limit, naming the loop. Before, it went round until a
// tunnel's stream limit (8192 streams by default; here lowered, so that
// the test fails by counting rather than by the race detector's limit on
// goroutines).
func TestTCPLoopRefused(t *testing.T) {
	defaultMaxStreams = 256
	t.Cleanup(func() { defaultMaxStreams = DefaultMaxStreams })
	for _, tc := range []struct {
		name  string
		wests int
		host  string
	}{
		{"one west", 1, ""},
		{"two wests", 2, ""},
		{"one west, its listener named localhost", 1, "localhost"},
		{"two wests, their listeners named localhost", 2, "localhost"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rig := loopWests(t, "tcp", tc.wests, tc.host, "", false)
			loopConn(t, rig.entry)
			rig.loopLogged(t)
			// Each turn is a connection to a listener, counted as it
			// ends: the client's, then one for each stream handed over
			// (or dialled to the listener), the last of them the one
			// whose stream onward was refused.
			want := float64(proxy.MaxHops + 1)
			server, _ := rig.tunnel()
			waitFor(t, "the loop's connections to end", func() bool {
				return rig.sum(t, "west_tcp_connections_total") >= want && server.Streams() == 0
			})
			if n := rig.sum(t, "west_tcp_connections_total"); n != want {
				t.Errorf("the loop made %v connections to the wests' listeners, want %v", n, want)
			}
			// Counted once, by the far side that refused the stream,
			// not again by each west the refusal passes back through
			// (README: west_dial_failures_total).
			if n := rig.sum(t, "west_dial_failures_total", `reason="loop"`); n != 1 {
				t.Errorf(`west_dial_failures_total{reason="loop"} = %v, want the one refusal counted once`, n)
			}
			if strings.Contains(rig.logs.String(), "too many open streams") {
				t.Error("the loop met the stream limit")
			}
		})
	}
}

// udpExchange sends msg on c, a real client's flow, until it is echoed.
func udpExchange(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	buf := make([]byte, 100)
	for range 20 { // UDP may lose a datagram
		c.Write([]byte(msg))
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if n, err := c.Read(buf); err == nil {
			if got := string(buf[:n]); got != "echo "+msg {
				t.Fatalf("real client: got %q, want %q", got, "echo "+msg)
			}
			return
		}
	}
	t.Fatalf("real client: %q never echoed", msg)
}

// TestUDPLoopRefused: a udp:// route that leads back to its own listener
// sent each turn through a real socket, which reached the listener as a
// new flow: it went round until a tunnel's stream limit, or the
// listener's max_conns flows turned over. Now the far side notes the
// socket it sends from, the listener's flow from it carries the stream's
// hop count on, and the stream at proxy.MaxHops is refused: the datagram
// is dropped, counted as a loop, and the route is held. A real client of
// another listener on each west, through the same tunnel, is served
// throughout, its flow not taken for a turn of the loop.
func TestUDPLoopRefused(t *testing.T) {
	defaultMaxStreams = 256
	t.Cleanup(func() { defaultMaxStreams = DefaultMaxStreams })
	for _, wests := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d wests", wests), func(t *testing.T) {
			rig := loopWests(t, "udp", wests, "", udpEcho(t), false)
			var reals []net.Conn
			for _, a := range rig.real {
				c, err := net.Dial("udp", a)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				reals = append(reals, c)
			}
			exchange := func(msg string) {
				t.Helper()
				for _, c := range reals {
					udpExchange(t, c, msg)
				}
			}
			exchange("before")
			loop, err := net.Dial("udp", rig.entry)
			if err != nil {
				t.Fatal(err)
			}
			defer loop.Close()
			loop.Write([]byte("round and round"))
			exchange("while")
			waitFor(t, "the looping datagram dropped as a loop", func() bool {
				return rig.sum(t, "west_udp_datagrams_dropped_total", `reason="loop"`) >= 1
			})
			rig.loopLogged(t)
			exchange("after")
			// Again: the loop's flows are open, and carry it round to
			// the held route, which starts no flow.
			loop.Write([]byte("round again"))
			waitFor(t, "the second looping datagram dropped", func() bool {
				return rig.sum(t, "west_udp_datagrams_dropped_total", `reason="loop"`) >= 2
			})
			exchange("still")
			if n := rig.sum(t, "west_udp_datagrams_dropped_total"); n != 2 {
				t.Errorf("%v datagrams dropped, want the two that looped", n)
			}
			// A stream for each turn the far side took (the one it
			// refused is not counted), and one for each real client.
			server, _ := rig.tunnel()
			if n, want := server.Stats().StreamsTotal.Load(), int64(proxy.MaxHops+len(reals)); n != want {
				t.Errorf("the tunnel carried %d streams, want %d: %d turns of the loop and the real clients'", n, want, proxy.MaxHops)
			}
		})
	}
}

// TestHopsWithOlderWest: a west that predates header version 2 (A, with
// Mux.NoHops) and a newer one (B): B sends A version 1, so streams work
// both ways, the hop count lost at A; a loop through both is then
// bounded as before, by a tunnel's stream limit.
func TestHopsWithOlderWest(t *testing.T) {
	defaultMaxStreams = 64
	t.Cleanup(func() { defaultMaxStreams = DefaultMaxStreams })
	rig := loopWests(t, "tcp", 2, "", testutil.EchoServer(t), true)
	server, client := rig.tunnel()
	if server.PeerHops() || client.PeerHops() {
		t.Errorf("PeerHops: B's %v, A's %v; want neither to send the other header version 2", server.PeerHops(), client.PeerHops())
	}
	for _, a := range rig.real { // A's to B, then B's to A
		echoThrough(t, a)
	}
	loopConn(t, rig.entry)
	if !strings.Contains(rig.logs.String(), "too many open streams") {
		t.Error("the log does not say the loop met the stream limit")
	}
	waitFor(t, "the loop's streams to end", func() bool { return server.Streams() == 0 })
}

// echoThrough sends a line through the tcp:// listener at addr, to an
// echo server, and wants it back.
func echoThrough(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("hello\n"))
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "hello\n" {
		t.Fatalf("through %s: %q, %v; want the echo", addr, got, err)
	}
}
