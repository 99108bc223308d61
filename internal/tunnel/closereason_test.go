package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/west-tunnel/west/internal/testutil"
	"github.com/west-tunnel/west/internal/wire"
)

// logTo returns a logger writing its lines, at info and above, to b.
func logTo(b *testutil.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// A live client whose name another client takes is told so, and waits its
// longest backoff before it takes the name back: two wests sharing a name
// then trade the tunnel slowly, with a log line that says why, rather
// than every quarter second in silence.
func TestReplacedClientIsToldWhy(t *testing.T) {
	h := newHarness(t, ServerOptions{})
	var firstLog testutil.Buffer
	first := h.startClient(ClientOptions{Name: "same", MinBackoff: 10 * time.Millisecond, MaxBackoff: time.Hour, Logger: logTo(&firstLog)})
	// The client is up once the handshake's answer arrives, and the server
	// registers the session only after it sends it: a second client whose
	// session registered in between would be the one replaced.
	waitFor(t, "first session", func() bool { return first.Status().State == StateUp && h.server.Session("same") != nil })
	firstSess := h.server.Session("same")

	h.startClient(ClientOptions{Name: "same", MinBackoff: time.Hour})
	waitFor(t, "the first client to back off", func() bool { return first.Status().State == StateBackoff })
	st := first.Status()
	if st.LastError == nil || !strings.Contains(st.LastError.Error(), "by the server: replaced by a newer tunnel under this name, from 127.0.0.1:") {
		t.Errorf("replaced client's last error %v, want the server's reason", st.LastError)
	}
	if until := time.Until(st.RetryAt); until < 30*time.Minute {
		t.Errorf("replaced client redials in %s, want its longest backoff (an hour ±20%%)", until)
	}
	if got := firstLog.String(); !strings.Contains(got, "level=WARN") || !strings.Contains(got, "tunnel taken over") {
		t.Errorf("replaced client logged:\n%s\nwant a warning saying its tunnel was taken over", got)
	}
	if s := h.server.Session("same"); s == nil || s == firstSess {
		t.Errorf("the second client does not hold the name")
	}
}

// The replaced connection gets a close message with code 4000 and the
// newcomer's address; a name that changes hands twice within a minute
// makes the server warn.
func TestNameTradeWarns(t *testing.T) {
	var srvLog testutil.Buffer
	h := newHarness(t, ServerOptions{Logger: logTo(&srvLog)})
	a := rawTunnel(t, h, "twin")
	waitFor(t, "first session", func() bool { return h.server.Session("twin") != nil })
	sa := h.server.Session("twin")
	b := rawTunnel(t, h, "twin")
	waitFor(t, "second session", func() bool { s := h.server.Session("twin"); return s != nil && s != sa })

	err := readToClose(a)
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != closeReplaced || !strings.HasPrefix(ce.Text, "replaced by a newer tunnel under this name, from 127.0.0.1:") {
		t.Fatalf("replaced connection read %v, want a close message with code %d and the reason", err, closeReplaced)
	}
	if strings.Contains(srvLog.String(), "changes hands again") {
		t.Fatalf("server warned after one takeover, which a reconnecting client causes:\n%s", srvLog.String())
	}

	sb := h.server.Session("twin")
	rawTunnel(t, h, "twin")
	waitFor(t, "third session", func() bool { s := h.server.Session("twin"); return s != nil && s != sb })
	if err := readToClose(b); !errors.As(err, &ce) || ce.Code != closeReplaced {
		t.Fatalf("second replaced connection read %v, want code %d", err, closeReplaced)
	}
	waitFor(t, "the server's warning", func() bool { return strings.Contains(srvLog.String(), "changes hands again") })
	if got := srvLog.String(); !strings.Contains(got, "level=WARN") || !strings.Contains(got, "old_remote=") {
		t.Errorf("server log:\n%s\nwant a warning naming both remotes", got)
	}
}

// readToClose reads ws past the multiplexer's frames to its end.
func readToClose(ws *websocket.Conn) error {
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			return err
		}
	}
}

// Each side says why it ends a tunnel: a stopping server tells its
// clients, and a stopping client tells its server.
func TestStoppingSidesSayWhy(t *testing.T) {
	var srvLog testutil.Buffer
	h := newHarness(t, ServerOptions{Logger: logTo(&srvLog)})
	c := h.startClient(ClientOptions{Name: "going", MinBackoff: time.Hour})
	waitFor(t, "session", func() bool { return c.Status().State == StateUp })
	h.server.Close()
	waitFor(t, "the client to back off", func() bool { return c.Status().State == StateBackoff })
	if err := c.Status().LastError; err == nil || !strings.Contains(err.Error(), "the tunnel server is stopping") {
		t.Errorf("client's last error %v, want the server's reason", err)
	}

	h2 := newHarness(t, ServerOptions{Logger: logTo(&srvLog)})
	c2 := NewClient(ClientOptions{URL: h2.url, Name: "leaving", Handler: echoHandler})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c2.Run(ctx); close(done) }()
	// Both sides: the server holds the session as soon as it has sent its
	// 101, before the client has read it, and a stop then ends a handshake,
	// which has no tunnel to say why on.
	waitFor(t, "second session", func() bool {
		return h2.server.Session("leaving") != nil && c2.Status().State == StateUp
	})
	cancel()
	<-done
	logged := func() bool {
		return strings.Contains(srvLog.String(), `msg="tunnel client disconnected" peer=leaving`) &&
			strings.Contains(srvLog.String(), `reason="stopped by its west (shutdown, or reload)"`)
	}
	for deadline := time.Now().Add(5 * time.Second); !logged(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the server did not log the client's reason:\n%s", srvLog.String())
		}
	}
	// The multiplexer's own account of the close would only repeat it.
	if strings.Contains(srvLog.String(), "websocket: close") {
		t.Errorf("the close is logged twice at info:\n%s", srvLog.String())
	}
}

