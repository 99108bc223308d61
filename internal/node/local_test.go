package node

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
)

// countingListener counts the connections its socket accepts.
type countingListener struct {
	net.Listener
	accepted *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

// countAccepts wraps pre.listen so that the sockets of addrs count, in
// the returned counter, the connections they accept.
func countAccepts(pre *prebound, addrs ...string) (func(network, addr string) (net.Listener, error), *atomic.Int64) {
	accepted := new(atomic.Int64)
	return func(network, addr string) (net.Listener, error) {
		ln, err := pre.listen(network, addr)
		if err == nil && slices.Contains(addrs, addr) {
			ln = countingListener{ln, accepted}
		}
		return ln, err
	}, accepted
}

// startL2 starts L2, a tunnel client of g, and waits until g has it.
func startL2(t *testing.T, g *Node) {
	t.Helper()
	startNode(t, fmt.Sprintf(`{"west": {"nm": "L2"}, "wstc": {"ws://%s": {}}}`, g.Addrs().Tunnel), Options{})
	waitUp(t, g, "L2")
}

// chainThroughG starts case 3 (L → G's own listeners → L2) with G's
// listeners counting the connections their sockets accept. G has an
// http:// listener with an open route /by, a route /deny for 10.0.0.0/8
// only, and a tcp:// listener to echo; L sends /bx and /dx to the first,
// and its tcp:// listener to the second. gWest is added to G's "west".
func chainThroughG(t *testing.T, backendURL, echo, gWest string) (gHTTP, lHTTP, lTCP string, accepted *atomic.Int64) {
	t.Helper()
	var pre prebound
	gHTTP, gTCP := pre.addr(t), pre.addr(t)
	listen, accepted := countAccepts(&pre, gHTTP, gTCP)
	g := startNode(t, fmt.Sprintf(`{
		"west": {"nm": "G" %s},
		"wsts": {"sp": "ws://127.0.0.1:0"},
		"proxy": {
			"http://%s": {"en": "L2", "/by": {"ou": "%s/b", "ca": ["127.0.0.1"]}, "/deny": {"ou": "%s/b", "ca": ["10.0.0.0/8"]}},
			"tcp://%s": {"en": "L2", "ou": "tcp://%s"}
		}
	}`, gWest, gHTTP, backendURL, backendURL, gTCP, echo), Options{Listen: listen})
	startL2(t, g)
	l := startNode(t, fmt.Sprintf(`{
		"west": {"nm": "L"},
		"proxy": {
			"http://127.0.0.1:0": {"ea": "ws://%s", "/bx": {"ou": "http://%s/by"}, "/dx": {"ou": "http://%s/deny"}},
			"tcp://127.0.0.1:0": {"ea": "ws://%s", "ou": "tcp://%s"}
		}
	}`, g.Addrs().Tunnel, gHTTP, gHTTP, g.Addrs().Tunnel, gTCP), Options{})
	addrs := l.Addrs().Proxies
	return gHTTP, addrs["http://127.0.0.1:0"], addrs["tcp://127.0.0.1:0"], accepted
}

// TestChainHandsStreamsToOwnListener: in the middle of a chain, a stream
// for one of G's own listeners is served by that listener without a
// connection to its socket, and the listener treats it as a connection
// from 127.0.0.1: same routes, access lists, bodies, half-close.
func TestChainHandsStreamsToOwnListener(t *testing.T) {
	be := backend(t)
	echo := testutil.EchoServer(t)
	gHTTP, lHTTP, lTCP, accepted := chainThroughG(t, be.URL, echo, "")
	client := &http.Client{Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()

	for i := range 3 { // the listener's own loop, on one kept-alive stream
		resp, err := client.Get(fmt.Sprintf("http://%s/bx/deep%d?z=%d", lHTTP, i, i))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		h := resp.Header
		if resp.StatusCode != 200 || h.Get("X-Backend-Path") != fmt.Sprintf("/b/deep%d", i) || h.Get("X-Backend-Query") != fmt.Sprintf("z=%d", i) {
			t.Fatalf("GET %d: %d, path %q query %q", i, resp.StatusCode, h.Get("X-Backend-Path"), h.Get("X-Backend-Query"))
		}
		// G's listener, which replaces X-Forwarded-For, saw G itself.
		if xff := h.Get("X-Backend-Forwarded-For"); xff != "127.0.0.1" {
			t.Errorf("X-Forwarded-For %q, want 127.0.0.1", xff)
		}
	}
	// A body takes net/http's path in G's listener.
	body := bytes.Repeat([]byte("west "), 200_000)
	resp, err := client.Post("http://"+lHTTP+"/bx/echo", "text/plain", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || !bytes.Equal(got, body) {
		t.Fatalf("POST: %d, %d bytes back of %d, %v", resp.StatusCode, len(got), len(body), err)
	}
	// G's access list still judges the address a connection would come from.
	if status, _, _ := get(t, "http://"+lHTTP+"/dx/x"); status != http.StatusForbidden {
		t.Errorf("route for 10.0.0.0/8 only: status %d, want 403", status)
	}

	// Raw TCP, half-closed: the reply still comes back whole.
	c, err := net.Dial("tcp", lTCP)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	sent := strings.Repeat("echo ", 100_000)
	go func() {
		io.WriteString(c, sent)
		c.(*net.TCPConn).CloseWrite()
	}()
	echoed, err := io.ReadAll(c)
	if err != nil || string(echoed) != sent {
		t.Fatalf("tcp echo: %d bytes of %d, %v", len(echoed), len(sent), err)
	}

	if n := accepted.Load(); n != 0 {
		t.Errorf("G's sockets accepted %d connections; streams should not need any", n)
	}
	// A client of G's listener itself still connects to its socket.
	if status, _, _ := get(t, "http://"+gHTTP+"/by/direct"); status != 200 {
		t.Errorf("direct to G's listener: status %d", status)
	}
	if n := accepted.Load(); n != 1 {
		t.Errorf("G's sockets accepted %d connections, want the direct one", n)
	}
}

// TestChainHandOverKeepsDialPolicy: a stream for G's own listener passes
// G's dial policy first, as a dial to it would.
func TestChainHandOverKeepsDialPolicy(t *testing.T) {
	be := backend(t)
	echo := testutil.EchoServer(t)
	_, lHTTP, lTCP, accepted := chainThroughG(t, be.URL, echo, `, "dial_allow": ["127.0.0.1:1"]`)
	status, body, _ := get(t, "http://"+lHTTP+"/bx/x")
	if status != http.StatusForbidden || !strings.Contains(body, "dial_allow") {
		t.Errorf("outside the policy: %d %q, want 403 naming dial_allow", status, body)
	}
	c, err := net.Dial("tcp", lTCP)
	switch {
	case errors.Is(err, syscall.ECONNRESET):
		// L reset the connection, its stream refused, before the
		// connect call returned (a loaded machine): closed, as wanted.
	case err != nil:
		t.Fatal(err)
	default:
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "hello")
		if n, err := io.ReadAll(c); len(n) != 0 {
			t.Errorf("tcp outside the policy: read %q, %v; want the connection closed", n, err)
		}
	}
	if n := accepted.Load(); n != 0 {
		t.Errorf("G's sockets accepted %d connections", n)
	}
}

// TestChainHandOverMappedTarget: a target written as an IPv4-mapped IPv6
// address is handed over and judged by the policy as the IPv4 address a
// dial would reach.
func TestChainHandOverMappedTarget(t *testing.T) {
	be := backend(t)
	var pre prebound
	gHTTP := pre.addr(t)
	listen, accepted := countAccepts(&pre, gHTTP)
	g := startNode(t, fmt.Sprintf(`{"west": {"nm": "G", "dial_allow": ["127.0.0.1"]}, "wsts": {"sp": "ws://127.0.0.1:0"},
		"proxy": {"http://%s": {"en": "L2", "/by": {"ou": "%s/b"}}}}`, gHTTP, be.URL), Options{Listen: listen})
	startL2(t, g)
	_, port, _ := net.SplitHostPort(gHTTP)
	l := startNode(t, fmt.Sprintf(`{"west": {"nm": "L"},
		"proxy": {"http://127.0.0.1:0": {"ea": "ws://%s", "/bx": {"ou": "http://[::ffff:127.0.0.1]:%s/by"}}}}`, g.Addrs().Tunnel, port), Options{})
	status, body, h := get(t, proxyURL(t, l)+"/bx/m")
	if status != 200 || h.Get("X-Backend-Path") != "/b/m" {
		t.Fatalf("mapped target: %d %q, path %q", status, body, h.Get("X-Backend-Path"))
	}
	if n := accepted.Load(); n != 0 {
		t.Errorf("G's socket accepted %d connections", n)
	}
}

// TestChainHandOverFollowsReload: a reload that removes G's listener
// takes it out of the hand-over (a stream for its address then finds
// nothing listening), and one that brings it back on the same address
// hands streams to the new listener, never to the closed one.
func TestChainHandOverFollowsReload(t *testing.T) {
	be := backend(t)
	var pre prebound
	gHTTP := pre.addr(t)
	gConf := func(listener bool) string {
		proxy := ""
		if listener {
			proxy = fmt.Sprintf(`, "proxy": {"http://%s": {"en": "L2", "/by": {"ou": "%s/b"}}}`, gHTTP, be.URL)
		}
		return `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"}` + proxy + `}`
	}
	g := startNode(t, gConf(true), Options{Listen: pre.listen})
	startL2(t, g)
	l := startNode(t, fmt.Sprintf(`{"west": {"nm": "L"},
		"proxy": {"http://127.0.0.1:0": {"ea": "ws://%s", "/bx": {"ou": "http://%s/by"}}}}`, g.Addrs().Tunnel, gHTTP), Options{})
	// A fresh client each time: a kept-alive stream would outlive the
	// listener it was handed to only until the reload closes it.
	fetch := func() int {
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 15 * time.Second}
		resp, err := c.Get(proxyURL(t, l) + "/bx/r")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := fetch(); s != 200 {
		t.Fatalf("before reload: %d", s)
	}
	if err := g.Reload(mustParse(t, gConf(false))); err != nil {
		t.Fatal(err)
	}
	if s := fetch(); s != http.StatusBadGateway {
		t.Errorf("listener removed: %d, want 502", s)
	}
	if err := g.Reload(mustParse(t, gConf(true))); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if s := fetch(); s != 200 {
			t.Fatalf("listener back, request %d: %d", i, s)
		}
	}
}

// TestChainMiddleDrains: G, in the middle of a chain, is stopped while a
// slow request is handed to its listener: the request still completes,
// and G stops once it has.
func TestChainMiddleDrains(t *testing.T) {
	be := backend(t) // /x/slow answers after 3s
	var pre prebound
	gHTTP := pre.addr(t)
	g, stopG := runNode(t, fmt.Sprintf(`{"west": {"nm": "G", "shutdown_grace": "20s"}, "wsts": {"sp": "ws://127.0.0.1:0"},
		"proxy": {"http://%s": {"en": "L2", "/by": {"ou": "%s/x"}}}}`, gHTTP, be.URL), Options{Listen: pre.listen})
	startL2(t, g)
	l := startNode(t, fmt.Sprintf(`{"west": {"nm": "L"},
		"proxy": {"http://127.0.0.1:0": {"ea": "ws://%s", "/bx": {"ou": "http://%s/by"}}}}`, g.Addrs().Tunnel, gHTTP), Options{})
	res := getLater(proxyURL(t, l) + "/bx/slow")
	time.Sleep(500 * time.Millisecond) // the request is in flight
	took := stopG()
	r := <-res
	if r.err != nil || r.code != 200 {
		t.Fatalf("request in flight through the draining middle: %d, %v", r.code, r.err)
	}
	if took < 2*time.Second || took > 10*time.Second {
		t.Errorf("G stopped after %v; the request had about 2.5 s to go", took)
	}
}
