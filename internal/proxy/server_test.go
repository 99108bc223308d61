package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
	"github.com/west-tunnel/west/internal/tunnel"
	"github.com/west-tunnel/west/internal/wire"
)

// startServer starts a Server for h on loopback, as a west runs an
// http:// listener.
func startServer(t testing.TB, h *HTTP) (*Server, string) {
	t.Helper()
	return startServerWith(t, h, &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute})
}

// startServerWith is startServer with the given fallback server.
func startServerWith(t testing.TB, h *HTTP, fallback *http.Server) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, h, fallback, ln), ln.Addr().String()
}

// serveOn serves h on ln until the test ends.
func serveOn(t testing.TB, h *HTTP, fallback *http.Server, ln net.Listener) *Server {
	t.Helper()
	srv := NewServer(func() *HTTP { return h }, fallback)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
		h.CloseIdleConnections()
	})
	return srv
}

// netHTTPServer serves h with net/http's server alone, as listeners ran
// before the loop, and returns its address: what the loop is compared to.
func netHTTPServer(t *testing.T, h *HTTP) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// exchange is what a client saw of one response.
type exchange struct {
	status  string
	header  []string // sorted "Name: value", without Date
	body    string
	trailer []string
	closed  bool // the response asked to close the connection
}

// tunnelledTo is an HTTP listener's handler that sends every path through
// an in-process tunnel to the backend at addr.
func tunnelledTo(t *testing.T, addr string) *HTTP {
	return NewHTTP(HTTPOptions{Routes: []Route{{Path: "/", Target: mustURL(t, "http://"+addr+"/")}}, Dialer: tunnelPair(t)})
}

// rawExchanges writes raw, which may hold several requests, on one new
// connection to addr and reads one response for each method in methods.
func rawExchanges(t *testing.T, addr, raw string, methods ...string) []exchange {
	t.Helper()
	c := testutil.DialClient(t, addr)
	defer c.Close()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var out []exchange
	for _, m := range methods {
		resp, err := http.ReadResponse(br, &http.Request{Method: m})
		if err != nil {
			t.Fatalf("reading the response to %s #%d: %v", m, len(out)+1, err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("reading the body of %s #%d: %v", m, len(out)+1, err)
		}
		resp.Header.Del("Date")
		out = append(out, exchange{status: resp.Status, header: headerLines(resp.Header),
			body: string(body), trailer: headerLines(resp.Trailer), closed: resp.Close})
	}
	return out
}

func headerLines(h http.Header) []string {
	var lines []string
	for name, values := range h {
		for _, v := range values {
			lines = append(lines, name+": "+v)
		}
	}
	slices.Sort(lines)
	return lines
}

// echoBackend answers by path: /echo describes the request it got, the
// others answer in the shapes a listener must carry.
func echoBackend(w http.ResponseWriter, r *http.Request) {
	switch strings.TrimPrefix(r.URL.Path, "/base") {
	case "/chunked":
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, "part one,")
		w.(http.Flusher).Flush()
		io.WriteString(w, "part two")
		w.Header().Set("X-Sum", "42")
	case "/nocontent":
		w.WriteHeader(http.StatusNoContent)
	case "/notmodified":
		w.Header().Set("ETag", `"v1"`)
		w.WriteHeader(http.StatusNotModified)
	case "/big":
		io.WriteString(w, strings.Repeat("0123456789abcdef", 20<<10))
	case "/teapot":
		w.Header().Set("Connection", "X-Hop")
		w.Header().Set("X-Hop", "dropped")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Add("X-Multi", "a")
		w.Header().Add("X-Multi", "b")
		w.WriteHeader(http.StatusTeapot)
		io.WriteString(w, "short and stout")
	default:
		fmt.Fprintf(w, "%s %s\nHost: %s\n%s\n", r.Method, r.RequestURI, r.Host, strings.Join(headerLines(r.Header), "\n"))
	}
}