// A handshake admitted just before a reload revokes its peer, whose
// session starts only after the reload's Recheck has looked, is judged
// again too: otherwise the revoked peer keeps a tunnel until it next
// reconnects.
func TestRecheckCatchesHandshakeInFlight(t *testing.T) {
	var revoked atomic.Bool
	judge := func(r *http.Request, name string) error {
		if revoked.Load() {
			return errors.New("revoked")
		}
		return nil
	}
	admitted, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	h := newHarness(t, ServerOptions{Admit: func(r *http.Request, name string) error {
		err := judge(r, name)
		// The first handshake is admitted under the old rules, then
		// waits while the reload changes them.
		once.Do(func() { close(admitted); <-release })
		return err
	}})
	var released sync.Once
	letGo := func() { released.Do(func() { close(release) }) }
	t.Cleanup(letGo) // before the server's, which waits for the handshake
	c := h.startClient(ClientOptions{Name: "late", MinBackoff: time.Hour})
	<-admitted
	revoked.Store(true)
	if closed := h.server.Recheck(judge); len(closed) != 0 {
		t.Fatalf("Recheck closed %v before any session was up", closed)
	}
	letGo()
	waitFor(t, "the late session to be closed as revoked", func() bool {
		err := c.Status().LastError
		return c.Status().State == StateBackoff && err != nil && strings.Contains(err.Error(), "no longer admitted: revoked")
	})
}

// One client whose path goes dark twice within a minute, and which finds
// out before its server does (its dead_after is shorter), takes its name
// back from its own dead session each time: the server must not warn of
// two clients sharing the name, which would send the operator hunting
// for a second west that does not exist.
func TestReconnectingClientIsNoTwin(t *testing.T) {
	var srvLog testutil.Buffer
	h := newHarness(t, ServerOptions{Logger: logTo(&srvLog), Mux: MuxOptions{KeepAliveInterval: 100 * time.Millisecond, KeepAliveTimeout: time.Minute}})
	relay := newStallRelay(t, h.http.Listener.Addr().String())
	c := h.startClient(ClientOptions{URL: "ws://" + relay.ln.Addr().String(), Name: "flaky", West: NewID(), MinBackoff: 10 * time.Millisecond,
		Mux: MuxOptions{KeepAliveInterval: 100 * time.Millisecond, KeepAliveTimeout: 500 * time.Millisecond}})
	var prev *Session
	for i := 1; i <= 3; i++ {
		waitFor(t, fmt.Sprintf("session %d", i), func() bool {
			st, s := c.Status(), h.server.Session("flaky")
			return st.State == StateUp && st.Connects == i && s != nil && s != prev
		})
		prev = h.server.Session("flaky")
		if i < 3 {
			relay.stall(true)
		}
	}
	// The server logs a replacement just after the new session becomes
	// visible, so the last line may still be on its way.
	for deadline := time.Now().Add(5 * time.Second); strings.Count(srvLog.String(), "tunnel client replaces its older session") < 2 &&
		time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
	}
	if got := srvLog.String(); strings.Count(got, "tunnel client replaces its older session") != 2 || strings.Contains(got, "changes hands again") {
		t.Fatalf("server log:\n%s\nwant two replacements and no warning of two clients", got)
	}
}

// TestStoppingServerToldDuringUpload: a client that is sending when the
// server stops still learns why. The server's socket stays open after its
// close message until the client has answered it: closed at once, it
// reset the frames the client had in flight, the client's next write
// failed, and its session ended before it read the close message.
func TestStoppingServerToldDuringUpload(t *testing.T) {
	discard := StreamHandlerFunc(func(ctx context.Context, req *Request) {
		c, err := req.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(io.Discard, c)
	})
	for round := range 5 {
		h := newHarness(t, ServerOptions{Handler: discard})
		c := h.startClient(ClientOptions{Name: "uploading", MinBackoff: time.Hour})
		waitFor(t, "session", func() bool { return c.Status().State == StateUp })
		st, err := c.Dial(context.Background(), wire.Header{Kind: wire.KindTCP, Target: "sink:1"})
		if err != nil {
			t.Fatal(err)
		}
		sent := make(chan struct{})
		go func() {
			chunk := make([]byte, 32<<10)
			for i := 0; ; i++ {
				if _, err := st.Write(chunk); err != nil {
					return
				}
				if i == 64 {
					close(sent) // the upload is well under way
				}
			}
		}()
		<-sent
		h.server.Close()
		waitFor(t, "the client to back off", func() bool { return c.Status().State == StateBackoff })
		if err := c.Status().LastError; err == nil || !strings.Contains(err.Error(), stoppingReason) {
			t.Fatalf("round %d: client's last error %v, want the server's reason", round, err)
		}
		st.Close()
	}
}
