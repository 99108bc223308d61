package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
)

// listenerTo starts an HTTP listener whose one route sends everything
// through a real tunnel (tunnelPair) to backend, and returns its URL.
func listenerTo(t *testing.T, backend string, timeout time.Duration) string {
	t.Helper()
	h := NewHTTP(HTTPOptions{
		Routes:  []Route{{Path: "/", Target: mustURL(t, "http://"+backend+"/")}},
		Dialer:  tunnelPair(t),
		Timeout: timeout,
	})
	_, addr := startServer(t, h)
	return "http://" + addr
}

// countingBackend is an HTTP server that counts the connections it accepts.
func countingBackend(t *testing.T, h http.Handler) (srv *httptest.Server, addr string, conns *atomic.Int64) {
	t.Helper()
	conns = new(atomic.Int64)
	srv = httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, strings.TrimPrefix(srv.URL, "http://"), conns
}

// lifecycleBackend is countingBackend that also counts the connections
// that have closed.
func lifecycleBackend(t *testing.T, h http.Handler) (addr string, opened, closed *atomic.Int64) {
	t.Helper()
	opened, closed = new(atomic.Int64), new(atomic.Int64)
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			opened.Add(1)
		case http.StateClosed:
			closed.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), opened, closed
}

// rawHTTPBackend is a rawBackend that reads each connection's requests
// with net/http and has answer write what it likes to each, until answer
// returns false or the requests end.
func rawHTTPBackend(t *testing.T, answer func(c net.Conn, req *http.Request) (more bool)) string {
	t.Helper()
	addr, _ := rawBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil || !answer(c, req) {
				return
			}
		}
	})
	return addr
}

// rawBackend serves each TCP connection with serve, for backends that
// misbehave in ways net/http would not, and counts the connections.
func rawBackend(t *testing.T, serve func(net.Conn)) (addr string, conns *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	conns = new(atomic.Int64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
	return ln.Addr().String(), conns
}

// cannedBackend is a rawBackend that writes answer, as it is, for every
// request on a connection.
func cannedBackend(t *testing.T, answer string) (addr string, conns *atomic.Int64) {
	t.Helper()
	return rawBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			io.WriteString(c, answer)
		}
	})
}

func fetch(t *testing.T, c *http.Client, method, url string, body io.Reader) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, url, err)
	}
	return resp.StatusCode, string(b)
}

// TestStreamTransportReuse: plain requests of every body shape share one
// stream, and so one backend connection, one after another.
func TestStreamTransportReuse(t *testing.T) {
	_, backend, conns := countingBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/chunked":
			w.Write([]byte("chunk one, "))
			w.(http.Flusher).Flush()
			w.Write([]byte("chunk two"))
		default:
			w.Write([]byte("hello " + r.Method))
		}
	}))
	url := listenerTo(t, backend, 0)
	c := &http.Client{Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	for i := range 30 {
		var code int
		var body, want string
		switch i % 4 {
		case 0:
			code, body = fetch(t, c, "GET", url+"/x", nil)
			want = "hello GET"
		case 1:
			code, body = fetch(t, c, "HEAD", url+"/x", nil)
		case 2:
			code, body = fetch(t, c, "GET", url+"/empty", nil)
		case 3:
			code, body = fetch(t, c, "GET", url+"/chunked", nil)
			want = "chunk one, chunk two"
		}
		if code >= 300 || body != want {
			t.Fatalf("request %d: %d %q, want %q", i, code, body, want)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("the backend saw %d connections for 30 sequential requests, want 1", n)
	}
}

// TestStreamTransportOutlivesClients: a stream goes back to the pool when
// its request ends, whatever becomes of the client connection after: one
// backend connection serves clients that each send one request and leave.
func TestStreamTransportOutlivesClients(t *testing.T) {
	_, backend, conns := countingBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
	}))
	url := listenerTo(t, backend, 0)
	for i := range 20 {
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		if code, body := fetch(t, c, "GET", url+"/x", nil); code != 200 || body != "hello" {
			t.Fatalf("client %d: %d %q", i, code, body)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("the backend saw %d connections for 20 clients one after another, want 1", n)
	}
}

// TestAbandonHook: when its context ends, a connection's hook closes the
// stream it holds, and any it is given later, but not one let go before.
func TestAbandonHook(t *testing.T) {
	open := func(c net.Conn) bool {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		return errors.Is(err, os.ErrDeadlineExceeded)
	}
	h := &abandonHook{}
	kept, far := net.Pipe()
	defer far.Close()
	h.hold(kept)
	if !h.release() {
		t.Fatal("release before the end reported the stream closed")
	}
	held, far2 := net.Pipe()
	defer far2.Close()
	h.hold(held)
	h.end()
	if !open(kept) {
		t.Error("a stream let go before the end was closed")
	}
	if open(held) {
		t.Error("the stream held at the end is still open")
	}
	if h.release() {
		t.Error("release after the end reported the stream open")
	}
	late, far3 := net.Pipe()
	defer far3.Close()
	h.hold(late)
	if open(late) {
		t.Error("a stream held after the end is still open")
	}
	if h.release() {
		t.Error("release of a stream held after the end reported it open")
	}
	kept.Close()
}