// TestServerMatchesReverseProxy: for the requests the loop answers
// itself, the backend and the client see the same as through net/http
// and the reverse proxy: the same request line, Host and headers after
// hop-by-hop removal and X-Forwarded, and the same response, framing and
// trailers included.
func TestServerMatchesReverseProxy(t *testing.T) {
	_, backend, _ := countingBackend(t, http.HandlerFunc(echoBackend))
	h := NewHTTP(HTTPOptions{
		Routes: []Route{{Path: "/p", Target: mustURL(t, "http://"+backend+"/base?k=v")}},
		Dialer: tunnelPair(t),
	})
	srv, fast := startServer(t, h)
	reference := netHTTPServer(t, h)

	for _, tc := range []struct{ name, raw, method string }{
		{"headers", "GET /p/echo/x%2Fy?q=1&r=%20 HTTP/1.1\r\nHost: front.example:8080\r\nUser-Agent: t/1\r\n" +
			"Accept: */*\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil\r\nForwarded: for=6.6.6.6\r\n" +
			"Te: trailers, deflate\r\nKeep-Alive: 300\r\nProxy-Authorization: Basic eA==\r\nProxy-Connection: keep-alive\r\n" +
			"Connection: keep-alive\r\nX-Multi: 1\r\nx-multi: 2\r\nX-Spaces:   padded \t\r\n\r\n", "GET"},
		{"no user agent", "GET /p HTTP/1.1\r\nHost: h\r\n\r\n", "GET"},
		{"head", "HEAD /p/echo HTTP/1.1\r\nHost: h\r\n\r\n", "HEAD"},
		{"chunked with trailers", "GET /p/chunked HTTP/1.1\r\nHost: h\r\nTE: trailers\r\n\r\n", "GET"},
		{"204", "GET /p/nocontent HTTP/1.1\r\nHost: h\r\n\r\n", "GET"},
		{"304", "GET /p/notmodified HTTP/1.1\r\nHost: h\r\nIf-None-Match: \"v1\"\r\n\r\n", "GET"},
		{"hop-by-hop response headers", "GET /p/teapot HTTP/1.1\r\nHost: h\r\n\r\n", "GET"},
		{"large body", "GET /p/big HTTP/1.1\r\nHost: h\r\n\r\n", "GET"},
		{"client closes", "GET /p/echo HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", "GET"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := srv.handedOff.Load()
			got := rawExchanges(t, fast, tc.raw, tc.method)[0]
			want := rawExchanges(t, reference, tc.raw, tc.method)[0]
			if handed := srv.handedOff.Load() - before; handed != 0 {
				t.Errorf("the loop handed the request to net/http")
			}
			if got.status != want.status || !slices.Equal(got.header, want.header) || got.body != want.body ||
				!slices.Equal(got.trailer, want.trailer) || got.closed != want.closed {
				t.Errorf("through the loop:\n%+v\nthrough net/http:\n%+v", got, want)
			}
		})
	}
}

// TestServerHandsOff: every request the loop does not answer itself
// reaches net/http with all its bytes, also after the loop answered
// others on the same connection, and gets the answer net/http gives.
func TestServerHandsOff(t *testing.T) {
	_, backend, _ := countingBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s %q", r.Method, r.URL.Path, r.Proto, body)
	}))
	h := NewHTTP(HTTPOptions{
		Routes: []Route{
			{Path: "/", Target: mustURL(t, "http://"+backend+"/")},
			{Path: "/private", Target: mustURL(t, "http://"+backend+"/"), Allow: func(netip.Addr) bool { return false }},
		},
		Dialer: tunnelPair(t),
	})
	srv, addr := startServer(t, h)
	get := "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
	for _, tc := range []struct {
		name, raw  string
		want       []string // status and body of each response, in order
		handedOver bool
	}{
		{"plain", get, []string{`200 GET /a HTTP/1.1 ""`}, false},
		{"post", "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello", []string{`200 POST /a HTTP/1.1 "hello"`}, true},
		{"http/1.0", "GET /a HTTP/1.0\r\nHost: h\r\n\r\n", []string{`200 GET /a HTTP/1.1 ""`}, true},
		{"unrouted", "GET /a HTTP/1.1\r\nHost: h\r\n\r\n" + "GET /private/x HTTP/1.1\r\nHost: h\r\n\r\n",
			[]string{`200 GET /a HTTP/1.1 ""`, "403 west: 403 Forbidden: client 127.0.0.1:"}, true},
		{"pipelined post after get", get + "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi" + get,
			[]string{`200 GET /a HTTP/1.1 ""`, `200 POST /b HTTP/1.1 "hi"`, `200 GET /a HTTP/1.1 ""`}, true},
		{"header named by Connection", "GET /a HTTP/1.1\r\nHost: h\r\nConnection: X-Secret\r\nX-Secret: 1\r\n\r\n",
			[]string{`200 GET /a HTTP/1.1 ""`}, true},
		{"large head", "GET /a HTTP/1.1\r\nHost: h\r\nX-Big: " + strings.Repeat("b", 6000) + "\r\n\r\n",
			[]string{`200 GET /a HTTP/1.1 ""`}, true},
		{"escaped path", "GET /a%20b HTTP/1.1\r\nHost: h\r\n\r\n", []string{`200 GET /a b HTTP/1.1 ""`}, false},
		{"path net/url would escape", "GET /a!b HTTP/1.1\r\nHost: h\r\n\r\n", []string{`200 GET /a!b HTTP/1.1 ""`}, true},
		{"no host", "GET /a HTTP/1.1\r\n\r\n", []string{"400 "}, true},
		{"two hosts", "GET /a HTTP/1.1\r\nHost: h\r\nHost: i\r\n\r\n", []string{"400 "}, true},
		{"bad header name", "GET /a HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n", []string{"400 "}, true},
		{"folded header", "GET /a HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n 2\r\n\r\n", []string{`200 GET /a HTTP/1.1 ""`}, true},
		{"bare line feeds", "GET /a HTTP/1.1\nHost: h\n\n", []string{`200 GET /a HTTP/1.1 ""`}, true},
		{"bad request line", "GET /a\r\nHost: h\r\n\r\n", []string{"400 "}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := srv.handedOff.Load()
			methods := make([]string, len(tc.want))
			for i := range methods {
				methods[i] = "GET"
			}
			got := rawExchanges(t, addr, tc.raw, methods...)
			for i, ex := range got {
				if line := ex.status[:4] + ex.body; !strings.HasPrefix(line, tc.want[i]) {
					t.Errorf("response %d: %q, want %q…", i+1, line, tc.want[i])
				}
			}
			if handed := srv.handedOff.Load() - before; handed != 0 != tc.handedOver {
				t.Errorf("connections handed to net/http: %d", handed)
			}
		})
	}
}

