package testutil

import (
	"net"
	"testing"
	"time"
)

// FreeAddr returns a loopback TCP address that was free a moment ago, for
// a west started as a process, which must be told its ports in its config.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// DialClient connects to addr as a client whose reads and writes give up
// after 10 s, closed when the test ends if not before.
func DialClient(t testing.TB, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c.(*net.TCPConn)
}