// TestStreamTransportStaleStream: a backend that closes idle keep-alive
// connections leaves a closed stream in the listener's pool; the next GET
// must go again on a new stream, not fail.
func TestStreamTransportStaleStream(t *testing.T) {
	srv, backend, conns := countingBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok"))
	}))
	url := listenerTo(t, backend, 0)
	c := &http.Client{Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	if code, body := fetch(t, c, "GET", url+"/a", nil); code != 200 || body != "ok" {
		t.Fatalf("first GET: %d %q", code, body)
	}
	// Close the backend's side of its idle connection, as its idle
	// timeout would.
	srv.CloseClientConnections()
	time.Sleep(100 * time.Millisecond) // let the end of stream cross the tunnel
	for i := range 3 {
		if code, body := fetch(t, c, "GET", url+"/b", nil); code != 200 || body != "ok" {
			t.Fatalf("GET %d after the backend closed its idle connection: %d %q", i, code, body)
		}
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("the backend saw %d connections, want 2 (the closed one and its replacement)", n)
	}
}

// TestStreamTransportTrailingBytes: bytes after a complete response mean
// the stream is out of step; it must not carry the next request.
func TestStreamTransportTrailingBytes(t *testing.T) {
	backend, conns := cannedBackend(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokSURPLUS")
	url := listenerTo(t, backend, 0)
	c := &http.Client{Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	for i := range 3 {
		if code, body := fetch(t, c, "GET", url+"/", nil); code != 200 || body != "ok" {
			t.Fatalf("GET %d: %d %q, want 200 \"ok\"", i, code, body)
		}
	}
	if n := conns.Load(); n != 3 {
		t.Errorf("the backend saw %d connections for 3 requests with surplus bytes, want 3", n)
	}
}

// TestStreamTransportOtherRequests: requests off the fast path (a body, an
// upgrade) still work, through the fallback transport.
func TestStreamTransportOtherRequests(t *testing.T) {
	_, backend, _ := countingBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "echo" {
			w.Header().Set("Connection", "Upgrade")
			w.Header().Set("Upgrade", "echo")
			w.WriteHeader(http.StatusSwitchingProtocols)
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			line, _ := brw.ReadString('\n')
			conn.Write([]byte("echo: " + line))
			return
		}
		b, _ := io.ReadAll(r.Body)
		w.Write([]byte(r.Method + " " + string(b)))
	}))
	url := listenerTo(t, backend, 0)
	c := &http.Client{Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	for _, m := range []string{"POST", "PUT", "DELETE"} {
		if code, body := fetch(t, c, m, url+"/", strings.NewReader("payload")); code != 200 || body != m+" payload" {
			t.Errorf("%s: %d %q", m, code, body)
		}
	}

	req, _ := http.NewRequest("GET", url+"/", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "echo")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rw, ok := resp.Body.(io.ReadWriter)
	if resp.StatusCode != http.StatusSwitchingProtocols || !ok {
		t.Fatalf("upgrade: %s, body writable %v", resp.Status, ok)
	}
	io.WriteString(rw, "ping\n")
	line, _ := bufio.NewReader(rw).ReadString('\n')
	if line != "echo: ping\n" {
		t.Errorf("upgraded connection answered %q", line)
	}
}

// TestStreamTransportTimeouts: a backend slower than the listener's timeout
// gets 504; a client that leaves mid-wait ends the request at once.
func TestStreamTransportTimeouts(t *testing.T) {
	release := make(chan struct{})
	_, backend, _ := countingBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
		w.Write([]byte("late"))
	}))
	defer close(release)
	url := listenerTo(t, backend, 300*time.Millisecond)
	c := &http.Client{Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	if code, body := fetch(t, c, "GET", url+"/slow", nil); code != http.StatusGatewayTimeout {
		t.Errorf("a backend slower than the timeout: %d %q, want 504", code, body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url+"/slow", nil)
	start := time.Now()
	_, err := c.Do(req)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a client that gave up: %v", err)
	}
	if d := time.Since(start); d > 250*time.Millisecond {
		t.Errorf("the client's request ended after %v", d)
	}
}

