package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/west-tunnel/west/internal/testutil"
	"github.com/west-tunnel/west/internal/wire"
)

// says answers each stream with who, so a test sees which tunnel a
// server's Dial took.
func says(who string) StreamHandler {
	return StreamHandlerFunc(func(ctx context.Context, req *Request) {
		c, err := req.Accept()
		if err != nil {
			return
		}
		io.WriteString(c, who)
		c.Close()
	})
}

// runClient runs a client until the returned function or the test's end
// stops it.
func runClient(t *testing.T, opts ClientOptions) (*Client, func()) {
	t.Helper()
	c := NewClient(opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return c, stop
}

// dialSays is who answers a stream the server opens to peer.
func dialSays(t *testing.T, s *Server, peer string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := s.Dial(ctx, peer, wire.Header{Kind: wire.KindTCP, Target: "x:1"})
	if err != nil {
		t.Fatalf("dial %s: %v", peer, err)
	}
	defer c.Close()
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read from %s: %v", peer, err)
	}
	return string(b)
}

// sessionsNamed counts the server's live tunnels under name.
func sessionsNamed(s *Server, name string) int {
	n := 0
	for _, sess := range s.Sessions() {
		if sess.Peer() == name {
			n++
		}
	}
	return n
}

// Two tunnel clients of one west under one name (a server it reaches by
// two URLs) both keep their tunnels: the server sends on the newest, and
// on the older once the newest has gone. Another west under the name
// still takes it from both.
func TestOneWestTwoClientsKeepBoth(t *testing.T) {
	var srvLog testutil.Buffer
	h := newHarness(t, ServerOptions{Logger: logTo(&srvLog)})
	opts := func(who, west string) ClientOptions {
		return ClientOptions{URL: h.url, Name: "same", West: west, Handler: says(who), MinBackoff: 10 * time.Millisecond, MaxBackoff: time.Hour}
	}
	a, _ := runClient(t, opts("a", "w1"))
	waitFor(t, "a's tunnel", func() bool { return a.Status().State == StateUp && h.server.Session("same") != nil })
	b, stopB := runClient(t, opts("b", "w1"))
	waitFor(t, "b's tunnel", func() bool { return b.Status().State == StateUp && sessionsNamed(h.server, "same") == 2 })

	time.Sleep(300 * time.Millisecond) // a replaced one would be closed by now
	for who, c := range map[string]*Client{"a": a, "b": b} {
		if st := c.Status(); st.State != StateUp || st.Connects != 1 {
			t.Errorf("%s: %s after %d connects (%v), want up since its first", who, st.State, st.Connects, st.LastError)
		}
	}
	if n := sessionsNamed(h.server, "same"); n != 2 {
		t.Fatalf("the server holds %d tunnels under the name, want both", n)
	}
	if got := srvLog.String(); !strings.Contains(got, "both kept") || strings.Contains(got, "replaces") {
		t.Errorf("server log:\n%s\nwant the second tunnel kept beside the first, none replaced", got)
	}
	if who := dialSays(t, h.server, "same"); who != "b" {
		t.Errorf("a stream to the name reached %s, want the newest tunnel's client, b", who)
	}

	stopB()
	waitFor(t, "b's tunnel to end", func() bool { return sessionsNamed(h.server, "same") == 1 })
	if who := dialSays(t, h.server, "same"); who != "a" {
		t.Errorf("with b gone, a stream to the name reached %s, want a", who)
	}

	other, _ := runClient(t, opts("other", "w2"))
	waitFor(t, "a to be replaced", func() bool { return a.Status().State == StateBackoff })
	if err := a.Status().LastError; err == nil || !strings.Contains(err.Error(), "replaced by a newer tunnel under this name") {
		t.Errorf("a's last error %v, want the server's reason", err)
	}
	waitFor(t, "the other west's tunnel", func() bool { return other.Status().State == StateUp && sessionsNamed(h.server, "same") == 1 })
	if who := dialSays(t, h.server, "same"); who != "other" {
		t.Errorf("a stream to the name reached %s, want the other west's client", who)
	}
}

