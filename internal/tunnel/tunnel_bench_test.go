package tunnel

import (
	"context"
	"io"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/wire"
)

// benchHandler serves the benchmarks' streams by target: "sink" reads to
// EOF and reports how much it read, anything else is accepted and closed.
type benchHandler struct {
	read chan int64
}

func (h *benchHandler) ServeStream(ctx context.Context, req *Request) {
	c, err := req.Accept()
	if err != nil {
		return
	}
	defer c.Close()
	switch {
	case strings.HasPrefix(req.Header.Target, "sink:"):
		n, _ := io.CopyBuffer(io.Discard, onlyReader{c}, make([]byte, 64<<10))
		h.read <- n
	case strings.HasPrefix(req.Header.Target, "echo:"):
		io.Copy(c, c)
	}
}

// onlyReader hides WriterTo and ReaderFrom so a copy uses the given buffer.
type onlyReader struct{ io.Reader }

// BenchmarkStreamPingPong sends one byte through an open stream to an
// echoing far side and reads it back: the tunnel's round trip, without
// stream set-up.
func BenchmarkStreamPingPong(b *testing.B) {
	c := benchTunnel(b, &benchHandler{})
	st, err := c.Dial(context.Background(), wire.Header{Kind: wire.KindTCP, Target: "echo:1"})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	benchPingPong(b, st)
}

// BenchmarkTCPPingPong is the direct baseline for BenchmarkStreamPingPong.
func BenchmarkTCPPingPong(b *testing.B) {
	ln := benchListener(b, func(c net.Conn) { io.Copy(c, c); c.Close() })
	c, err := net.Dial("tcp", ln)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	benchPingPong(b, c)
}

func benchPingPong(b *testing.B, c net.Conn) {
	var one [1]byte
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(one[:]); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, one[:]); err != nil {
			b.Fatal(err)
		}
	}
}

// benchTunnel starts a tunnel server on a loopback listener and a client
// connected to it, and returns the client once its session is up.
func benchTunnel(b *testing.B, h StreamHandler) *Client {
	c, _ := benchTunnelServer(b, h)
	return c
}

// benchTunnelServer is benchTunnel that also returns the server, whose
// session with the client is named "bench".
func benchTunnelServer(b *testing.B, h StreamHandler) (*Client, *Server) {
	b.Helper()
	srv := NewServer(ServerOptions{Handler: h})
	hs := httptest.NewServer(srv)
	c := NewClient(ClientOptions{URL: "ws" + strings.TrimPrefix(hs.URL, "http"), Name: "bench", Handler: h})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	b.Cleanup(func() {
		cancel()
		<-done
		srv.Close()
		hs.Close()
	})
	deadline := time.Now().Add(5 * time.Second)
	for c.Status().State != StateUp {
		if time.Now().After(deadline) {
			b.Fatal("tunnel did not come up")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return c, srv
}

// BenchmarkStreamOpenClose opens a stream (header, then the far side's
// reply: one round trip) and closes it.
func BenchmarkStreamOpenClose(b *testing.B) {
	c := benchTunnel(b, &benchHandler{})
	hdr := wire.Header{Kind: wire.KindTCP, Target: "close:1"}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		st, err := c.Dial(ctx, hdr)
		if err != nil {
			b.Fatal(err)
		}
		st.Close()
	}
}

// BenchmarkStreamOpenCloseParallel is BenchmarkStreamOpenClose from
// GOMAXPROCS*4 goroutines sharing one tunnel.
func BenchmarkStreamOpenCloseParallel(b *testing.B) {
	c := benchTunnel(b, &benchHandler{})
	hdr := wire.Header{Kind: wire.KindTCP, Target: "close:1"}
	b.ReportAllocs()
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			st, err := c.Dial(context.Background(), hdr)
			if err != nil {
				b.Error(err)
				return
			}
			st.Close()
		}
	})
}

// BenchmarkTCPConnectClose is the direct baseline for stream open and
// close: a loopback TCP connect, one byte back from the server, close.
func BenchmarkTCPConnectClose(b *testing.B) {
	ln := benchListener(b, func(c net.Conn) { c.Write([]byte{0}); c.Close() })
	b.ReportAllocs()
	var one [1]byte
	for b.Loop() {
		c, err := net.Dial("tcp", ln)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Read(one[:]); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

const bulkChunk = 256 << 10

// BenchmarkStreamBulk writes through one stream to a far side that
// discards, in 256 KiB writes.
func BenchmarkStreamBulk(b *testing.B) {
	h := &benchHandler{read: make(chan int64, 1)}
	c := benchTunnel(b, h)
	st, err := c.Dial(context.Background(), wire.Header{Kind: wire.KindTCP, Target: "sink:1"})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	benchBulk(b, st, func() int64 { st.(*Stream).CloseWrite(); return <-h.read })
}

// BenchmarkStreamBulkFromServer is BenchmarkStreamBulk the other way: the
// server opens the stream and writes, unmasked, as a listener's west
// sends an upload in the seed's first use case.
func BenchmarkStreamBulkFromServer(b *testing.B) {
	h := &benchHandler{read: make(chan int64, 1)}
	_, srv := benchTunnelServer(b, h)
	st, err := srv.Dial(context.Background(), "bench", wire.Header{Kind: wire.KindTCP, Target: "sink:1"})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	benchBulk(b, st, func() int64 { st.(*Stream).CloseWrite(); return <-h.read })
}

// BenchmarkTCPBulk is the direct baseline for BenchmarkStreamBulk: the
// same writes over one loopback TCP connection.
func BenchmarkTCPBulk(b *testing.B) {
	read := make(chan int64, 1)
	ln := benchListener(b, func(c net.Conn) {
		n, _ := io.CopyBuffer(io.Discard, onlyReader{c}, make([]byte, 64<<10))
		c.Close()
		read <- n
	})
	c, err := net.Dial("tcp", ln)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	benchBulk(b, c, func() int64 { c.(*net.TCPConn).CloseWrite(); return <-read })
}

func benchBulk(b *testing.B, w io.Writer, finish func() int64) {
	buf := make([]byte, bulkChunk)
	b.SetBytes(bulkChunk)
	b.ReportAllocs()
	var sent int64
	for b.Loop() {
		n, err := w.Write(buf)
		if err != nil {
			b.Fatal(err)
		}
		sent += int64(n)
	}
	if got := finish(); got != sent {
		b.Fatalf("far side read %d of %d bytes", got, sent)
	}
}

// benchListener serves each loopback connection with serve until the
// benchmark ends, and returns the address.
func benchListener(b *testing.B, serve func(net.Conn)) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
	return ln.Addr().String()
}
