package node

// Regression tests for bugs a review found (stop 30); each failed before
// its fix.

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
	"github.com/west-tunnel/west/internal/tunnel"
)

// quietBackend is a TCP server that reads each connection to its end and
// then holds it open without writing, as a server that answers only after
// some event (a long poll, a job queue) would. It reports each EOF.
func quietBackend(t *testing.T) (addr string, sawEOF <-chan struct{}, closeAll func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	eof := make(chan struct{}, 16)
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() {
				io.Copy(io.Discard, c)
				eof <- struct{}{}
			}()
		}
	}()
	closeAll = func() {
		ln.Close()
		<-done
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}
	t.Cleanup(closeAll)
	return ln.Addr().String(), eof, closeAll
}

// halfClosedStream connects to a TCP listener, sends a little and
// half-closes, and waits until the backend behind the tunnel saw the end.
func halfClosedStream(t *testing.T, listener string, sawEOF <-chan struct{}) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", listener)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte("request\n")); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	select {
	case <-sawEOF:
	case <-time.After(10 * time.Second):
		t.Fatal("backend never saw the half-close")
	}
	return c
}

// TestClientReconnectsWithHalfClosedStream: a tunnel client whose tunnel
// drops reconnects, even while its far side serves a TCP stream the opener
// has half-closed, to a backend that says nothing. The stream's handler
// outlived the session and held the client's redial (see the tunnel
// package's TestClientRedialsWhileHandlerWaits).
func TestClientReconnectsWithHalfClosedStream(t *testing.T) {
	be, sawEOF, _ := quietBackend(t)
	g := startNode(t, fmt.Sprintf(`{
		"west": {"nm": "rv.G"},
		"wsts": {"sp": "ws://127.0.0.1:0"},
		"proxy": {"tcp://127.0.0.1:0": {"en": "rv.L", "ou": "tcp://%s"}}
	}`, be), faultOpts(t))
	relay := testutil.StartRelay(t, g.Addrs().Tunnel)
	url := "ws://" + relay.Addr()
	l := startNode(t, fmt.Sprintf(`{"west": {"nm": "rv.L"}, "wstc": {%q: {}}}`, url), faultOpts(t))
	waitUp(t, g, "rv.L")
	var entry string
	for _, a := range g.Addrs().Proxies {
		entry = a
	}

	halfClosedStream(t, entry, sawEOF)
	if n := relay.Drop(); n != 1 {
		t.Fatalf("dropped %d tunnel connections, want 1", n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for l.Client(url).Status().Connects < 2 {
		if time.Now().After(deadline) {
			st := l.Client(url).Status()
			t.Fatalf("tunnel client did not reconnect within 10s of the drop: state %s, connects %d", st.State, st.Connects)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestServerStopsWithHalfClosedStream: a west whose tunnel server carries
// such a stream stops within its grace. The tunnel server's Close waited
// for the stream's handler, whose context ended only after the stop.
func TestServerStopsWithHalfClosedStream(t *testing.T) {
	be, sawEOF, closeBackend := quietBackend(t)
	opts := faultOpts(t)
	opts.ShutdownGrace = 500 * time.Millisecond
	g, stopG := runNode(t, `{"west": {"nm": "rv2.G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, opts)
	l := startNode(t, fmt.Sprintf(`{
		"west": {"nm": "rv2.L"},
		"proxy": {"tcp://127.0.0.1:0": {"ea": "ws://%s", "ou": "tcp://%s"}}
	}`, g.Addrs().Tunnel, be), faultOpts(t))
	waitUp(t, g, "rv2.L")
	halfClosedStream(t, proxyURL(t, l)[len("http://"):], sawEOF)

	stopped := make(chan time.Duration, 1)
	go func() { stopped <- stopG() }()
	select {
	case d := <-stopped:
		t.Logf("G stopped in %s", d.Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Errorf("G did not stop within 10s (grace %s) while a half-closed stream waited on a quiet backend", opts.ShutdownGrace)
		// Closing the backend's side ends the stuck handler, and the stop.
		closeBackend()
		d := <-stopped
		t.Logf("G stopped %s after the stop began, once the backend closed", d.Round(time.Millisecond))
	}
}

// TestReloadDrainsRemovedListenerAndItsClient: a request in flight through
// a listener a reload removes finishes, though the listener's tunnel client
// is removed with it. The client was stopped at once, cutting the request
// (502) that the listener's drain was waiting for.
func TestReloadDrainsRemovedListenerAndItsClient(t *testing.T) {
	be := backend(t)
	g, _ := runNode(t, `{"west": {"nm": "rv3.G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	g2, _ := runNode(t, `{"west": {"nm": "rv3.G2"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	srv, srv2 := "ws://"+g.Addrs().Tunnel, "ws://"+g2.Addrs().Tunnel
	var pre prebound
	keep, drop := pre.addr(t), pre.addr(t)
	conf := func(extra string) string {
		return fmt.Sprintf(`{"west": {"nm": "rv3.L"}, "proxy": {
			"http://%s": {"ea": %q, "/": {"ou": "%s/x"}}%s}}`, keep, srv, be.URL, extra)
	}
	l, _ := runNode(t, conf(fmt.Sprintf(`, "http://%s": {"ea": %q, "/": {"ou": "%s/x"}}`, drop, srv2, be.URL)),
		Options{Listen: pre.listen, ShutdownGrace: 10 * time.Second})
	waitClient(t, l, srv2, tunnel.StateUp)

	// /x/slow answers 200 after 3s.
	res := getLater("http://" + drop + "/slow")
	time.Sleep(300 * time.Millisecond) // the request is in flight at the backend
	if err := l.Reload(mustParse(t, conf(""))); err != nil {
		t.Fatalf("reload: %v", err)
	}
	select {
	case r := <-res:
		if r.err != nil || r.code != http.StatusOK {
			t.Fatalf("request in flight through the removed listener: status %d, %v; want it drained (200)", r.code, r.err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("request in flight never ended")
	}
}

// TestReloadReAddingARetiringClient: a reload that names again the server
// of a client still retiring (its removed listener draining) starts a new
// client, which takes the name on the server. The old one then stops: it
// does not redial and take the name back for the rest of the grace.
func TestReloadReAddingARetiringClient(t *testing.T) {
	be := backend(t)
	g, _ := runNode(t, `{"west": {"nm": "rv4.G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	srv := "ws://" + g.Addrs().Tunnel
	var pre prebound
	listener := pre.addr(t)
	with := fmt.Sprintf(`{"west": {"nm": "rv4.L"}, "proxy": {
		"http://%s": {"ea": %q, "/": {"ou": "%s/x"}}}}`, listener, srv, be.URL)
	l, _ := runNode(t, with, Options{Listen: pre.listen, ShutdownGrace: 10 * time.Second})
	waitClient(t, l, srv, tunnel.StateUp)

	getLater("http://" + listener + "/slow") // keeps the old client retiring
	time.Sleep(300 * time.Millisecond)
	if err := l.Reload(mustParse(t, `{"west": {"nm": "rv4.L"}}`)); err != nil {
		t.Fatalf("reload without the client: %v", err)
	}
	if err := l.Reload(mustParse(t, with)); err != nil {
		t.Fatalf("reload with it again: %v", err)
	}
	waitClient(t, l, srv, tunnel.StateUp)
	time.Sleep(1500 * time.Millisecond) // several of the old client's backoffs
	if st := l.Client(srv).Status(); st.State != tunnel.StateUp || st.Connects != 1 {
		t.Errorf("the new client: state %s after %d connects; want up after 1 (the old one took its name back)", st.State, st.Connects)
	}
}

// TestReloadRetiresClientHeldByIdleStreams: a tunnel client a reload
// removes stops once what it carries has ended, not at the end of the
// grace, though its server keeps an HTTP stream to it idle for reuse
// (case 2): told of the drain, the server closes it.
func TestReloadRetiresClientHeldByIdleStreams(t *testing.T) {
	be := backend(t)
	g, _ := runNode(t, fmt.Sprintf(`{"west": {"nm": "rv5.G"}, "wsts": {"sp": "ws://127.0.0.1:0"},
		"proxy": {"http://127.0.0.1:0": {"en": "rv5.L", "/": {"ou": "%s/x"}}}}`, be.URL), Options{})
	l, _ := runNode(t, fmt.Sprintf(`{"west": {"nm": "rv5.L"}, "wstc": {"ws://%s": {}}}`, g.Addrs().Tunnel),
		Options{ShutdownGrace: 10 * time.Second})
	waitUp(t, g, "rv5.L")
	if code, _, _ := get(t, proxyURL(t, g)+"/kept"); code != http.StatusOK {
		t.Fatalf("GET through the tunnel: %d", code)
	}
	if n := g.Server().Session("rv5.L").Stats().StreamsOpen.Load(); n != 1 {
		t.Fatalf("the server keeps %d streams open after the request, want 1 idle for reuse", n)
	}
	start := time.Now()
	if err := l.Reload(mustParse(t, `{"west": {"nm": "rv5.L"}}`)); err != nil {
		t.Fatalf("reload without the client: %v", err)
	}
	for g.Server().Session("rv5.L") != nil {
		if time.Since(start) > 8*time.Second {
			t.Fatal("the removed client's tunnel was still up after 8s: the idle stream held it")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("the removed client's tunnel ended %v after the reload", time.Since(start).Round(time.Millisecond))
}
