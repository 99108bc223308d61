package tunnel

import (
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
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
	return l.Listener.Accept()
}

// TestFrozenServerKeepsNewestHandshake: a client that redials a frozen
// server gives up on one WebSocket handshake after another, each left in
// the server's backlog with its request sent. Once the server runs again
// it reads them all; those the client abandoned must not take the name
// from the tunnel its latest attempt brought up. They did: the client was
// told it was replaced by another client under its name, and waited its
// longest backoff (15 s by default) before it came back.
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
		return int64(strings.Count(logs, "tunnel client connected")+strings.Count(logs, "outlived by a later one")) >= dials.Load()
	})
	waitFor(t, "the tunnel up", func() bool { return c.Status().Connects > 0 })
	time.Sleep(50 * time.Millisecond) // for a replaced session's close to reach the client
	if st := c.Status(); st.State != StateUp || st.Connects != 1 {
		t.Fatalf("client %s after %d tunnels (last error: %v), want its first still up\nclient log:\n%s\nserver log:\n%s",
			st.State, st.Connects, st.LastError, cliLog.String(), srvLog.String())
	}
	if n := sessionsNamed(h.server, "frozen"); n != 1 {
		t.Fatalf("server holds %d tunnels under the name, want 1", n)
	}
	if logs := srvLog.String(); strings.Contains(logs, "changes hands again") {
		t.Fatalf("server warns of two clients under one name:\n%s\nclient log:\n%s", logs, cliLog.String())
	}
}
