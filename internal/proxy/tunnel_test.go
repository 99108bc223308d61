package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
	"github.com/west-tunnel/west/internal/tunnel"
)

// tunnelPair starts a tunnel server and a client of it, both serving
// streams with a Far, and returns the client once its tunnel is up.
func tunnelPair(tb testing.TB) *tunnel.Client {
	tb.Helper()
	return tunnelPairTo(tb, &Far{})
}

// tunnelPairTo is tunnelPair with far (a *Far, or a handler of a test's
// own) serving the server's streams.
func tunnelPairTo(tb testing.TB, far tunnel.StreamHandler) *tunnel.Client {
	tb.Helper()
	srv := tunnel.NewServer(tunnel.ServerOptions{Handler: far})
	hs := httptest.NewServer(srv)
	c := tunnel.NewClient(tunnel.ClientOptions{
		URL: "ws" + strings.TrimPrefix(hs.URL, "http"), Name: "test", Handler: &Far{},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	tb.Cleanup(func() {
		cancel()
		<-done
		srv.Close()
		hs.Close()
	})
	deadline := time.Now().Add(5 * time.Second)
	for c.Status().State != tunnel.StateUp {
		if time.Now().After(deadline) {
			tb.Fatal("tunnel did not come up")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return c
}

func startTCP(t *testing.T, opts TCPOptions) string {
	t.Helper()
	addr, _ := serveTCP(t, opts)
	return addr
}

// serveTCP starts a TCP listener on loopback and returns its address and
// server.
func serveTCP(t *testing.T, opts TCPOptions) (string, *TCP) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewTCP(opts)
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return ln.Addr().String(), srv
}

func TestTCPThroughTunnelHalfClose(t *testing.T) {
	client := tunnelPair(t)
	addr := startTCP(t, TCPOptions{Target: testutil.EchoServer(t), Dialer: client})

	size := int64(100 << 20)
	if testing.Short() {
		size = 8 << 20
	}
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	want := sha256.New()
	go func() {
		io.Copy(io.MultiWriter(conn, want), io.LimitReader(pattern{}, size))
		// Half-close: we are done sending but still read the echo.
		conn.(*net.TCPConn).CloseWrite()
	}()
	got := sha256.New()
	n, err := io.Copy(got, conn)
	if err != nil || n != size {
		t.Fatalf("echoed %d of %d bytes: %v", n, size, err)
	}
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatal("echoed bytes differ")
	}
}

func TestTCPDialFailureResets(t *testing.T) {
	client := tunnelPair(t)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	refused := ln.Addr().String()
	ln.Close()
	records := make(chan Record, 1)
	addr := startTCP(t, TCPOptions{Target: refused, Dialer: client, Observe: func(r Record) { records <- r }})
	conn, err := net.Dial("tcp", addr)
	switch {
	case errors.Is(err, syscall.ECONNRESET):
		// The reset came back through the tunnel before the connect
		// call returned: as good as one on the first read.
	case err != nil:
		t.Fatal(err)
	default:
		defer conn.Close()
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Read(make([]byte, 1)); err == nil {
			t.Fatal("read from a connection whose target refused: no error")
		}
	}
	r := <-records
	if r.Status != 502 || r.Err == nil || !strings.Contains(r.Err.Error(), "refused") {
		t.Fatalf("record %+v, want 502 with the far side's reason", r)
	}
}

// TestTCPBackendResetEndsClient: a backend that resets mid-conversation
// gives the client end-of-stream after what it had sent; what the client
// sends after that finds the connection closed instead of vanishing into a
// stream nobody reads.
func TestTCPBackendResetEndsClient(t *testing.T) {
	client := tunnelPair(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Write([]byte("hi"))
		io.ReadFull(c, make([]byte, 2))
		c.(*net.TCPConn).SetLinger(0) // close with a reset
		c.Close()
	}()
	addr := startTCP(t, TCPOptions{Target: ln.Addr().String(), Dialer: client})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, 2)
	if _, err := io.ReadFull(conn, got); err != nil || string(got) != "hi" {
		t.Fatalf("read %q, %v; want the backend's greeting", got, err)
	}
	conn.Write([]byte("ok"))
	if n, err := conn.Read(got); n != 0 || err == nil || isTimeout(err) {
		t.Fatalf("read after the backend's reset: %d bytes, %v; want its end", n, err)
	}
	buf := make([]byte, 64<<10)
	var werr error
	for sent := 0; sent < 64<<20 && werr == nil; sent += len(buf) {
		_, werr = conn.Write(buf)
	}
	if werr == nil || isTimeout(werr) {
		t.Fatalf("writes after the backend's reset: %v, want the connection closed", werr)
	}
}

type pattern struct{}

func (pattern) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte(i % 251)
	}
	return len(b), nil
}

// TestTCPRerouteEndsRefusedHalfClosedClient: a reload whose access list
// refuses a client that has half-closed, and waits for an answer from a
// target that says nothing, ends its connection: the client's socket and
// the listener's stream. (The far side holds the target until it speaks:
// the stream's end-of-stream reached it with the half-close, and a reset
// after that wakes nothing there.)
func TestTCPRerouteEndsRefusedHalfClosedClient(t *testing.T) {
	client := tunnelPair(t)
	target, heard := silentTarget(t, func(c net.Conn) { io.Copy(io.Discard, c) }) // to the client's half-close
	records := make(chan Record, 1)
	opts := TCPOptions{Target: target, Dialer: client, Observe: func(r Record) { records <- r }}
	addr, srv := serveTCP(t, opts)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("question"))
	conn.(*net.TCPConn).CloseWrite()
	select {
	case <-heard:
	case <-time.After(5 * time.Second):
		t.Fatal("the target never read the client's end")
	}

	opts.Allow = func(netip.Addr) bool { return false }
	srv.Reroute(opts)
	conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Error("the refused client's connection is still open")
	}
	select {
	case <-records:
	case <-time.After(3 * time.Second):
		t.Fatal("the refused client's connection is still being served")
	}
	if s := client.Status().Session; s == nil || s.Stats().StreamsOpen.Load() != 0 {
		t.Error("the listener's side keeps its stream open")
	}
}

// TestTCPClientResetEndsFarSide: a client that resets its connection
// ends the far side's connection to the target too, as a connection
// straight to the target would. The stream used to end as on a
// half-close, and the far side then held the target, the stream and its
// goroutines for as long as the target said nothing.
func TestTCPClientResetEndsFarSide(t *testing.T) {
	far := &Far{}
	client := tunnelPairTo(t, far)
	target, heard := silentTarget(t, func(c net.Conn) { c.Read(make([]byte, 5)) })
	conn, err := net.Dial("tcp", startTCP(t, TCPOptions{Target: target, Dialer: client}))
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("hello"))
	select {
	case <-heard:
	case <-time.After(5 * time.Second):
		t.Fatal("the target heard nothing")
	}
	conn.(*net.TCPConn).SetLinger(0)
	conn.Close() // a reset
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := far.Wait(ctx, time.Now()); err != nil {
		t.Errorf("3s after the client reset, the far side still serves its stream to the target: %v", err)
	}
}

// silentTarget accepts one connection, reads from it with read, tells
// heard, and then says nothing and keeps it open until the test ends.
func silentTarget(t *testing.T, read func(net.Conn)) (addr string, heard <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	told, hold := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(hold); ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		read(c)
		close(told)
		<-hold
	}()
	return ln.Addr().String(), told
}
