package tunnel

import (
	"context"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
	"github.com/west-tunnel/west/internal/wire"
)

// frozenListener accepts nothing until thaw is closed, as a tunnel server
// stopped with SIGSTOP (or a paused VM): its kernel still completes TCP
// handshakes and keeps what clients send, in its backlog.
type frozenListener struct {
	net.Listener
	thaw chan struct{}
}

func (l frozenListener) Accept() (net.Conn, error) {
	<-l.thaw
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return socketHidden{c}, nil
}

// socketHidden is a connection whose socket the server cannot look
// into (peerGone), as when a FIN has not come, or a proxy in front of
// the server keeps its side open after the client gave up.
type socketHidden struct{ net.Conn }

// TestFrozenServerKeepsNewestHandshake: a client that redials a frozen
// server gives up on one WebSocket handshake after another, each left in
// the server's backlog with its request sent. Once the server runs again
// it reads them all; those the client abandoned must not take the name
// from the tunnel its latest attempt brought up. They did: the client was
// told it was replaced by another client under its name, and waited its
// longest backoff (15 s by default) before it came back. The server sees
// none of the abandoned connections' FINs here (socketHidden): peerGone
// would drop them all, and only the attempt count is tested.
func TestFrozenServerKeepsNewestHandshake(t *testing.T) {
	var srvLog, cliLog testutil.Buffer
	thaw := make(chan struct{})
	h := newHarnessOn(t, ServerOptions{Logger: logTo(&srvLog)}, func(ln net.Listener) net.Listener {
		return frozenListener{ln, thaw}
	})
	var dials atomic.Int64
	hook := func(net.Conn) { dials.Add(1) }
	dialledHook.Store(&hook)
	t.Cleanup(func() { dialledHook.Store(nil) })
	c := h.startClient(ClientOptions{Name: "frozen", West: NewID(), Logger: logTo(&cliLog),
		HandshakeTimeout: 300 * time.Millisecond, MinBackoff: 10 * time.Millisecond, MaxBackoff: time.Minute})
	// Thaw while the latest attempt waits for its answer, behind three
	// abandoned ones.
	waitFor(t, "handshakes abandoned", func() bool {
		failed := int64(strings.Count(cliLog.String(), "tunnel connect failed"))
		return failed >= 3 && dials.Load() == failed+1
	})
	close(thaw)
	// Every handshake the client sent has been read: registered, or
	// dropped as outlived by a later one.
	waitFor(t, "every handshake read", func() bool {
		logs := srvLog.String()
		read := strings.Count(logs, "tunnel client connected") + strings.Count(logs, "outlived by a later one")
		return int64(read) >= dials.Load()
	})
	waitFor(t, "the tunnel up", func() bool { return c.Status().Connects > 0 })
	keepsFirstTunnel(t, h, c, "frozen", &cliLog, &srvLog)
	if logs := srvLog.String(); strings.Contains(logs, "changes hands again") {
		t.Fatalf("server warns of two clients under one name:\n%s\nclient log:\n%s", logs, cliLog.String())
	}
}