// TestServerErrors: a request the tunnel cannot carry gets the status and
// reason net/http's path gives, and the connection carries the next one.
func TestServerErrors(t *testing.T) {
	_, backend, _ := countingBackend(t, http.HandlerFunc(echoBackend))
	peerDown := true
	pair := tunnelPair(t)
	h := NewHTTP(HTTPOptions{
		Routes: []Route{
			{Path: "/", Target: mustURL(t, "http://"+backend+"/")},
			{Path: "/refused", Target: mustURL(t, "http://127.0.0.1:1/")},
		},
		Dialer: DialerFunc(func(ctx context.Context, hd wire.Header) (net.Conn, error) {
			if peerDown {
				return nil, fmt.Errorf("dialing: %w", tunnel.ErrPeerDown)
			}
			return pair.Dial(ctx, hd)
		}),
	})
	srv, addr := startServer(t, h)
	get := func(path string) string { return "GET " + path + " HTTP/1.1\r\nHost: h\r\n\r\n" }
	got := rawExchanges(t, addr, get("/echo"), "GET")
	if got[0].status != "503 Service Unavailable" || !strings.HasPrefix(got[0].body, "west: 503 Service Unavailable: dialing: ") {
		t.Errorf("peer down: %s %q", got[0].status, got[0].body)
	}
	peerDown = false
	got = rawExchanges(t, addr, get("/refused")+get("/echo"), "GET", "GET")
	if got[0].status != "502 Bad Gateway" || !strings.HasPrefix(got[0].body, "west: 502 Bad Gateway: ") {
		t.Errorf("target refused: %s %q", got[0].status, got[0].body)
	}
	if got[1].status != "200 OK" || !strings.HasPrefix(got[1].body, "GET /echo\n") {
		t.Errorf("the request after an error: %s %q", got[1].status, got[1].body)
	}
	if n := srv.handedOff.Load(); n != 0 {
		t.Errorf("%d connections handed to net/http", n)
	}
}

// TestServerClientGone: a client that leaves while its response is awaited
// ends the request: the stream closes, and the backend's request with it.
func TestServerClientGone(t *testing.T) {
	entered, ended := make(chan struct{}), make(chan error, 1)
	_, backend, _ := countingBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		select {
		case <-r.Context().Done():
			ended <- r.Context().Err()
		case <-time.After(10 * time.Second):
			ended <- errors.New("never ended")
		}
	}))
	url := listenerTo(t, backend, time.Minute)
	c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
	<-entered
	c.Close()
	select {
	case err := <-ended:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("the backend's request: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the backend's request outlived the client")
	}
}

