package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// deadlineCounter counts the read deadlines set on its connections.
type deadlineCounter struct {
	net.Listener
	n *atomic.Int64
}

func (l deadlineCounter) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countedConn{Conn: c, n: l.n}, nil
}

type countedConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countedConn) SetReadDeadline(t time.Time) error {
	c.n.Add(1)
	return c.Conn.SetReadDeadline(t)
}

func (c *countedConn) SetDeadline(t time.Time) error {
	c.n.Add(1)
	return c.Conn.SetDeadline(t)
}

func (c *countedConn) CloseWrite() error { return c.Conn.(*net.TCPConn).CloseWrite() }

// TestRequestBodyDeadlineCostsLittle: the wait for a client's body is
// bounded (TestStalledRequestBodyIsCut), but setting a deadline costs a
// timer update; an upload that keeps coming should not pay two for each
// read of its body, as the loop pays at most one a second for heads.
func TestRequestBodyDeadlineCostsLittle(t *testing.T) {
	backend := rawHTTPBackend(t, func(c net.Conn, req *http.Request) bool {
		n, _ := io.Copy(io.Discard, req.Body)
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%d", len(fmt.Sprint(n)), n)
		return true
	})
	h := tunnelledTo(t, backend)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var sets atomic.Int64
	serveOn(t, h, &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}, deadlineCounter{ln, &sets})
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const size, piece = 1 << 20, 4 << 10
	fmt.Fprintf(c, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", size)
	chunk := strings.Repeat("x", piece)
	for range size / piece {
		io.WriteString(c, chunk)
		time.Sleep(20 * time.Microsecond) // as a client on a real link sends: a piece at a time
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != fmt.Sprint(size) {
		t.Fatalf("upload: %d %q", resp.StatusCode, body)
	}
	t.Logf("read deadlines set for one %d KiB upload: %d", size>>10, sets.Load())
	if n := sets.Load(); n > 20 {
		t.Errorf("one %d KiB upload set the connection's read deadline %d times; want a few", size>>10, n)
	}
}