// rawTunnelAs opens a tunnel by hand, named name, with InstanceHeader
// inst unless it is empty.
func rawTunnelAs(t *testing.T, h *harness, name, inst string) *websocket.Conn {
	t.Helper()
	header := http.Header{"Origin": {name}}
	if inst != "" {
		header.Set(InstanceHeader, inst)
	}
	d := websocket.Dialer{Subprotocols: []string{wire.Subprotocol}, HandshakeTimeout: 5 * time.Second}
	ws, _, err := d.Dial(h.url, header)
	if err != nil {
		t.Fatalf("raw handshake: %v", err)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

// One west keeps at most maxSessionsPerName tunnels under a name: the
// oldest goes, told why.
func TestSiblingTunnelsAreBounded(t *testing.T) {
	h := newHarness(t, ServerOptions{})
	var first *websocket.Conn
	for i := range maxSessionsPerName + 1 {
		ws := rawTunnelAs(t, h, "many", fmt.Sprintf("w/c%d", i))
		if i == 0 {
			first = ws
		}
		// Registered one by one, so that the oldest is the first.
		waitFor(t, fmt.Sprintf("tunnel %d", i), func() bool {
			return sessionsNamed(h.server, "many") == min(i+1, maxSessionsPerName)
		})
	}
	var ce *websocket.CloseError
	if err := readToClose(first); !errors.As(err, &ce) || ce.Code != closeReplaced {
		t.Fatalf("the oldest tunnel read %v, want a close message with code %d", err, closeReplaced)
	}
	time.Sleep(100 * time.Millisecond)
	if n := sessionsNamed(h.server, "many"); n != maxSessionsPerName {
		t.Errorf("%d tunnels under the name, want %d", n, maxSessionsPerName)
	}
}

// A malformed InstanceHeader or AttemptHeader is refused before the
// upgrade, with the reason.
func TestBadInstanceHeader(t *testing.T) {
	h := newHarness(t, ServerOptions{})
	for _, v := range []string{"nowest", "w/", "/c", "w/c/d", "w/c d", "w/" + strings.Repeat("c", 65)} {
		d := websocket.Dialer{Subprotocols: []string{wire.Subprotocol}, HandshakeTimeout: 5 * time.Second}
		_, resp, err := d.Dial(h.url, http.Header{"Origin": {"p"}, InstanceHeader: {v}})
		if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("%s %q: %v, %v; want 400", InstanceHeader, v, resp, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), InstanceHeader) {
			t.Errorf("%s %q: refused with %q, want the header named", InstanceHeader, v, body)
		}
	}
	for _, v := range []string{"x", "-1", "1.5", "18446744073709551616"} {
		d := websocket.Dialer{Subprotocols: []string{wire.Subprotocol}, HandshakeTimeout: 5 * time.Second}
		_, resp, err := d.Dial(h.url, http.Header{"Origin": {"p"}, InstanceHeader: {"w/c"}, AttemptHeader: {v}})
		if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("%s %q: %v, %v; want 400", AttemptHeader, v, resp, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), AttemptHeader) {
			t.Errorf("%s %q: refused with %q, want the header named", AttemptHeader, v, body)
		}
	}
	if n := len(h.server.Sessions()); n != 0 {
		t.Errorf("%d sessions after refused handshakes", n)
	}
}

// A Recheck that no longer admits a west closes each of its tunnels under
// the name, and names the peer once.
func TestRecheckClosesSiblings(t *testing.T) {
	h := newHarness(t, ServerOptions{})
	var clients []*Client
	for i := range 2 {
		c, _ := runClient(t, ClientOptions{URL: h.url, Name: "pair", West: "w", Handler: echoHandler, MinBackoff: time.Hour})
		waitFor(t, fmt.Sprintf("tunnel %d", i), func() bool { return sessionsNamed(h.server, "pair") == i+1 })
		clients = append(clients, c)
	}
	closed := h.server.Recheck(func(*http.Request, string) error { return errors.New("token revoked") })
	if len(closed) != 1 || closed[0] != "pair" {
		t.Errorf("Recheck closed %q, want the peer named once", closed)
	}
	for i, c := range clients {
		waitFor(t, fmt.Sprintf("client %d to back off", i), func() bool { return c.Status().State == StateBackoff })
		if err := c.Status().LastError; err == nil || !strings.Contains(err.Error(), "token revoked") {
			t.Errorf("client %d: last error %v, want the reason", i, err)
		}
	}
}

// A west that retires one of its two tunnels under a name tells the
// server it drains on that one: the server opens streams on the other.
func TestDialAvoidsDrainingSibling(t *testing.T) {
	h := newHarness(t, ServerOptions{})
	opts := func(who string) ClientOptions {
		return ClientOptions{URL: h.url, Name: "same", West: "w", Handler: says(who), MinBackoff: 10 * time.Millisecond, MaxBackoff: time.Hour}
	}
	a, _ := runClient(t, opts("a"))
	waitFor(t, "a's tunnel", func() bool { return a.Status().State == StateUp && h.server.Session("same") != nil })
	b, _ := runClient(t, opts("b"))
	waitFor(t, "b's tunnel", func() bool { return b.Status().State == StateUp && sessionsNamed(h.server, "same") == 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Status().Session.NoticeDrain(ctx); err != nil {
		t.Fatal(err)
	}
	if !h.server.Session("same").PeerDraining() {
		t.Fatal("the server did not take b's drain notice")
	}
	if who := dialSays(t, h.server, "same"); who != "a" {
		t.Errorf("a stream went to %s, whose tunnel drains; want a", who)
	}
}
