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

// TestPeerGone: a handshake's connection counts as gone once its client
// has closed it, whether or not bytes wait unread ahead of the FIN (as a
// TLS client's close_notify does), and only then.
func TestPeerGone(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// pair returns the server's end of a new connection, and the client's.
	pair := func() (srv, cli net.Conn) {
		t.Helper()
		cli, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		srv, err = ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close(); srv.Close() })
		return srv, cli
	}
	goneAfter := func(what string, close func(cli net.Conn)) {
		t.Helper()
		srv, cli := pair()
		close(cli)
		waitFor(t, what+": gone", func() bool { return peerGone(srv) })
	}

	srv, cli := pair()
	if _, err := cli.Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the request", func() bool { return unread(srv) > 0 })
	if peerGone(srv) {
		t.Fatal("a client that is open, its request unread: gone")
	}

	goneAfter("closed, nothing unread", func(cli net.Conn) { cli.Close() })
	goneAfter("closed after its request", func(cli net.Conn) {
		cli.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
		cli.Close()
	})
	goneAfter("reset", func(cli net.Conn) {
		cli.(*net.TCPConn).SetLinger(0)
		cli.Close()
	})

	// Under TLS: the handshake done, the request sent, then close_notify
	// and the FIN.
	cert, _ := selfSigned(t, "localhost")
	raw, rawCli := pair()
	srvTLS := tls.Server(raw, &tls.Config{Certificates: []tls.Certificate{cert}})
	cliTLS := tls.Client(rawCli, &tls.Config{InsecureSkipVerify: true})
	done := make(chan error, 1)
	go func() { done <- srvTLS.Handshake() }()
	if err := cliTLS.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := cliTLS.Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the request under TLS", func() bool { return unread(raw) > 0 })
	if peerGone(srvTLS) {
		t.Fatal("an open TLS client, its request unread: gone")
	}
	cliTLS.Close()
	waitFor(t, "a TLS client closed after its request: gone", func() bool { return peerGone(srvTLS) })
}

// unread returns how many bytes wait to be read on c (SIOCINQ).
func unread(c net.Conn) int {
	n := 0
	rawSocket(c).Control(func(fd uintptr) {
		n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ)
	})
	return n
}