// TestServerClientGoneMidBody: a client that leaves while its response's
// body is under way, the backend having nothing to send for now (an event
// stream between events, a long poll), ends the request, as net/http's
// background read does; and so does the listener's Close. The loop
// watched the client only until the response head came, so the backend's
// request, the stream and the far side's connection waited for the
// backend's next write.
func TestServerClientGoneMidBody(t *testing.T) {
	for _, leave := range []string{"client closes", "listener closes"} {
		t.Run(leave, func(t *testing.T) {
			ended := make(chan error, 1)
			_, backend, _ := countingBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				io.WriteString(w, "data: first\n\n")
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					ended <- r.Context().Err()
				case <-time.After(10 * time.Second):
					ended <- errors.New("never ended")
				}
			}))
			h := NewHTTP(HTTPOptions{Routes: []Route{{Path: "/", Target: mustURL(t, "http://"+backend+"/")}}, Dialer: tunnelPair(t)})
			srv, addr := startServer(t, h)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, "GET /events HTTP/1.1\r\nHost: h\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			if line, err := bufio.NewReader(resp.Body).ReadString('\n'); line != "data: first\n" {
				t.Fatalf("first event: %q %v", line, err)
			}
			if leave == "client closes" {
				c.Close()
			} else {
				srv.Close()
			}
			select {
			case err := <-ended:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("the backend's request: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the backend's request outlived the client's connection by 5s")
			}
		})
	}
}

// TestBrokenResponsesAreReported: a response that breaks off in its body,
// because the backend dies or the client leaves, is a finished request,
// logged and told to Observe (the metrics), on net/http's path (a POST)
// as on the request loop's (a GET). On net/http's path the reverse
// proxy's panic, which aborts the client's connection, skipped the
// report.
func TestBrokenResponsesAreReported(t *testing.T) {
	_, backend, _ := countingBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Length", "100000000")
		w.WriteHeader(http.StatusOK)
		for i := 0; ; i++ {
			if _, err := w.Write(make([]byte, 64<<10)); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			if strings.HasSuffix(r.URL.Path, "/dies") && i == 2 {
				panic(http.ErrAbortHandler) // the backend dies mid-body
			}
		}
	}))
	records := make(chan Record, 4)
	h := NewHTTP(HTTPOptions{Routes: []Route{{Path: "/", Target: mustURL(t, "http://"+backend+"/")}}, Dialer: tunnelPair(t),
		Observe: func(r Record) { records <- r }})
	_, addr := startServer(t, h)
	for _, tc := range []struct {
		method, path string
		status       int // 200 sent, or the client gone
	}{
		{"GET", "/dies", http.StatusOK},
		{"POST", "/dies", http.StatusOK},
		{"GET", "/leaves", statusClientGone},
		{"POST", "/leaves", statusClientGone},
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		body := "" // a GET without one is the loop's
		if tc.method == "POST" {
			body = "Content-Length: 0\r\n"
		}
		fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: h\r\n%s\r\n", tc.method, tc.path, body)
		if _, err := io.ReadFull(c, make([]byte, 100<<10)); err != nil {
			t.Fatalf("%s %s: %v", tc.method, tc.path, err)
		}
		if tc.path == "/leaves" {
			c.Close()
		} else {
			io.Copy(io.Discard, c)
			c.Close()
		}
		select {
		case r := <-records:
			if r.Method != tc.method || r.Status != tc.status || r.Err == nil {
				t.Errorf("%s %s: reported %s %d, err %v; want %d with the reason", tc.method, tc.path, r.Method, r.Status, r.Err, tc.status)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("%s %s: never reported", tc.method, tc.path)
		}
	}
}

// TestServerShutdown: Shutdown closes idle connections at once, lets a
// busy one finish its answer, and then returns.
func TestServerShutdown(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	_, backend, _ := countingBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(entered)
			<-release
		}
		io.WriteString(w, "done")
	}))
	h := NewHTTP(HTTPOptions{Routes: []Route{{Path: "/", Target: mustURL(t, "http://"+backend+"/")}}, Dialer: tunnelPair(t)})
	srv, addr := startServer(t, h)

	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	io.WriteString(idle, "GET /fast HTTP/1.1\r\nHost: h\r\n\r\n")
	idleBr := bufio.NewReader(idle)
	if resp, err := http.ReadResponse(idleBr, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("first request: %v", err)
	} else {
		io.ReadAll(resp.Body)
	}

	busy := make(chan []exchange)
	go func() { busy <- rawExchanges(t, addr, "GET /slow HTTP/1.1\r\nHost: h\r\n\r\n", "GET") }()
	<-entered // the slow request is in flight
	shut := make(chan error)
	go func() { shut <- srv.Shutdown(context.Background()) }()

	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := idleBr.ReadByte(); err != io.EOF {
		t.Errorf("idle connection after Shutdown: %v, want EOF", err)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if got := <-busy; got[0].body != "done" {
		t.Errorf("the request in flight got %q", got[0].body)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("the listener still accepts after Shutdown")
	}
}

