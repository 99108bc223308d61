package testutil

import (
	"bufio"
	"io"
	"net"
	"testing"
)

// EchoServer serves a TCP echo on loopback until the test ends and returns
// its address. It honours half-close: it echoes until the client's
// end-of-stream, then ends its own side.
func EchoServer(t testing.TB) string {
	return ServeTCP(t, echo)
}

// EchoOn serves EchoServer's echo on ln, a listener the test opened
// itself, until the test ends.
func EchoOn(t testing.TB, ln net.Listener) {
	t.Cleanup(func() { ln.Close() })
	go serveOn(ln, echo)
}

func echo(c net.Conn) {
	io.Copy(c, c)
	if tc, ok := c.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
}

// LineServer serves TCP on loopback until the test ends and returns its
// address: it answers each line a client sends with prefix and the line.
func LineServer(t testing.TB, prefix string) string {
	return ServeTCP(t, func(c net.Conn) {
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			io.WriteString(c, prefix+sc.Text()+"\n")
		}
	})
}

// ServeTCP runs serve on each connection to a loopback listener, closing
// it after, until the test ends, and returns the listener's address.
func ServeTCP(t testing.TB, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go serveOn(ln, serve)
	return ln.Addr().String()
}

// serveOn runs serve on each connection ln accepts, closing it after,
// until ln closes.
func serveOn(ln net.Listener, serve func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			serve(c)
		}()
	}
}
