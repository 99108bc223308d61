package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSlowClientIsNotCut: a client that takes its answer slowly, a little
// at a time but far more often than the idle timeout, gets all of it,
// though each of west's writes to it waits longer than the idle timeout.
func TestSlowClientIsNotCut(t *testing.T) {
	for _, tc := range []struct{ name, request string }{
		{"loop", "GET /big HTTP/1.1\r\nHost: x\r\n\r\n"},
		// One with a body, even an empty one, goes to net/http.
		{"net/http", "POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const size = 512 << 10
			backend := rawHTTPBackend(t, func(c net.Conn, req *http.Request) bool {
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", size)
				c.Write(make([]byte, size))
				return true
			})
			h := tunnelledTo(t, backend)
			const idle = 100 * time.Millisecond
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			serveOn(t, h, &http.Server{Handler: h, ReadHeaderTimeout: time.Second, IdleTimeout: idle}, smallSendBuffers{ln})
			c := slowReader(t, ln.Addr().String())
			io.WriteString(c, tc.request)
			resp, err := http.ReadResponse(bufio.NewReaderSize(c, 4<<10), nil)
			if err != nil {
				t.Fatal(err)
			}
			// 4 KiB each 10 ms, 400 KiB/s: a write of 64 KiB waits
			// about 160 ms for the client to take it.
			var got int64
			piece := make([]byte, 4<<10)
			for {
				n, err := io.ReadFull(resp.Body, piece)
				got += int64(n)
				if err != nil {
					if err != io.ErrUnexpectedEOF && err != io.EOF {
						t.Fatalf("after %d of %d bytes: %v", got, size, err)
					}
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if got != size {
				t.Fatalf("got %d of %d bytes", got, size)
			}
		})
	}
}

// slowReader dials addr with a small receive buffer and segments of a
// real network's size: on loopback's 64 KiB segments the kernel lets a
// small window open only by a persist timer's probes, hundreds of
// milliseconds apart.
func slowReader(t *testing.T, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, raw syscall.RawConn) error {
		var err error
		raw.Control(func(fd uintptr) {
			if err = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG, 1400); err == nil {
				err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 16<<10)
			}
		})
		return err
	}}
	c, err := d.DialContext(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(time.Minute))
	return c
}

// smallSendBuffers gives its connections a small send buffer, so that a
// write to a slow reader waits for it rather than for the kernel.
type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		c.(*net.TCPConn).SetWriteBuffer(8 << 10)
	}
	return c, err
}
