package tunnel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
	"github.com/west-tunnel/west/internal/wire"
)

// TestUnreadStreamsDoNotStallOthers: a stream whose reader has stopped
// fills its own window and no more; the tunnel goes on carrying other
// streams, however many such streams there are. (With smux, whose session
// stops reading the tunnel once its streams together hold a session
// window of unread data, the fifth stream here could not even open.)
func TestUnreadStreamsDoNotStallOthers(t *testing.T) {
	mux := MuxOptions{StreamWindow: 1 << 20}
	// The floods write until their windows are full, then wait there
	// until the test ends and their streams are closed.
	h := newHarness(t, ServerOptions{Mux: mux, Handler: floodHandler(64 << 10)})
	c := h.startClient(ClientOptions{Name: "n", Mux: mux})
	for range 8 {
		st, err := c.Dial(context.Background(), wire.Header{Kind: wire.KindTCP, Target: "flood:1"})
		if err != nil {
			t.Fatalf("dial a flooding stream: %v", err)
		}
		defer st.Close()
	}
	time.Sleep(500 * time.Millisecond) // for the floods to fill their windows
	st, err := c.Dial(context.Background(), wire.Header{Kind: wire.KindTCP, Target: "echo:1"})
	if err != nil {
		t.Fatalf("dial beside the unread streams: %v", err)
	}
	st.SetDeadline(time.Now().Add(5 * time.Second))
	roundTrip(t, st, []byte("still moving"))
}

// TestStreamWindowBoundsUnreadData: a stream whose reader has stopped
// receives its window of data and no more, the window being the one the
// receiving side set; the sender's own setting does not matter.
func TestStreamWindowBoundsUnreadData(t *testing.T) {
	const chunk = 16 << 10
	for _, tc := range []struct {
		window, want int
	}{
		{256 << 10, 256 << 10},
		{1 << 20, 1 << 20},
		{0, 16 << 20}, // the default
	} {
		t.Run(fmt.Sprint(tc.want>>10, "KiB"), func(t *testing.T) {
			h := newHarness(t, ServerOptions{Handler: floodHandler(chunk), Mux: MuxOptions{StreamWindow: 64 << 20}})
			c := h.startClient(ClientOptions{Name: "n", Mux: MuxOptions{StreamWindow: tc.window}})
			st, err := c.Dial(context.Background(), wire.Header{Kind: wire.KindTCP, Target: "flood:1"})
			if err != nil {
				t.Fatalf("dial the flooding stream: %v", err)
			}
			defer st.Close()
			// The flood stops when the window is full; a write in
			// progress then holds part of a chunk, not yet counted.
			sent := &h.server.Session("n").Stats().BytesOut
			testutil.Reach(t, sent, int64(tc.want-chunk-64))
			last := testutil.Settle(t, sent, 300*time.Millisecond)
			if last > int64(tc.want) || last < int64(tc.want-chunk-64) {
				t.Fatalf("%d bytes sent to a stream that reads nothing; want its window, %d, less at most one %d-byte write", last, tc.want, chunk)
			}
		})
	}
}

