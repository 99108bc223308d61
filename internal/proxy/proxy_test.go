package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/tunnel"
	"github.com/west-tunnel/west/internal/wire"
)

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestRewriteURL(t *testing.T) {
	for _, tc := range []struct{ prefix, target, in, want string }{
		{"/px", "http://b:1/x", "/px", "http://b:1/x"},
		{"/px", "http://b:1/x", "/px/", "http://b:1/x/"},
		{"/px", "http://b:1/x", "/px/a/b?q=1", "http://b:1/x/a/b?q=1"},
		{"/px", "http://b:1/x/", "/px", "http://b:1/x/"},
		{"/px", "http://b:1/x/", "/px/a", "http://b:1/x/a"},
		{"/px/", "http://b:1/x", "/px/a", "http://b:1/x/a"},
		{"/", "http://b:1/x", "/a", "http://b:1/x/a"},
		{"/", "http://b:1", "/a", "http://b:1/a"},
		{"/", "http://b:1", "/", "http://b:1/"},
		{"/px", "http://b:1", "/px", "http://b:1/"},
		{"/px", "http://b:1/x?k=v", "/px?q=1", "http://b:1/x?k=v&q=1"},
		{"/px", "http://b:1/x?k=v", "/px", "http://b:1/x?k=v"},
		{"/px", "https://b/x", "/px/a%2Fb", "https://b/x/a%2Fb"},
	} {
		in := mustURL(t, "http://listener"+tc.in)
		out := new(url.URL)
		rewriteURL(out, in, tc.prefix, mustURL(t, tc.target))
		if got := out.String(); got != tc.want {
			t.Errorf("prefix %s target %s request %s: got %s, want %s", tc.prefix, tc.target, tc.in, got, tc.want)
		}
	}
}

func TestMatchLongestAtSlash(t *testing.T) {
	h := NewHTTP(HTTPOptions{Routes: []Route{
		{Path: "/a"}, {Path: "/a/b"}, {Path: "/c/"}, {Path: "/"},
	}, Dialer: DialerFunc(nil)})
	for path, want := range map[string]string{
		"/a": "/a", "/a/": "/a", "/a/x": "/a", "/ab": "/", "/a/b": "/a/b", "/a/b/c": "/a/b",
		"/a/bc": "/a", "/c/": "/c/", "/c/d": "/c/", "/c": "/", "/zzz": "/",
	} {
		r := h.match(path)
		if r == nil || r.Path != want {
			t.Errorf("match(%q) = %v, want %s", path, r, want)
		}
	}
	h = NewHTTP(HTTPOptions{Routes: []Route{{Path: "/only"}}, Dialer: DialerFunc(nil)})
	if r := h.match("/other"); r != nil {
		t.Errorf("match(/other) = %s, want none", r.Path)
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestStatusFor(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{fmt.Errorf("x: %w", tunnel.ErrPeerDown), 503},
		{&wire.RejectError{Code: wire.CodeDialFailed}, 502},
		{&wire.RejectError{Code: wire.CodeForbidden}, 403},
		{&wire.RejectError{Code: wire.CodeTimeout}, 504},
		{&wire.RejectError{Code: wire.CodeOverloaded}, 503},
		{fmt.Errorf("dial: %w", context.DeadlineExceeded), 504},
		{&net.OpError{Op: "read", Err: timeoutErr{}}, 504},
		{errors.New("unexpected EOF"), 502},
	} {
		if got := statusFor(tc.err); got != tc.want {
			t.Errorf("statusFor(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

// TestPipeHalfClose: a client that shuts its write side still reads the
// reply, which the server sends only after it saw end-of-stream.
func TestPipeHalfClose(t *testing.T) {
	client, pipeA := tcpPair(t)
	pipeB, server := tcpPair(t)
	done := make(chan [2]int64)
	go func() {
		a, b := Pipe(context.Background(), pipeA, pipeB)
		done <- [2]int64{a, b}
	}()
	go func() {
		req, _ := io.ReadAll(server) // until the client's FIN arrives through the pipe
		fmt.Fprintf(server, "got %d bytes", len(req))
		server.(*net.TCPConn).CloseWrite()
	}()
	client.Write([]byte("request"))
	client.(*net.TCPConn).CloseWrite()
	reply, err := io.ReadAll(client)
	if err != nil || string(reply) != "got 7 bytes" {
		t.Fatalf("reply %q, %v", reply, err)
	}
	select {
	case n := <-done:
		if n != [2]int64{7, 11} {
			t.Fatalf("pipe counted %v", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("pipe did not end after both sides closed")
	}
}

func TestPipeEndsOnContext(t *testing.T) {
	_, pipeA := tcpPair(t)
	pipeB, _ := tcpPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { Pipe(ctx, pipeA, pipeB); close(done) }()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("pipe ignored its context")
	}
}

func TestUnroutedAndForbidden(t *testing.T) {
	dialed := false
	h := NewHTTP(HTTPOptions{
		Routes: []Route{{Path: "/p", Target: mustURL(t, "http://127.0.0.1:1/"), Allow: func(netip.Addr) bool { return false }}},
		Dialer: DialerFunc(func(context.Context, wire.Header) (net.Conn, error) {
			dialed = true
			return nil, errors.New("not reached")
		}),
	})
	srv := httptest.NewServer(h)
	defer srv.Close()
	for path, want := range map[string]int{"/nothing": 404, "/p/x": 403} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want || !strings.HasPrefix(string(body), fmt.Sprintf("west: %d ", want)) {
			t.Errorf("GET %s: %d %q, want %d with a reason", path, resp.StatusCode, body, want)
		}
	}
	if dialed {
		t.Error("a refused request opened a tunnel stream")
	}
}
