package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
)

// TestServerRecheck: once the handler changes, Recheck ends the requests
// in progress whose client the new access list of the route for its path
// refuses, the loop's (a GET) and net/http's (a POST) alike, here while
// they await their response (a long poll). One whose path no route
// matches any more goes on: a route gone is no matter of access.
func TestServerRecheck(t *testing.T) {
	quit, release := make(chan struct{}), make(chan struct{})
	arrived := make(chan string, 3)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- r.Method + " " + r.URL.Path
		var answer chan struct{} // nil, never ready, but for /gone/c
		if r.URL.Path == "/c" {
			answer = release
		}
		select {
		case <-answer:
			io.WriteString(w, "answer")
		case <-r.Context().Done():
		case <-quit:
		}
	}))
	t.Cleanup(be.Close)
	t.Cleanup(func() { close(quit) }) // before be.Close, which waits for the handlers

	dialer := tunnelPair(t)
	target := mustURL(t, be.URL+"/")
	refuse := func(netip.Addr) bool { return false }
	old := NewHTTP(HTTPOptions{Dialer: dialer, Routes: []Route{{Path: "/poll", Target: target}, {Path: "/gone", Target: target}}})
	narrowed := NewHTTP(HTTPOptions{Dialer: dialer, Routes: []Route{{Path: "/poll", Target: target, Allow: refuse}}})
	t.Cleanup(func() { old.Retire(); narrowed.Retire() })
	var current atomic.Pointer[HTTP]
	current.Store(old)
	srv, addr := serveCurrent(t, &current)

	// send writes a request on a new connection; the answer, or how the
	// connection ended, comes on the channel.
	send := func(raw string) <-chan string {
		c := testutil.DialClient(t, addr)
		t.Cleanup(func() { c.Close() })
		if _, err := io.WriteString(c, raw); err != nil {
			t.Fatal(err)
		}
		got := make(chan string, 1)
		go func() {
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					got <- "timeout"
					return
				}
				got <- "closed"
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			got <- fmt.Sprintf("%d %s", resp.StatusCode, b)
		}()
		return got
	}
	get := send("GET /poll/a HTTP/1.1\r\nHost: west\r\n\r\n")
	post := send("POST /poll/b HTTP/1.1\r\nHost: west\r\nContent-Length: 4\r\n\r\nbody")
	gone := send("GET /gone/c HTTP/1.1\r\nHost: west\r\n\r\n")
	seen := map[string]bool{}
	for range 3 {
		select {
		case r := <-arrived:
			seen[r] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("requests at the backend: %v, want 3", seen)
		}
	}

	current.Store(narrowed)
	if n := srv.Recheck(); n != 2 {
		t.Errorf("Recheck ended %d exchanges, want 2", n)
	}
	if got := <-get; got != "closed" {
		t.Errorf("a refused GET awaiting its answer: %s, want its connection closed", got)
	}
	if got := <-post; got != "closed" {
		t.Errorf("a refused POST awaiting its answer: %s, want its connection closed", got)
	}
	select {
	case got := <-gone:
		t.Errorf("a request whose route is gone: %s, want it still awaiting its answer", got)
	default:
	}
	close(release)
	if got := <-gone; got != "200 answer" {
		t.Errorf("a request whose route is gone, once answered: %s", got)
	}
	if n := srv.Recheck(); n != 0 {
		t.Errorf("a second Recheck ended %d exchanges, want none", n)
	}
}

// TestRecheckSparesAnsweredRequest: a request whose whole response its
// client has read is over for Recheck, though the loop is still logging
// it: a reload then neither ends the connection nor counts it, and the
// client's next request on it is judged by the new routes (403). A
// response of known length and a chunked one each get their turn.
func TestRecheckSparesAnsweredRequest(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/chunked" {
			io.WriteString(w, "part one, ")
			w.(http.Flusher).Flush()
		}
		io.WriteString(w, "answer")
	}))
	t.Cleanup(be.Close)

	dialer := tunnelPair(t)
	target := mustURL(t, be.URL+"/")
	// The old handler's Observe, which runs after the response is written
	// and before the loop is done with the request, holds it there.
	observed, release := make(chan string, 1), make(chan struct{})
	old := NewHTTP(HTTPOptions{Dialer: dialer, Routes: []Route{{Path: "/", Target: target}},
		Observe: func(r Record) {
			observed <- r.Path
			<-release
		}})
	narrowed := NewHTTP(HTTPOptions{Dialer: dialer, Routes: []Route{{Path: "/", Target: target, Allow: func(netip.Addr) bool { return false }}}})
	t.Cleanup(func() { old.Retire(); narrowed.Retire() })
	var current atomic.Pointer[HTTP]
	srv, addr := serveCurrent(t, &current)

	for _, path := range []string{"/length", "/chunked"} {
		current.Store(old)
		c := testutil.DialClient(t, addr)
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		ask := func() (string, error) {
			if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: west\r\n\r\n"); err != nil {
				return "", err
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				return "", err
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			return fmt.Sprintf("%d %s", resp.StatusCode, b), err
		}
		got, err := ask()
		if err != nil || !strings.HasSuffix(got, "answer") || !strings.HasPrefix(got, "200 ") {
			t.Fatalf("%s: %q, %v", path, got, err)
		}
		select {
		case <-observed:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: never observed", path)
		}
		current.Store(narrowed)
		n := srv.Recheck()
		release <- struct{}{}
		if n != 0 {
			t.Errorf("%s: Recheck ended %d exchanges whose response was read, want none", path, n)
		}
		if got, err := ask(); err != nil || !strings.HasPrefix(got, "403 ") {
			t.Errorf("%s: the next request on the connection: %q, %v; want 403", path, got, err)
		}
	}
}

// serveCurrent serves, on a new loopback listener, with whichever
// handler current holds at each request, as a reload swaps them; it
// returns the server and its address.
func serveCurrent(t *testing.T, current *atomic.Pointer[HTTP]) (*Server, string) {
	t.Helper()
	srv := NewServer(current.Load, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		current.Load().ServeHTTP(w, r)
	}), ReadHeaderTimeout: 10 * time.Second})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		<-served
	})
	return srv, ln.Addr().String()
}
