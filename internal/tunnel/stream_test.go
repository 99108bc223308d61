package tunnel

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/wire"
)

// dialWith starts a tunnel whose far side serves streams with h and opens
// one stream through it.
func dialWith(t *testing.T, h StreamHandlerFunc) (*harness, *Client, *Stream) {
	t.Helper()
	hs := newHarness(t, ServerOptions{Handler: h})
	c := hs.startClient(ClientOptions{Name: "n"})
	conn, err := c.Dial(context.Background(), wire.Header{Kind: wire.KindTCP, Target: "x:1"})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	return hs, c, conn.(*Stream)
}

// TestCloseWriteIsHalfClose: after the opener's CloseWrite the far side
// reads end-of-stream, then still writes its answer, which the opener
// reads to the far side's own end-of-stream.
func TestCloseWriteIsHalfClose(t *testing.T) {
	msg := bytes.Repeat([]byte("half"), 300_000) // more than one window
	_, _, st := dialWith(t, func(ctx context.Context, req *Request) {
		c, err := req.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		got, err := io.ReadAll(c)
		if err != nil {
			c.Write([]byte("read error: " + err.Error()))
			return
		}
		c.Write(got) // after end-of-stream
	})
	defer st.Close()
	if _, err := st.Write(msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := st.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	if _, err := st.Write([]byte("x")); err == nil {
		t.Fatal("write after CloseWrite succeeded")
	}
	st.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(st)
	if err != nil {
		t.Fatalf("read the answer after CloseWrite: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("answer of %d bytes, want the %d sent", len(got), len(msg))
	}
}

// TestCloseEndsBothWays: a far side that writes and closes without
// reading delivers all it wrote and then end-of-stream, not a reset; the
// opener's writes then fail instead of blocking once the window is full,
// and neither multiplexer keeps the stream.
func TestCloseEndsBothWays(t *testing.T) {
	want := bytes.Repeat([]byte("bye "), 50_000) // within the first window
	closed := make(chan struct{})
	hs, c, st := dialWith(t, func(ctx context.Context, req *Request) {
		conn, err := req.Accept()
		if err != nil {
			return
		}
		conn.Write(want)
		conn.Close()
		close(closed)
	})
	defer st.Close()
	<-closed
	// The reset that follows the end-of-stream has had time to arrive:
	// it must not cut the read short.
	time.Sleep(50 * time.Millisecond)
	st.SetDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(st)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes (want %d), err %v", len(got), len(want), err)
	}
	buf := make([]byte, 64<<10)
	var werr error
	for sent := 0; sent < 4<<20 && werr == nil; sent += len(buf) {
		_, werr = st.Write(buf)
	}
	var ne net.Error
	if werr == nil || errors.As(werr, &ne) && ne.Timeout() {
		t.Fatalf("writes to a closed stream: %v, want a reset", werr)
	}
	st.Close()
	waitFor(t, "both multiplexers to drop the stream", func() bool {
		sess := c.Status().Session
		far := hs.server.Session("n")
		return sess != nil && far != nil && sess.MuxStreams() == 0 && far.MuxStreams() == 0
	})
}

// TestStatsCountStreams: bytes each way and open streams are counted on
// both sessions, whichever of Read and WriteTo moves the bytes.
func TestStatsCountStreams(t *testing.T) {
	hs, c, st := dialWith(t, func(ctx context.Context, req *Request) {
		conn, err := req.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		io.Copy(conn, conn) // WriteTo
	})
	near := c.Status().Session
	far := hs.server.Session("n")
	if n := near.Stats().StreamsOpen.Load(); n != 1 {
		t.Errorf("near side counts %d open streams, want 1", n)
	}
	msg := bytes.Repeat([]byte("count"), 50_000)
	go func() { st.Write(msg); st.CloseWrite() }()
	got, err := io.ReadAll(st) // Read
	if err != nil || len(got) != len(msg) {
		t.Fatalf("echo: %d bytes, %v", len(got), err)
	}
	st.Close()
	st.Close() // counted once
	n := int64(len(msg))
	if in, out := near.Stats().BytesIn.Load(), near.Stats().BytesOut.Load(); in != n || out != n {
		t.Errorf("near side counted %d in, %d out; want %d each", in, out, n)
	}
	waitFor(t, "the far side's counts", func() bool {
		return far.Stats().BytesIn.Load() == n && far.Stats().BytesOut.Load() == n &&
			far.Stats().StreamsOpen.Load() == 0 && near.Stats().StreamsOpen.Load() == 0
	})
	if tot := far.Stats().StreamsTotal.Load(); tot != 1 {
		t.Errorf("far side counted %d streams in all, want 1", tot)
	}
}

// TestIdleStreamsHoldNoBuffer: streams waiting in WriteTo on both sides
// hold no copy buffer, so a thousand idle streams stay well under the
// 64 KiB each that a buffer per stream would cost.
func TestIdleStreamsHoldNoBuffer(t *testing.T) {
	const streams = 1000
	h := newHarness(t, ServerOptions{Handler: StreamHandlerFunc(func(ctx context.Context, req *Request) {
		conn, err := req.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		conn.(*Stream).WriteTo(io.Discard)
	})})
	c := h.startClient(ClientOptions{Name: "idle"})
	waitFor(t, "session", func() bool { return c.Status().State == StateUp })

	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	// Warm the pools and the session up first.
	warm := mustDial(t, c)
	warm.Write(bytes.Repeat([]byte("w"), 1<<20))
	warm.Close()
	before := heap()
	var copies sync.WaitGroup
	var conns []net.Conn
	for range streams {
		conn := mustDial(t, c)
		conns = append(conns, conn)
		copies.Add(1)
		go func() { defer copies.Done(); conn.(*Stream).WriteTo(io.Discard) }()
	}
	time.Sleep(100 * time.Millisecond) // let every WriteTo start waiting
	per := (int64(heap()) - int64(before)) / streams
	t.Logf("heap per idle stream, both sides: %d bytes", per)
	if per > 16<<10 {
		t.Errorf("each idle stream holds %d bytes of heap, both sides together; want < 16 KiB", per)
	}
	for _, conn := range conns {
		conn.Close()
	}
	copies.Wait()
}

func mustDial(t *testing.T, c *Client) net.Conn {
	t.Helper()
	conn, err := c.Dial(context.Background(), wire.Header{Kind: wire.KindTCP, Target: "x:1"})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	return conn
}

// TestOverloadBurst: a burst of opens far beyond MaxStreams is refused
// with an answer, none reset or lost on the way.
func TestOverloadBurst(t *testing.T) {
	release := make(chan struct{})
	h := newHarness(t, ServerOptions{Handler: holdUntil(release), Mux: MuxOptions{MaxStreams: 2}})
	c := h.startClient(ClientOptions{Name: "n"})
	defer close(release)
	for range 2 {
		defer mustDial(t, c).Close()
	}
	const burst = 300
	errs := make(chan error, burst)
	for range burst {
		go func() {
			conn, err := c.Dial(context.Background(), wire.Header{Kind: wire.KindTCP, Target: "x:1"})
			if err == nil {
				conn.Close()
			}
			errs <- err
		}()
	}
	for range burst {
		var re *wire.RejectError
		if err := <-errs; !errors.As(err, &re) || re.Code != wire.CodeOverloaded {
			t.Fatalf("stream beyond the limit: %v, want overloaded", err)
		}
	}
}

// TestKeepAlive: a peer that answers nothing is dropped within
// KeepAliveTimeout, and a live but idle one is kept.
func TestKeepAlive(t *testing.T) {
	mo := MuxOptions{KeepAliveInterval: 200 * time.Millisecond, KeepAliveTimeout: time.Second}
	h := newHarness(t, ServerOptions{Mux: mo})
	live := h.startClient(ClientOptions{Name: "live", Mux: mo})
	waitFor(t, "live session", func() bool { return live.Status().State == StateUp })
	first := live.Status().Session

	// A WebSocket whose reader never answers a ping: it reads and drops.
	ws := rawTunnel(t, h, "silent")
	go func() {
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				return
			}
		}
	}()
	waitFor(t, "silent session", func() bool { return h.server.Session("silent") != nil })
	start := time.Now()
	for h.server.Session("silent") != nil {
		if time.Since(start) > mo.KeepAliveTimeout+time.Second {
			t.Fatalf("silent peer still up after %s (keepalive timeout %s)", time.Since(start), mo.KeepAliveTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("silent peer dropped after %s", time.Since(start).Round(time.Millisecond))

	time.Sleep(3*mo.KeepAliveTimeout - time.Since(start))
	if s := live.Status(); s.Session != first || s.Connects != 1 {
		t.Fatalf("idle live peer lost its session (state %s, %d connects)", s.State, s.Connects)
	}
	roundTrip(t, mustDial(t, live), []byte("still up"))
}

// TestWaitSentBeforeClose: what a stream wrote, and its end, just before
// its session closes reach the peer if WaitSent comes between; yamux
// itself drops what still waits in its send queue, and the peer what it
// received on a stream not yet ended.
func TestWaitSentBeforeClose(t *testing.T) {
	const size = 8 << 20
	for range 5 {
		_, _, st := dialWith(t, func(ctx context.Context, req *Request) {
			c, err := req.Accept()
			if err != nil {
				return
			}
			c.Write(bytes.Repeat([]byte("w"), size))
			c.Close() // as a drained listener does
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if err := req.session.WaitSent(wctx); err != nil {
				t.Errorf("WaitSent: %v", err)
			}
			req.session.Close()
		})
		st.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, _ := io.Copy(io.Discard, st) // ends with the session's error
		st.Close()
		if got != size {
			t.Fatalf("peer read %d bytes of the %d written before the session closed", got, size)
		}
	}
}

// TestWaitSentAfterSessionEnd: WaitSent in a handler whose session has
// ended returns nil, as it says, though the handler's ctx has ended with
// the session too; it chose between the two at random.
func TestWaitSentAfterSessionEnd(t *testing.T) {
	errs := make(chan error, 1)
	for range 20 {
		proceed := make(chan struct{})
		_, _, st := dialWith(t, func(ctx context.Context, req *Request) {
			c, err := req.Accept()
			if err != nil {
				errs <- err
				return
			}
			<-proceed
			// Data queued and cut off by the session's end: the queue
			// never settles.
			c.Write(make([]byte, 1<<20))
			req.session.Close()
			<-ctx.Done() // both the session's end and ctx's are ready now
			errs <- req.session.WaitSent(ctx)
		})
		close(proceed)
		if err := <-errs; err != nil {
			t.Fatalf("WaitSent after the session ended: %v", err)
		}
		st.Close()
	}
}

// TestQuiet: a stream is quiet while nothing waits to be read, and not
// once bytes or the far side's end-of-stream have arrived. Asking consumes
// nothing and leaves no read deadline behind.
func TestQuiet(t *testing.T) {
	send := make(chan string)
	_, _, st := dialWith(t, func(ctx context.Context, req *Request) {
		c, err := req.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		for s := range send {
			c.Write([]byte(s))
		}
	})
	defer st.Close()
	if !st.Quiet() {
		t.Fatal("a new stream is not quiet")
	}
	send <- "hi"
	waitFor(t, "bytes to arrive", func() bool { return !st.Quiet() })
	buf := make([]byte, 2)
	if _, err := io.ReadFull(st, buf); err != nil || string(buf) != "hi" {
		t.Fatalf("read after Quiet: %q, %v", buf, err)
	}
	if !st.Quiet() {
		t.Fatal("not quiet once read")
	}
	// A read now waits for bytes, as it would with no deadline ever set.
	go func() { time.Sleep(50 * time.Millisecond); send <- "!" }()
	if _, err := io.ReadFull(st, buf[:1]); err != nil || buf[0] != '!' {
		t.Fatalf("blocking read after Quiet: %q, %v", buf[:1], err)
	}
	close(send)
	waitFor(t, "end-of-stream to arrive", func() bool { return !st.Quiet() })
	if n, err := st.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("read at the end: %d, %v; want EOF", n, err)
	}
}