// TestStreamTransportTimeoutPerHead: the timeout bounds each response's
// head, not its body, and starts again for each request on a reused
// stream.
func TestStreamTransportTimeoutPerHead(t *testing.T) {
	_, backend, conns := countingBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(120 * time.Millisecond)
		if r.URL.Path == "/slow-body" {
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			time.Sleep(400 * time.Millisecond)
		}
		w.Write([]byte("done"))
	}))
	url := listenerTo(t, backend, 300*time.Millisecond)
	c := &http.Client{Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	// Four heads in 120 ms each, 480 ms in all on one stream.
	for i := range 4 {
		if code, body := fetch(t, c, "GET", url+"/", nil); code != http.StatusOK || body != "done" {
			t.Fatalf("request %d: %d %q, want 200 \"done\"", i, code, body)
		}
	}
	// A head in time, and a body that takes longer than the timeout.
	if code, body := fetch(t, c, "GET", url+"/slow-body", nil); code != http.StatusOK || body != "done" {
		t.Errorf("a slow body: %d %q, want 200 \"done\"", code, body)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("backend saw %d connections, want 1 (one reused stream)", n)
	}
}

// TestStreamTransportEarlyHints: a 103 before the answer reaches the client.
func TestStreamTransportEarlyHints(t *testing.T) {
	_, backend, _ := countingBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Write([]byte("page"))
	}))
	url := listenerTo(t, backend, 0)
	var hints []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		hints = append(hints, h.Get("Link"))
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", url+"/", nil)
	c := &http.Client{Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "page" || len(hints) != 1 || hints[0] != "</style.css>; rel=preload" {
		t.Errorf("got %s %q with hints %q", resp.Status, body, hints)
	}
}

// TestStreamTransportEndlessHeaders: a backend that never ends its header
// block gets the client a 502 once the headers pass their limit, rather
// than growing the listener's memory.
func TestStreamTransportEndlessHeaders(t *testing.T) {
	var sent atomic.Int64
	backend, _ := rawBackend(t, func(c net.Conn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		line := []byte("X-Filler: " + strings.Repeat("a", 1000) + "\r\n")
		io.WriteString(c, "HTTP/1.1 200 OK\r\n")
		for sent.Load() < 64<<20 {
			if _, err := c.Write(line); err != nil {
				return
			}
			sent.Add(int64(len(line)))
		}
	})
	url := listenerTo(t, backend, 0)
	c := &http.Client{Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	code, body := fetch(t, c, "GET", url+"/", nil)
	if code != http.StatusBadGateway || !strings.Contains(body, "1 MiB") {
		t.Errorf("endless headers: %d %q, want 502 naming the limit", code, body)
	}
	if n := sent.Load(); n >= 64<<20 {
		t.Errorf("the listener read all %d bytes of headers", n)
	}
}

// TestResponseBrokenBeforeBody: a backend that sends a response's header
// and closes before any of its body is answered 502, for requests on the
// stream transport and on the fallback one, not with a connection closed
// without a word. Once some of the body has gone out, the status has too:
// the client sees the body cut short.
func TestResponseBrokenBeforeBody(t *testing.T) {
	backend, _ := rawBackend(t, func(c net.Conn) {
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
		if req.URL.Path == "/some" {
			io.WriteString(c, strings.Repeat("x", 100))
		}
		time.Sleep(50 * time.Millisecond) // for the header to cross first
		c.(*net.TCPConn).SetLinger(0)
	})
	url := listenerTo(t, backend, 0)
	c := &http.Client{Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	for _, method := range []string{"GET", "POST"} {
		code, body := fetch(t, c, method, url+"/none", strings.NewReader("a body"))
		if code != http.StatusBadGateway || !strings.Contains(body, "broke off") {
			t.Errorf("%s, header and no body: %d %q, want 502 saying the response broke off", method, code, body)
		}
	}
	resp, err := c.Get(url + "/some")
	if err != nil {
		t.Fatalf("GET, header and some body: %v", err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || err == nil || n != 100 {
		t.Errorf("GET, header and some body: %d, %d bytes, %v; want 200 cut short after 100 bytes", resp.StatusCode, n, err)
	}
}

// TestStreamTransportIdleExpires: a stream kept for reuse is reused while
// fresh, closed once it has sat idle for the transport's idle timeout
// (which ends the far side's backend connection too), and the pool's
// sweep is armed again for the streams that come after.
func TestStreamTransportIdleExpires(t *testing.T) {
	backend, opened, closed := lifecycleBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	h := tunnelledTo(t, backend)
	const idle = 300 * time.Millisecond
	h.transport.idleTimeout = idle // before any request, so no race
	_, addr := startServer(t, h)
	get := func() {
		t.Helper()
		resp, err := http.Get("http://" + addr + "/x")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "ok" {
			t.Fatalf("GET: %d %q", resp.StatusCode, b)
		}
	}
	waitClosed := func(want int64) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); closed.Load() < want; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("backend connections closed: %d, want %d: the idle stream did not expire", closed.Load(), want)
			}
		}
	}
	for round := int64(1); round <= 2; round++ {
		get()
		get() // at once: the stream from the pool
		if n := opened.Load(); n != round {
			t.Fatalf("round %d: backend connections opened %d, want %d (one per round)", round, n, round)
		}
		waitClosed(round)
	}
}