// TestServerBeginShutdown: once BeginShutdown returns, a connection kept
// alive, whether the loop's or one it handed to net/http, answers no
// further request: a reload that removes a listener runs the rest of
// Shutdown in the background, and a request sent after the reload must
// not find the listener still serving.
func TestServerBeginShutdown(t *testing.T) {
	var requests atomic.Int64
	_, backend, _ := countingBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "done")
	}))
	h := NewHTTP(HTTPOptions{Routes: []Route{{Path: "/", Target: mustURL(t, "http://"+backend+"/")}}, Dialer: tunnelPair(t)})
	srv, addr := startServer(t, h)

	// The loop answers the GET; net/http the POST, which has a body.
	const get = "GET /g HTTP/1.1\r\nHost: h\r\n\r\n"
	const post = "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody"
	type kept struct {
		conn net.Conn
		br   *bufio.Reader
	}
	var conns []kept
	for _, raw := range []string{get, post} {
		c := testutil.DialClient(t, addr)
		defer c.Close()
		io.WriteString(c, raw)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("first request %q: %v", raw[:4], err)
		}
		io.ReadAll(resp.Body)
		conns = append(conns, kept{c, br})
	}
	before := requests.Load()

	srv.BeginShutdown()
	for i, raw := range []string{get, post} {
		c := conns[i]
		io.WriteString(c.conn, raw) // may fail: the connection is closed
		c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if resp, err := http.ReadResponse(c.br, nil); err == nil {
			t.Errorf("%q after BeginShutdown: %s, want the connection closed", raw[:4], resp.Status)
		} else if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%q after BeginShutdown: no answer and the connection still open", raw[:4])
		}
	}
	if n := requests.Load() - before; n != 0 {
		t.Errorf("the backend got %d requests after BeginShutdown, want 0", n)
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// TestServerResponseShapes: responses in shapes net/http's backends do not
// send (the loop reads some of them itself and leaves the others to
// http.ReadResponse) reach the client as net/http's path passes them on.
func TestServerResponseShapes(t *testing.T) {
	answers := map[string]string{
		"/lower":    "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-lower: yes\r\n\r\nhello",
		"/spaced":   "HTTP/1.1 200 OK\r\nContent-Length:  5 \r\nX-A:b\r\n\r\nhello",
		"/noreason": "HTTP/1.1 201\r\nContent-Length: 2\r\n\r\nok",
		"/odd":      "HTTP/1.1 299 Whatever\r\nContent-Length: 2\r\n\r\nok",
		"/utf8":     "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Disposition: attachment; filename=\"\xc3\xa9.txt\"\r\n\r\nok",
		"/close":    "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
		"/http10":   "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end",
		"/twocl":    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
		"/badcl":    "HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok",
		"/signedcl": "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
		"/empty":    "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"/hops":     "HTTP/1.1 200 OK\r\nKeep-Alive: timeout=1\r\nUpgrade: h2c\r\nProxy-Authenticate: Basic\r\nContent-Length: 2\r\n\r\nok",
	}
	backend := rawHTTPBackend(t, func(c net.Conn, req *http.Request) bool {
		answer := answers[req.URL.Path]
		io.WriteString(c, answer)
		return !strings.Contains(answer, "close") && !strings.HasPrefix(answer, "HTTP/1.0")
	})
	h := NewHTTP(HTTPOptions{Routes: []Route{{Path: "/", Target: mustURL(t, "http://"+backend+"/")}}, Dialer: tunnelPair(t)})
	_, fast := startServer(t, h)
	reference := netHTTPServer(t, h)
	for path := range answers {
		for _, method := range []string{"GET", "HEAD"} {
			raw := method + " " + path + " HTTP/1.1\r\nHost: h\r\n\r\n"
			got := rawExchanges(t, fast, raw+raw, method, method)
			want := rawExchanges(t, reference, raw+raw, method, method)
			for i := range got {
				if got[i].status != want[i].status || !slices.Equal(got[i].header, want[i].header) || got[i].body != want[i].body {
					t.Errorf("%s %s #%d through the loop:\n%+v\nthrough net/http:\n%+v", method, path, i+1, got[i], want[i])
				}
			}
		}
	}
}

// flakyListener fails its first Accepts as a process out of descriptors
// does.
type flakyListener struct {
	net.Listener
	fails atomic.Int32
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestServerOutOfDescriptors: running out of file descriptors pauses
// accepting, as net/http does, rather than ending the listener.
func TestServerOutOfDescriptors(t *testing.T) {
	_, backend, _ := countingBackend(t, http.HandlerFunc(echoBackend))
	h := NewHTTP(HTTPOptions{Routes: []Route{{Path: "/", Target: mustURL(t, "http://"+backend+"/")}}, Dialer: tunnelPair(t)})
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &flakyListener{Listener: inner}
	ln.fails.Store(3)
	serveOn(t, h, &http.Server{Handler: h}, ln)
	got := rawExchanges(t, inner.Addr().String(), "GET /echo HTTP/1.1\r\nHost: h\r\n\r\n", "GET")
	if got[0].status != "200 OK" || ln.fails.Load() >= 0 {
		t.Errorf("after failed accepts: %s %q", got[0].status, got[0].body)
	}
}

// writesListener's connections count their writes, and the empty ones.
type writesListener struct {
	net.Listener
	writes, empty atomic.Int64
}

func (l *writesListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &writesConn{Conn: c, l: l}, nil
}

type writesConn struct {
	net.Conn
	l *writesListener
}

func (c *writesConn) Write(b []byte) (int, error) {
	c.l.writes.Add(1)
	if len(b) == 0 {
		c.l.empty.Add(1)
	}
	return c.Conn.Write(b)
}

// TestServerLargeBodyWrites: the loop passes a large body on in writes
// that each carry bytes; an empty write is still a system call.
func TestServerLargeBodyWrites(t *testing.T) {
	const size = 1 << 20
	_, backend, _ := countingBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(size))
		w.Write(bytes.Repeat([]byte{'w'}, size))
	}))
	h := NewHTTP(HTTPOptions{Routes: []Route{{Path: "/", Target: mustURL(t, "http://"+backend+"/")}}, Dialer: tunnelPair(t)})
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &writesListener{Listener: inner}
	serveOn(t, h, &http.Server{Handler: h}, ln)
	got := rawExchanges(t, inner.Addr().String(), "GET /big HTTP/1.1\r\nHost: h\r\n\r\n", "GET")
	if got[0].status != "200 OK" || len(got[0].body) != size {
		t.Fatalf("GET /big: %s, %d bytes of %d", got[0].status, len(got[0].body), size)
	}
	// How many writes depends on how much each read of the stream finds.
	t.Logf("%d writes for a %d-byte body", ln.writes.Load(), size)
	if e := ln.empty.Load(); e != 0 {
		t.Errorf("%d of %d writes were empty", e, ln.writes.Load())
	}
}

