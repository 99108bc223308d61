//go:build unix

package sockio

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// outOfFiles is a real listening socket whose Accept fails as accept(2)
// does in a process out of descriptors, as the spare's own accept does not.
type outOfFiles struct{ *net.TCPListener }

func (l outOfFiles) Accept() (net.Conn, error) {
	return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", syscall.EMFILE)}
}

// TestShedListenerTurnsAway: out of descriptors, Accept answers each
// client waiting on the spare and closes its connection, having read
// what the client sent: closed with it unread, the connection would be
// reset, which a client may see before the answer. With no client
// waiting, it returns the error alone.
func TestShedListenerTurnsAway(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const answer = "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
	ln := ShedListener(outOfFiles{inner.(*net.TCPListener)}, func() []byte { return []byte(answer) })
	defer ln.Close()
	if _, err := ln.Accept(); !errors.Is(err, syscall.EMFILE) || errors.As(err, new(*ShedError)) {
		t.Fatalf("no client waiting: %v, want EMFILE alone", err)
	}

	var clients []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// Sent before the listener looks: on loopback, in its socket
		// when Write returns.
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	_, err = ln.Accept()
	var shed *ShedError
	if !errors.As(err, &shed) || shed.Clients != len(clients) || !errors.Is(err, syscall.EMFILE) {
		t.Fatalf("three clients waiting: %v, want a ShedError for 3 that is EMFILE", err)
	}
	//lint:ignore SA1019 as the servers behind the listener read it
	if ne, ok := err.(net.Error); !ok || !ne.Temporary() {
		t.Errorf("%v is not a temporary net.Error: the servers behind the listener would stop", err)
	}
	for i, c := range clients {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(c)
		if string(got) != answer || err != nil {
			t.Errorf("client %d: %q, %v; want the answer, then the end of the connection", i, got, err)
		}
	}
}

// TestShedListenerSpareThatCannotBeOpened: a spare lost for want of a
// descriptor is reserved again by the next Accept that succeeds, when one
// is free; one that cannot be opened for another reason (no /dev/null in
// a chroot, a sandbox that forbids it) is not tried again for each
// connection accepted, which would cost every connection a lock and a
// system call.
func TestShedListenerSpareThatCannotBeOpened(t *testing.T) {
	defer func(f func() (int, error)) { openSpare = f }(openSpare)
	for _, tt := range []struct {
		err   syscall.Errno
		fails int // the opens that fail, before one succeeds
		tries int // of openSpare, for the listener and three connections
	}{
		{syscall.EMFILE, 1, 2},
		{syscall.ENFILE, 2, 3},
		{syscall.ENOENT, 3, 1},
		{syscall.EACCES, 3, 1},
	} {
		tries := 0
		openSpare = func() (int, error) {
			if tries++; tries <= tt.fails {
				return -1, tt.err
			}
			return syscall.Open("/dev/null", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		}
		inner, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln := ShedListener(inner, nil)
		for range 3 {
			c, err := net.Dial("tcp", inner.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
			a, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			a.Close()
		}
		ln.Close()
		if tries != tt.tries {
			t.Errorf("spare failing with %v: opened %d times, want %d", tt.err, tries, tt.tries)
		}
	}
}