// TestRetiredHandlerClosesFallbackConnection: requests a handler serves
// after a reload retired it (those that chose it just before the swap)
// give their connections back to the fallback transport's pool as they
// end. Nothing draws from that pool again, so those connections, each
// with its tunnel stream and backend connection, are closed once the
// handler's last request has ended, not after the pool's idle timeout
// (90 s), even those of a request that enters after the handler has
// finished. Retire's own sweep of the pool does not reach them: the first
// request after it makes net/http's transport pool connections again.
func TestRetiredHandlerClosesFallbackConnection(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	backend, _, closed := lifecycleBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/slow" {
			close(arrived)
			<-release
		}
		io.WriteString(w, "ok")
	}))
	h := tunnelledTo(t, backend)
	_, addr := startServer(t, h)

	// POSTs with a body: the fallback transport's path. Each on a client
	// connection of its own, so that the two run side by side.
	post := func(path string) error {
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Post("http://"+addr+path, "text/plain", strings.NewReader("body"))
		if err != nil {
			return err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil && (resp.StatusCode != 200 || string(b) != "ok") {
			err = fmt.Errorf("POST %s: %d %q; want 200 ok", path, resp.StatusCode, b)
		}
		return err
	}
	slow := make(chan error, 1)
	go func() { slow <- post("/slow") }()
	select {
	case <-arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("the slow POST did not reach the backend")
	}
	h.Retire()
	if err := post("/late"); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.Finished():
	case <-time.After(5 * time.Second):
		t.Fatal("the retired handler did not finish after its last request")
	}
	waitClosed := func(want int64) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); closed.Load() < want; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("backend connections closed: %d, want %d: the retired handler's streams sat in the fallback pool", closed.Load(), want)
			}
		}
	}
	waitClosed(2)
	// One more that enters the handler after it has finished (it chose
	// the handler before the swap, and was slow to begin).
	if err := post("/later"); err != nil {
		t.Fatal(err)
	}
	waitClosed(3)
}

// TestRetiredHandlerStopsDrainSweep: a handler sweeps its fallback pool
// while its peer drains, until that peer's tunnel ends. A handler a reload
// retired meanwhile has emptied its pool for good once its requests end,
// so its sweep stops then, not with the tunnel.
func TestRetiredHandlerStopsDrainSweep(t *testing.T) {
	h := NewHTTP(HTTPOptions{Peer: "far", Dialer: tunnelPair(t)})
	tunnelDone := make(chan struct{}) // the draining tunnel outlives the test
	t.Cleanup(func() { close(tunnelDone) })
	sweeps := func() (n int) {
		for _, g := range testutil.Goroutines() {
			if strings.Contains(g.Stack, "proxy.(*HTTP).PeerDraining.func") {
				n++
			}
		}
		return n
	}
	h.PeerDraining("far", false, tunnelDone)
	if n := sweeps(); n != 1 {
		t.Fatalf("sweeps running after the peer's notice: %d, want 1", n)
	}
	h.Retire()
	for deadline := time.Now().Add(5 * time.Second); sweeps() != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the retired handler's drain sweep still runs")
		}
	}
}

// AfterFinish runs its function once the retired handler has finished,
// also when it is registered after that, and again each time a request
// that entered the handler late has ended.
func TestAfterFinishRunsAgainAfterALateRequest(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	t.Cleanup(backend.Close)
	h := tunnelledTo(t, strings.TrimPrefix(backend.URL, "http://"))
	_, addr := startServer(t, h)
	runs := make(chan struct{}, 4)
	want := func(what string) {
		t.Helper()
		select {
		case <-runs:
		case <-time.After(5 * time.Second):
			t.Fatalf("AfterFinish's function did not run %s", what)
		}
	}
	h.Retire()
	h.AfterFinish(func() { runs <- struct{}{} })
	want("for the handler finished before it was registered")

	// A request that chose h just before it was swapped out.
	if code, body := fetch(t, http.DefaultClient, http.MethodGet, "http://"+addr+"/late", nil); code != 200 || body != "ok" {
		t.Fatalf("the late request: %d %q", code, body)
	}
	want("after the late request")
	select {
	case <-runs:
		t.Error("AfterFinish's function ran more often than the handler finished")
	case <-time.After(100 * time.Millisecond):
	}
}