// TestServerTimeouts: the loop closes a connection that does not finish
// its request head within the header timeout, or sends nothing, and one
// that stays idle after a request for the idle timeout.
func TestServerTimeouts(t *testing.T) {
	_, backend, _ := countingBackend(t, http.HandlerFunc(echoBackend))
	h := NewHTTP(HTTPOptions{Routes: []Route{{Path: "/", Target: mustURL(t, "http://"+backend+"/")}}, Dialer: tunnelPair(t)})
	_, addr := startServerWith(t, h, &http.Server{Handler: h, ReadHeaderTimeout: 200 * time.Millisecond, IdleTimeout: 400 * time.Millisecond})
	closedWithin := func(name string, c net.Conn, br *bufio.Reader, least, most time.Duration) {
		t.Helper()
		start := time.Now()
		c.SetReadDeadline(start.Add(5 * time.Second))
		b, err := br.ReadByte()
		if took := time.Since(start); err != io.EOF || took < least || took > most {
			t.Errorf("%s: read %q, %v after %v; want the connection closed after %v to %v", name, b, err, took, least, most)
		}
	}
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, bufio.NewReader(c)
	}

	silent, br := dial()
	closedWithin("a client that sends nothing", silent, br, 100*time.Millisecond, 2*time.Second)

	stalled, br := dial()
	io.WriteString(stalled, "GET /echo HTTP/1.1\r\nHo")
	closedWithin("a head that stalls", stalled, br, 100*time.Millisecond, 2*time.Second)

	idle, br := dial()
	io.WriteString(idle, "GET /echo HTTP/1.1\r\nHost: h\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	closedWithin("an idle connection", idle, br, 300*time.Millisecond, 2*time.Second)
}
