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

	"github.com/west-tunnel/west/internal/testutil"
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
// lowered to 64) now ends the loop: the connection that started it is
// cut, the log says why, and the streams end.
func TestTCPLoopBounded(t *testing.T) {
	defaultMaxStreams = 64
	t.Cleanup(func() { defaultMaxStreams = DefaultMaxStreams })
	var pre prebound
	p, tun := pre.addr(t), pre.addr(t)
	var logs testutil.Buffer
	s := startNode(t, fmt.Sprintf(`{"west": {"nm": "S"}, "wsts": {"sp": "ws://%s"}, "wstc": {"ws://%s": {}},
		"proxy": {"tcp://%s": {"en": "S", "ou": "tcp://%s"}}}`, tun, tun, p, p),
		Options{Listen: pre.listen, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	waitUp(t, s, "S")
	c, err := net.Dial("tcp", p)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	c.Write([]byte("round and round"))
	if _, err := io.ReadAll(c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the looping connection: %v, want it ended", err)
	}
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