// floodHandler writes chunks of size bytes on streams to "flood:1" for as
// long as it can, and echoes every other stream.
func floodHandler(size int) StreamHandler {
	chunk := bytes.Repeat([]byte{'x'}, size)
	return StreamHandlerFunc(func(ctx context.Context, req *Request) {
		if req.Header.Target != "flood:1" {
			echoHandler(ctx, req)
			return
		}
		c, err := req.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		for {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	})
}

// TestBulkStreamDoesNotDelayOthers: on a slow link, a stream that writes
// as fast as it can keeps only a few milliseconds of the link's time
// waiting in the session's send queue, so a short reply on another stream
// waits behind that much, not behind everything the bulk stream's window
// would allow. (go-yamux alone queues up to 64 frames of 256 KiB, 16 MiB,
// in one line: two seconds at this link's 8 MiB/s.)
func TestBulkStreamDoesNotDelayOthers(t *testing.T) {
	h := newHarnessOn(t, ServerOptions{Handler: floodHandler(MaxPayload)},
		func(ln net.Listener) net.Listener { return pacedListener{ln, 8 << 20} })
	c := h.startClient(ClientOptions{Name: "n"})
	flood, err := c.Dial(context.Background(), wire.Header{Kind: wire.KindTCP, Target: "flood:1"})
	if err != nil {
		t.Fatalf("dial the bulk stream: %v", err)
	}
	defer flood.Close()
	go io.Copy(io.Discard, flood)
	time.Sleep(300 * time.Millisecond) // for the bulk stream to fill what it may

	start := time.Now()
	st, err := c.Dial(context.Background(), wire.Header{Kind: wire.KindTCP, Target: "echo:1"})
	if err != nil {
		t.Fatalf("dial beside the bulk stream: %v", err)
	}
	st.SetDeadline(time.Now().Add(10 * time.Second))
	roundTrip(t, st, []byte("not stuck behind the download"))
	// Two replies (the dial's and the echo's), each behind about 5 ms of
	// the link's time: tens of milliseconds. Behind a full send queue, 4 s.
	d := time.Since(start)
	t.Logf("dial and round trip beside a bulk stream: %v", d.Round(time.Millisecond))
	if d > time.Second {
		t.Fatalf("a dial and a round trip beside a bulk stream took %v, want under 1s", d.Round(time.Millisecond))
	}
}

// pacedListener's connections write at most rate bytes per second, as a
// slow uplink would, without filling the kernel's buffers.
type pacedListener struct {
	net.Listener
	rate int
}

func (l pacedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &pacedConn{Conn: c, rate: l.rate}, nil
}

type pacedConn struct {
	net.Conn
	rate int
}

func (c *pacedConn) Write(b []byte) (int, error) {
	time.Sleep(time.Duration(len(b)) * time.Second / time.Duration(c.rate))
	return c.Conn.Write(b)
}

// TestQueuedWriteEnds: a write waiting for its stream's share of the send
// queue ends with its deadline, the stream's close or the session's end,
// not when the slow link has carried the rest.
func TestQueuedWriteEnds(t *testing.T) {
	for _, tc := range []struct {
		name    string
		end     func(h *harness, c net.Conn)
		timeout bool // the error must be a timeout
	}{
		{"write deadline", func(_ *harness, c net.Conn) {
			c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		}, true},
		{"stream closed", func(_ *harness, c net.Conn) {
			time.AfterFunc(200*time.Millisecond, func() { c.Close() })
		}, false},
		{"session closed", func(h *harness, _ net.Conn) {
			time.AfterFunc(200*time.Millisecond, func() { h.server.Session("n").Close() })
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errc := make(chan error, 1)
			var h *harness
			h = newHarnessOn(t, ServerOptions{Handler: StreamHandlerFunc(func(ctx context.Context, req *Request) {
				c, err := req.Accept()
				if err != nil {
					errc <- err
					return
				}
				defer c.Close()
				tc.end(h, c)
				// 32 s of this link's time.
				_, err = c.Write(make([]byte, 8<<20))
				errc <- err
			})}, func(ln net.Listener) net.Listener { return pacedListener{ln, 256 << 10} })
			c := h.startClient(ClientOptions{Name: "n"})
			st, err := c.Dial(context.Background(), wire.Header{Kind: wire.KindTCP, Target: "bulk:1"})
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer st.Close()
			go io.Copy(io.Discard, st)
			select {
			case err := <-errc:
				if err == nil {
					t.Fatal("the write ended without an error")
				}
				var ne net.Error
				if tc.timeout && !(errors.As(err, &ne) && ne.Timeout()) {
					t.Fatalf("the write ended with %v, want a timeout", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the write still waits 5s after its end")
			}
		})
	}
}

// TestBulkStreamStartDoesNotDelayOthers: when a bulk stream starts on a
// slow link, its first frames go into the kernel's buffers at once, and a
// limit measured from those writes alone would let it queue megabytes
// before the link's real rate shows: a reply on another stream then
// waits behind seconds of data. The limit may grow only by what has been
// written, so the reply waits behind little more than the kernel and the
// path hold anyway. (The relay's path holds about 220 KiB, its buffers
// and the sender's 64 KiB unsent: some 0.45 s at this rate.)
func TestBulkStreamStartDoesNotDelayOthers(t *testing.T) {
	const rate = 512 << 10
	h := newHarness(t, ServerOptions{Handler: floodHandler(MaxPayload)})
	relay := testutil.StartRelay(t, strings.TrimPrefix(h.url, "ws://"))
	relay.Rate(rate)
	c := h.startClient(ClientOptions{Name: "n", URL: "ws://" + relay.Addr()})
	echo, err := c.Dial(context.Background(), wire.Header{Kind: wire.KindTCP, Target: "echo:1"})
	if err != nil {
		t.Fatalf("dial the echo stream: %v", err)
	}
	defer echo.Close()
	echo.SetDeadline(time.Now().Add(30 * time.Second))
	ping := func() time.Duration {
		start := time.Now()
		if _, err := echo.Write([]byte("x")); err != nil {
			t.Fatalf("write to the echo stream: %v", err)
		}
		if _, err := io.ReadFull(echo, make([]byte, 1)); err != nil {
			t.Fatalf("read the echo: %v", err)
		}
		return time.Since(start)
	}
	for range 3 { // a few small frames each way, as before any download
		ping()
	}

	flood, err := c.Dial(context.Background(), wire.Header{Kind: wire.KindTCP, Target: "flood:1"})
	if err != nil {
		t.Fatalf("dial the bulk stream: %v", err)
	}
	defer flood.Close()
	go io.Copy(io.Discard, flood)
	q := h.server.Session("n").queue
	var most int64
	for range 50 { // for the bulk stream to queue what it may
		most = max(most, q.waiting.Load())
		time.Sleep(time.Millisecond)
	}
	t.Logf("most queued at the start: %d KiB, limit now %d KiB", most>>10, q.limit.Load()>>10)

	first := ping()
	time.Sleep(2 * time.Second)
	later := ping()
	t.Logf("echo beside a bulk stream at its start: %v; 2s later: %v", first.Round(time.Millisecond), later.Round(time.Millisecond))
	// With a limit measured from the kernel's buffers alone the stream
	// queued 512 KiB here (1.5 MiB through two wests and HTTP), and the
	// echo took 1.4 s; growing by what was written, 112-255 KiB and
	// 0.6-0.9 s.
	if most > 384<<10 {
		t.Fatalf("a bulk stream queued %d KiB as it started on a %d KiB/s link, want at most 384 KiB", most>>10, rate>>10)
	}
}
