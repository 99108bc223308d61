package proxy

// Regression tests for bugs a review found (stop 31); each failed before
// its fix.

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/sockio"
	"github.com/west-tunnel/west/internal/testutil"
	"github.com/west-tunnel/west/internal/wire"
)

// holdingBackend accepts connections and keeps them, idle, until the test
// ends.
func holdingBackend(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns := make(chan net.Conn, 1024)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for {
			select {
			case c := <-conns:
				c.Close()
			default:
				return
			}
		}
	})
	return ln.Addr().String()
}

// TestIdleHandedStreamsUnderLimitHoldNoBuffer: a stream handed to one of
// this west's own TCP listeners (the middle west of a chain) that has
// max_conns waits for bytes without holding a copy buffer, as a socket
// does. The limit's wrapper hid the stream from copyConn, which read it
// through a pooled frame-sized buffer held for the connection's life:
// 256 KiB per idle connection.
func TestIdleHandedStreamsUnderLimitHoldNoBuffer(t *testing.T) {
	const conns = 64
	var set Locals
	client := tunnelPairTo(t, &Far{Locals: &set})
	backend := holdingBackend(t)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mid := LimitListener(NewLocalListener(ln, &set), 2*conns)
	srv := NewTCP(TCPOptions{Target: backend, Dialer: client})
	served := make(chan struct{})
	go func() { srv.Serve(mid); close(served) }()
	t.Cleanup(func() { srv.Close(); <-served })

	heap := func() uint64 {
		// Twice, so that pooled buffers are gone too.
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	open := func() net.Conn {
		t.Helper()
		st, err := client.Dial(context.Background(), wire.Header{Kind: wire.KindTCP, Target: ln.Addr().String()})
		if err != nil {
			t.Fatalf("dial through the tunnel to the local listener: %v", err)
		}
		return st
	}
	// Warm the pools and the session up first.
	warm := open()
	warm.Write(make([]byte, 1<<20))
	warm.Close()
	time.Sleep(50 * time.Millisecond)
	before := heap()
	var streams []net.Conn
	for range conns {
		streams = append(streams, open())
	}
	time.Sleep(200 * time.Millisecond) // let every copy start waiting
	per := (int64(heap()) - int64(before)) / conns
	for _, st := range streams {
		st.Close()
	}
	t.Logf("heap per idle handed connection: %d bytes", per)
	if per > 64<<10 {
		t.Errorf("each idle handed connection holds %d bytes of heap; want < 64 KiB", per)
	}
}

// TestTCPDialFailureResetsUnderLimit: a raw TCP listener with max_conns
// answers a client whose target cannot be reached with a reset, as one
// without does, not with an end-of-stream a client could take for an
// empty answer. The limit's wrapper hid the socket's SetLinger.
func TestTCPDialFailureResetsUnderLimit(t *testing.T) {
	client := tunnelPair(t)
	gone, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := gone.Addr().String()
	gone.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewTCP(TCPOptions{Target: refused, Dialer: client})
	served := make(chan struct{})
	go func() { srv.Serve(LimitListener(sockio.WrapListener(ln), 4)); close(served) }()
	t.Cleanup(func() { srv.Close(); <-served })

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		if errors.Is(err, syscall.ECONNRESET) {
			return // reset before connect returned
		}
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read from a connection whose target refused: %v, want a reset", err)
	}
}

// TestUndatedResponseIsDated: a response the backend sent without a Date
// reaches the client with one, from the loop as from net/http's server
// (RFC 9110, 6.6.1: a proxy with a clock dates what it forwards).
func TestUndatedResponseIsDated(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Date"] = nil // net/http's way to send none
		w.Write([]byte("undated"))
		if r.URL.Path == "/chunked" {
			w.(http.Flusher).Flush() // no length: a head the loop parses in full
			w.Write([]byte(", in chunks"))
		}
	}))
	defer be.Close()
	h := tunnelledTo(t, be.Listener.Addr().String())
	_, loop := startServer(t, h)
	for _, c := range []struct{ server, addr string }{{"loop", loop}, {"net/http", netHTTPServer(t, h)}} {
		for _, path := range []string{"/sized", "/chunked"} {
			resp, err := http.Get("http://" + c.addr + path)
			if err != nil {
				t.Fatalf("%s %s: %v", c.server, path, err)
			}
			resp.Body.Close()
			date, err := http.ParseTime(resp.Header.Get("Date"))
			if err != nil || time.Since(date).Abs() > time.Minute {
				t.Errorf("%s %s: Date %q (%v), want the time it was forwarded", c.server, path, resp.Header.Get("Date"), err)
			}
		}
	}
}

// TestDialFailureFloodLogsLittle: a peer may open as many streams to a
// target that refuses as it likes; each is refused and counted, but the
// log has a line a second, with a count of those held back.
func TestDialFailureFloodLogsLittle(t *testing.T) {
	var log testutil.Buffer
	var failed atomic.Int64
	far := &Far{
		Logger:      slog.New(slog.NewTextHandler(&log, nil)),
		OnDialError: func(wire.Code) { failed.Add(1) },
	}
	client := tunnelPairTo(t, far)
	gone, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := gone.Addr().String()
	gone.Close()
	const streams = 200
	for range streams {
		st, err := client.Dial(context.Background(), wire.Header{Kind: wire.KindTCP, Target: refused})
		if err == nil {
			st.Close()
			t.Fatal("a stream to a target that refuses was accepted")
		}
	}
	if n := failed.Load(); n != streams {
		t.Errorf("%d failed dials counted; want %d", n, streams)
	}
	if n := strings.Count(log.String(), `msg="dial failed"`); n == 0 || n > 3 {
		t.Errorf("%d refused streams gave %d log lines; want one a second", streams, n)
	}
}