// TestFrozenServerDropsHandshakeOfGoneClient: a west restarted while its
// tunnel server is stopped leaves a handshake of the old process in the
// server's backlog, closed as that process ended, beside the new
// process's. Once the server runs again, the old one, read after the new
// one's tunnel is up, must not take the name from it: it did, and the new
// process waited its longest backoff (15 s by default) to come back. The
// attempt count cannot tell them apart, as each process counts its own.
func TestFrozenServerDropsHandshakeOfGoneClient(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("peerGone reads the socket only on Linux")
	}
	var srvLog, cliLog testutil.Buffer
	var h *harness
	ln := &newestFirstListener{thaw: make(chan struct{})}
	h = newHarnessOn(t, ServerOptions{Logger: logTo(&srvLog)}, func(inner net.Listener) net.Listener {
		ln.Listener = inner
		return ln
	})
	var thawOnce sync.Once
	thaw := func() { thawOnce.Do(func() { close(ln.thaw) }) }
	t.Cleanup(thaw) // before the harness's, which waits for Accept
	var dials atomic.Int64
	var dialled atomic.Pointer[net.Conn] // the first
	hook := func(c net.Conn) {
		dialled.CompareAndSwap(nil, &c)
		dials.Add(1)
	}
	dialledHook.Store(&hook)
	t.Cleanup(func() { dialledHook.Store(nil) })
	opts := func(west string) ClientOptions {
		return ClientOptions{URL: h.url, Name: "restarted", West: west, Logger: logTo(&cliLog),
			HandshakeTimeout: time.Minute, MinBackoff: 10 * time.Millisecond, MaxBackoff: time.Minute}
	}
	_, stopOld := runClient(t, opts(NewID()))
	// The hook runs as the dial returns, before the request is written:
	// stopped then, the old process would leave a connection with no
	// handshake on it, which the server never logs.
	waitFor(t, "the old process's handshake sent", func() bool {
		c := dialled.Load()
		if c == nil {
			return false
		}
		n, ok := ackedBytes(*c)
		return ok && n > 1 // the SYN counts one
	})
	stopOld() // closes its connection, handshake unanswered
	c := h.startClient(opts(NewID()))
	waitFor(t, "the new process's handshake sent", func() bool { return dials.Load() == 2 })
	// The new process's handshake is read first, and the old one only
	// once the new one's tunnel is registered.
	ln.pending, ln.before = 2, func() {
		waitFor(t, "the new tunnel registered", func() bool { return sessionsNamed(h.server, "restarted") == 1 })
	}
	thaw()
	waitFor(t, "both handshakes read", func() bool {
		logs := srvLog.String()
		return strings.Count(logs, "tunnel client connected")+strings.Count(logs, "already gone") >= 2
	})
	keepsFirstTunnel(t, h, c, "restarted", &cliLog, &srvLog)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := h.server.Dial(ctx, "restarted", wire.Header{Kind: wire.KindTCP, Target: "x:1"})
	if err != nil {
		t.Fatalf("a stream to the name: %v", err)
	}
	roundTrip(t, stream, []byte("still here"))
}

// keepsFirstTunnel checks, once a replaced session's close has had time
// to reach it, that client c still has its first tunnel up, the only one
// the server holds under name.
func keepsFirstTunnel(t *testing.T, h *harness, c *Client, name string, cliLog, srvLog *testutil.Buffer) {
	t.Helper()
	time.Sleep(50 * time.Millisecond)
	if st := c.Status(); st.State != StateUp || st.Connects != 1 {
		t.Fatalf("client %s after %d tunnels (last error: %v), want its first still up\nclient log:\n%s\nserver log:\n%s",
			st.State, st.Connects, st.LastError, cliLog.String(), srvLog.String())
	}
	if n := sessionsNamed(h.server, name); n != 1 {
		t.Fatalf("server holds %d tunnels under the name, want 1", n)
	}
}

// newestFirstListener accepts nothing until thaw is closed; then it takes
// the pending connections from the backlog and hands them out newest
// first, calling before ahead of each after the first.
type newestFirstListener struct {
	net.Listener
	thaw    chan struct{}
	pending int
	before  func()
	once    sync.Once
	held    []net.Conn
}

func (l *newestFirstListener) Accept() (net.Conn, error) {
	<-l.thaw
	l.once.Do(func() {
		for range l.pending {
			c, err := l.Listener.Accept()
			if err != nil {
				return
			}
			l.held = append(l.held, c)
		}
	})
	// One goroutine accepts: held needs no lock.
	if n := len(l.held); n > 0 {
		if n < l.pending {
			l.before()
		}
		c := l.held[n-1]
		l.held = l.held[:n-1]
		return c, nil
	}
	return l.Listener.Accept()
}
