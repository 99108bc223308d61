package tunnel

import (
	"crypto/tls"
	"net"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestTunnelLimitsUnsentBytes: the tunnel's TCP connection lets the
// kernel hold at most unsentLimit bytes unsent, on a plain connection and
// under TLS.
func TestTunnelLimitsUnsentBytes(t *testing.T) {
	accepted := make(chan net.Conn, 4)
	h := newHarnessOn(t, ServerOptions{}, func(ln net.Listener) net.Listener { return recordingListener{ln, accepted} })
	h.startClient(ClientOptions{Name: "n"})
	waitFor(t, "session", func() bool { return h.server.Session("n") != nil })
	if got := notSentLowat(t, <-accepted); got != unsentLimit {
		t.Fatalf("server side of a tunnel: TCP_NOTSENT_LOWAT %d, want %d", got, unsentLimit)
	}

	// Under TLS the option goes on the TCP connection beneath.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	limitUnsent(tls.Client(raw, &tls.Config{}))
	if got := notSentLowat(t, raw); got != unsentLimit {
		t.Fatalf("TCP beneath TLS: TCP_NOTSENT_LOWAT %d, want %d", got, unsentLimit)
	}
}

// recordingListener passes every accepted connection, unwrapped, to
// accepted as well.
type recordingListener struct {
	net.Listener
	accepted chan<- net.Conn
}

func (l recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted <- c
	}
	return c, err
}

func notSentLowat(t *testing.T, c net.Conn) int {
	t.Helper()
	raw, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var serr error
	raw.Control(func(fd uintptr) {
		v, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT)
	})
	if serr != nil {
		t.Fatal(serr)
	}
	return v
}
