package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/west-tunnel/west/internal/testutil"
)

// upgradeBackend answers a request asking to upgrade to "echo" with 101,
// then echoes what comes until the client leaves; others get their body
// back.
func upgradeBackend(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Upgrade") != "echo" {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s", r.Method, b)
		return
	}
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer c.Close()
	io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	io.Copy(c, brw)
}

// TestServerTrackingUnderLoad: connections of every kind the listener
// serves (the loop's GETs, POSTs handed to net/http and closed by either
// side, upgrades net/http hijacks for the reverse proxy) come and go by
// the thousand while reloads swap the handler, Recheck runs and the
// limit's bound changes. Once their clients are gone, the Server holds
// none of them, the limit counts none open, and the goroutines they cost
// have ended.
func TestServerTrackingUnderLoad(t *testing.T) {
	_, backend, _ := countingBackend(t, http.HandlerFunc(upgradeBackend))
	dialer := tunnelPair(t)
	target := mustURL(t, "http://"+backend+"/")
	// Two handlers that admit every client, swapped back and forth: Recheck
	// must end nothing, but runs over every connection.
	admit := func(netip.Addr) bool { return true }
	handlers := [2]*HTTP{
		NewHTTP(HTTPOptions{Dialer: dialer, Routes: []Route{{Path: "/", Target: target}}}),
		NewHTTP(HTTPOptions{Dialer: dialer, Routes: []Route{{Path: "/", Target: target, Allow: admit}}}),
	}
	var current atomic.Pointer[HTTP]
	current.Store(handlers[0])
	srv := NewServer(current.Load, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		current.Load().ServeHTTP(w, r)
	}), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lim := LimitListener(ln, 0)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lim) }()
	t.Cleanup(func() {
		srv.Close()
		<-served
		for _, h := range handlers {
			h.Retire()
		}
	})
	addr := ln.Addr().String()

	// One exchange of each kind, on its own connection.
	exchange := func(kind int) error {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		var raw, want string
		switch kind {
		case 0: // the loop's
			raw, want = "GET /g HTTP/1.1\r\nHost: h\r\n\r\n", "GET "
		case 1: // net/http's, which the client closes
			raw, want = "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody", "POST body"
		case 2: // net/http's, which net/http closes
			raw, want = "POST /p HTTP/1.1\r\nHost: h\r\nConnection: close\r\nContent-Length: 4\r\n\r\nbody", "POST body"
		case 3: // an upgrade: net/http hijacks the connection
			raw = "GET /u HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
		}
		if _, err := io.WriteString(c, raw); err != nil {
			return err
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return fmt.Errorf("kind %d: %w", kind, err)
		}
		if kind == 3 {
			if resp.StatusCode != http.StatusSwitchingProtocols {
				return fmt.Errorf("upgrade: %s", resp.Status)
			}
			io.WriteString(c, "ping\n")
			if line, err := br.ReadString('\n'); line != "ping\n" {
				return fmt.Errorf("upgrade echo: %q, %v", line, err)
			}
			return nil
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil || string(b) != want {
			return fmt.Errorf("kind %d: %q, %v", kind, b, err)
		}
		return nil
	}

	for kind := range 4 { // warm the tunnel's streams up
		if err := exchange(kind); err != nil {
			t.Fatal(err)
		}
	}
	handlers[0].CloseIdleConnections()
	base := testutil.Baseline()

	n := 2000
	if testing.Short() {
		n = 400
	}
	var next atomic.Int64
	errs := make(chan error, 8)
	var clients sync.WaitGroup
	for range 8 {
		clients.Add(1)
		go func() {
			defer clients.Done()
			for i := next.Add(1); i <= int64(n); i = next.Add(1) {
				if err := exchange(int(i % 4)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	stop := make(chan struct{})
	var reloads sync.WaitGroup
	reloads.Add(1)
	go func() {
		defer reloads.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				lim.SetLimit(0)
				return
			default:
			}
			current.Store(handlers[i%2])
			if ended := srv.Recheck(); ended != 0 {
				errs <- fmt.Errorf("Recheck ended %d exchanges that every handler admits", ended)
				return
			}
			lim.SetLimit([]int{0, 64, 3}[i%3])
			time.Sleep(time.Millisecond) // a reload now and then, not a spin
		}
	}()
	clients.Wait()
	close(stop)
	reloads.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	deadline := time.Now().Add(5 * time.Second)
	// The limit counts one: the accept waiting for the next client.
	for srv.tracked() != 0 || lim.open.Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("after %d connections closed by their clients: %d still tracked, %d open by the limit, want 1",
				n, srv.tracked(), lim.open.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, h := range handlers {
		h.CloseIdleConnections()
	}
	if left := testutil.Leaked(base); len(left) > 0 {
		t.Fatalf("goroutines left after %d connections:\n%s", n, testutil.FormatLeaks(left))
	}
	// The listener still serves, within a bound now.
	lim.SetLimit(1)
	if err := exchange(1); err != nil {
		t.Fatalf("after the load: %v", err)
	}
}

// TestHandedConnLetsGoOfLoopBuffers: a connection handed to net/http
// stays tracked while it lives, for Recheck; the buffers the loop read
// and wrote its requests with are freed meanwhile, as before it was
// tracked. Here a GET the loop serves, then a POST handed over, and the
// connection kept alive and idle.
func TestHandedConnLetsGoOfLoopBuffers(t *testing.T) {
	_, backend, _ := countingBackend(t, http.HandlerFunc(upgradeBackend))
	h := tunnelledTo(t, backend)
	var want, freed atomic.Int64
	fallback := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute,
		ConnState: func(nc net.Conn, state http.ConnState) {
			hc, ok := nc.(*handedConn)
			if !ok || state != http.StateNew {
				return
			}
			// Handed over, but not yet read by net/http: the loop's
			// reader is hc.r, and anything else it holds is in hc.c.
			free := func(struct{}) { freed.Add(1) }
			want.Add(1)
			runtime.AddCleanup(hc.r, free, struct{}{})
			if buf := hc.c.w.headBuf; cap(buf) > 0 {
				want.Add(1)
				runtime.AddCleanup(unsafe.SliceData(buf), free, struct{}{})
			}
		}}
	srv, addr := startServerWith(t, h, fallback)
	c := testutil.DialClient(t, addr)
	defer c.Close()
	io.WriteString(c, "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"+
		"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi")
	br := bufio.NewReader(c)
	for _, w := range []string{"GET ", "POST hi"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil || string(b) != w {
			t.Fatalf("response: %q, %v; want %q", b, err, w)
		}
	}
	if want.Load() == 0 {
		t.Fatal("the connection was not handed over")
	}
	deadline := time.Now().Add(5 * time.Second)
	for freed.Load() != want.Load() {
		if time.Now().After(deadline) {
			t.Fatalf("%d of the %d loop buffers of a handed connection freed while it is open", freed.Load(), want.Load())
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if n := srv.tracked(); n != 1 {
		t.Errorf("%d connections tracked, want the one open", n)
	}
}

// TestServerShutdownGivesUpgradesTheGrace: net/http neither waits for
// nor closes a hijacked connection, so a stopping listener's WebSockets
// used to go on after it. Shutdown now waits for them as for a request in
// flight, and Close, once the grace is over, ends them; one that ends
// within the grace lets Shutdown return at once.
func TestServerShutdownGivesUpgradesTheGrace(t *testing.T) {
	_, backend, _ := countingBackend(t, http.HandlerFunc(upgradeBackend))
	dialer := tunnelPair(t)
	h := NewHTTP(HTTPOptions{Dialer: dialer, Routes: []Route{{Path: "/", Target: mustURL(t, "http://"+backend+"/")}}})
	t.Cleanup(h.Retire)
	upgrade := func(addr string) (net.Conn, *bufio.Reader) {
		c := testutil.DialClient(t, addr)
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET /u HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("upgrade: %v %v", resp, err)
		}
		io.WriteString(c, "ping\n")
		if line, err := br.ReadString('\n'); line != "ping\n" {
			t.Fatalf("upgrade echo: %q, %v", line, err)
		}
		return c, br
	}

	srv, addr := startServer(t, h)
	c, br := upgrade(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with an upgrade open: %v, want it to wait out the grace", err)
	}
	io.WriteString(c, "still there?\n")
	if line, err := br.ReadString('\n'); err != nil || line != "still there?\n" {
		t.Fatalf("the upgrade during the grace: %q, %v; want it served", line, err)
	}
	srv.Close()
	if line, err := br.ReadString('\n'); err == nil {
		t.Fatalf("the upgrade after Close: read %q, want its end", line)
	}

	srv2, addr2 := startServer(t, h)
	c2, _ := upgrade(addr2)
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- srv2.Shutdown(ctx)
	}()
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with an upgrade open", err)
	case <-time.After(200 * time.Millisecond):
	}
	c2.Close()
	select {
	case err := <-shut:
		if err != nil {
			t.Fatalf("Shutdown once the upgrade ended: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return once the upgrade ended")
	}
}
