package tunnel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"github.com/west-tunnel/west/internal/wire"
)

// echoHandler accepts every stream and echoes it back, honouring
// half-close: after the opener's end-of-stream it finishes and ends too.
var echoHandler = StreamHandlerFunc(func(ctx context.Context, req *Request) {
	if strings.HasPrefix(req.Header.Target, "refuse") {
		req.Reject(wire.CodeDialFailed, "refused "+req.Header.Target)
		return
	}
	c, err := req.Accept()
	if err != nil {
		return
	}
	defer c.Close()
	io.Copy(c, c)
	c.(*Stream).CloseWrite()
})

type harness struct {
	t      *testing.T
	server *Server
	http   *httptest.Server
	url    string
}

func newHarness(t *testing.T, opts ServerOptions) *harness {
	t.Helper()
	if opts.Handler == nil {
		opts.Handler = echoHandler
	}
	return newHarnessOn(t, opts, nil)
}

// newHarnessOn is newHarness with the server's listener wrapped by wrap,
// if not nil.
func newHarnessOn(t *testing.T, opts ServerOptions, wrap func(net.Listener) net.Listener) *harness {
	t.Helper()
	if opts.Handler == nil {
		opts.Handler = echoHandler
	}
	h := &harness{t: t, server: NewServer(opts)}
	h.http = httptest.NewUnstartedServer(h.server)
	if wrap != nil {
		h.http.Listener = wrap(h.http.Listener)
	}
	h.http.Start()
	h.url = "ws" + strings.TrimPrefix(h.http.URL, "http")
	t.Cleanup(func() {
		h.server.Close()
		h.http.Close()
	})
	return h
}

// startClient runs a client until the test ends.
func (h *harness) startClient(opts ClientOptions) *Client {
	h.t.Helper()
	if opts.URL == "" {
		opts.URL = h.url
	}
	if opts.Handler == nil {
		opts.Handler = echoHandler
	}
	c, _ := runClient(h.t, opts)
	return c
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// roundTrip writes msg, half-closes, and reads the echo to its end.
func roundTrip(t *testing.T, c net.Conn, msg []byte) {
	t.Helper()
	defer c.Close()
	go func() {
		c.Write(msg)
		c.(*Stream).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo: got %d bytes, want %d", len(got), len(msg))
	}
}

func TestStreamsBothWays(t *testing.T) {
	h := newHarness(t, ServerOptions{})
	c := h.startClient(ClientOptions{Name: "node-a"})
	waitFor(t, "session", func() bool { return h.server.Session("node-a") != nil })

	ctx := context.Background()
	msg := bytes.Repeat([]byte("west"), 1<<18) // 1 MiB, more than a frame

	// Client to server.
	conn, err := c.Dial(ctx, wire.Header{Kind: wire.KindTCP, Target: "echo:1"})
	if err != nil {
		t.Fatalf("client dial: %v", err)
	}
	roundTrip(t, conn, msg)

	// Server to client.
	conn, err = h.server.Dial(ctx, "node-a", wire.Header{Kind: wire.KindHTTP, Target: "echo:2"})
	if err != nil {
		t.Fatalf("server dial: %v", err)
	}
	roundTrip(t, conn, msg)

	// Many at once, both ways.
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var conn net.Conn
			var err error
			if i%2 == 0 {
				conn, err = c.Dial(ctx, wire.Header{Kind: wire.KindTCP, Target: "echo:1"})
			} else {
				conn, err = h.server.Dial(ctx, "node-a", wire.Header{Kind: wire.KindTCP, Target: "echo:1"})
			}
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close()
			want := fmt.Appendf(nil, "stream %d", i)
			conn.Write(want)
			conn.(*Stream).CloseWrite()
			got, err := io.ReadAll(conn)
			if err == nil && !bytes.Equal(got, want) {
				err = fmt.Errorf("stream %d got %q", i, got)
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Refusals carry data too.
	if _, err := c.Dial(ctx, wire.Header{Kind: wire.KindTCP, Target: "refuse:1"}); err == nil {
		t.Error("client dial to refuse:1 succeeded")
	}
	if _, err := h.server.Dial(ctx, "node-a", wire.Header{Kind: wire.KindTCP, Target: "refuse:1"}); err == nil {
		t.Error("server dial to refuse:1 succeeded")
	}
	sess := h.server.Session("node-a")
	// Every data byte handed to the multiplexer was written: were one
	// left counted, the WebSocket would hold messages open for it.
	for side, s := range map[string]*Session{"server": sess, "client": c.Status().Session} {
		waitFor(t, side+"'s send queue to empty", func() bool { return s.queue.waiting.Load() == 0 })
	}
	if got := sess.Stats().StreamsTotal.Load(); got < 42 {
		t.Errorf("server session counted %d streams, want at least 42", got)
	}
	if in := sess.Stats().BytesIn.Load(); in < int64(len(msg)) {
		t.Errorf("server session counted %d bytes in, want at least %d", in, len(msg))
	}
}

func TestRejectCarriesReason(t *testing.T) {
	h := newHarness(t, ServerOptions{})
	c := h.startClient(ClientOptions{Name: "node-a"})
	_, err := c.Dial(context.Background(), wire.Header{Kind: wire.KindTCP, Target: "refuse.me:80"})
	var re *wire.RejectError
	if !errors.As(err, &re) || re.Code != wire.CodeDialFailed || !strings.Contains(re.Reason, "refused refuse.me:80") {
		t.Fatalf("dial error %v, want a reject with the far side's reason", err)
	}
}

func TestNewestSessionWins(t *testing.T) {
	h := newHarness(t, ServerOptions{})
	h.startClient(ClientOptions{Name: "same"})
	waitFor(t, "first session", func() bool { return h.server.Session("same") != nil })
	first := h.server.Session("same")
	h.startClient(ClientOptions{Name: "same", MinBackoff: time.Hour})
	waitFor(t, "second session", func() bool {
		s := h.server.Session("same")
		return s != nil && s != first
	})
	select {
	case <-first.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the replaced session is still open")
	}
}

func TestPeerDown(t *testing.T) {
	h := newHarness(t, ServerOptions{})
	_, err := h.server.Dial(context.Background(), "nobody", wire.Header{Kind: wire.KindTCP, Target: "a:1"})
	if !errors.Is(err, ErrPeerDown) {
		t.Fatalf("dial to an unknown peer: %v, want ErrPeerDown", err)
	}

	// A client whose server is not there answers quickly with the cause.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "ws://" + ln.Addr().String()
	ln.Close()
	c := h.startClient(ClientOptions{URL: dead, Name: "x", MinBackoff: time.Hour})
	start := time.Now()
	_, err = c.Dial(context.Background(), wire.Header{Kind: wire.KindTCP, Target: "a:1"})
	if !errors.Is(err, ErrPeerDown) || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("dial through a dead tunnel: %v, want ErrPeerDown naming the cause", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("ErrPeerDown took %s", d)
	}
}

func TestLazyClientConnectsOnDemand(t *testing.T) {
	h := newHarness(t, ServerOptions{})
	c := h.startClient(ClientOptions{Name: "lazy", Lazy: true})
	time.Sleep(100 * time.Millisecond) // give an eager client time to connect, to show this one does not
	if h.server.Session("lazy") != nil || c.Status().State != StateIdle {
		t.Fatalf("lazy client connected before any request (state %s)", c.Status().State)
	}
	conn, err := c.Dial(context.Background(), wire.Header{Kind: wire.KindTCP, Target: "echo:1"})
	if err != nil {
		t.Fatalf("first dial of a lazy client: %v", err)
	}
	roundTrip(t, conn, []byte("hello"))
}

func TestReconnectAfterServerRestart(t *testing.T) {
	srv := NewServer(ServerOptions{Handler: echoHandler})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	hs := &http.Server{Handler: srv}
	go hs.Serve(ln)

	h := &harness{t: t, url: "ws://" + addr}
	c := h.startClient(ClientOptions{Name: "r", MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	waitFor(t, "first session", func() bool { return srv.Session("r") != nil })

	hs.Close()
	srv.Close()
	waitFor(t, "client notices", func() bool { return c.Status().State != StateUp })

	srv2 := NewServer(ServerOptions{Handler: echoHandler})
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", addr, err)
	}
	hs2 := &http.Server{Handler: srv2}
	go hs2.Serve(ln2)
	t.Cleanup(func() { srv2.Close(); hs2.Close() })
	waitFor(t, "reconnect", func() bool { return srv2.Session("r") != nil })
	// The server registers the session a moment before the client records
	// it; wait for the client's count rather than read it once.
	waitFor(t, "the client to count its second session", func() bool { return c.Status().Connects == 2 })
	if got := c.Status().Connects; got != 2 {
		t.Fatalf("connects = %d, want 2", got)
	}
}

func TestHandshakeRefusals(t *testing.T) {
	h := newHarness(t, ServerOptions{Admit: func(r *http.Request, name string) error {
		if name == "banned" {
			return errors.New("peer banned is not allowed")
		}
		return nil
	}})
	for _, tc := range []struct {
		name   string
		header map[string]string
		status int
		says   string
	}{
		{"plain GET", nil, 400, "not a WebSocket upgrade"},
		{"no origin", map[string]string{"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Protocol": wire.Subprotocol}, 400, "no Origin"},
		{"wrong subprotocol", map[string]string{"Upgrade": "websocket", "Connection": "Upgrade", "Origin": "a", "Sec-WebSocket-Protocol": "west.v9"}, 400, wire.Subprotocol},
		{"long name", map[string]string{"Upgrade": "websocket", "Connection": "Upgrade", "Origin": strings.Repeat("n", wire.MaxNameLen+1), "Sec-WebSocket-Protocol": wire.Subprotocol}, 400, "of 257 bytes; at most 256"},
		{"name not UTF-8", map[string]string{"Upgrade": "websocket", "Connection": "Upgrade", "Origin": "L\xff", "Sec-WebSocket-Protocol": wire.Subprotocol}, 400, "not UTF-8"},
		{"not admitted", map[string]string{"Upgrade": "websocket", "Connection": "Upgrade", "Origin": "banned", "Sec-WebSocket-Protocol": wire.Subprotocol, "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}, 403, "not allowed"},
	} {
		req, _ := http.NewRequest("GET", h.http.URL, nil)
		for k, v := range tc.header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || !strings.Contains(string(body), tc.says) {
			t.Errorf("%s: %d %q, want %d saying %q", tc.name, resp.StatusCode, body, tc.status, tc.says)
		}
	}
	// A refused client reports the server's reason.
	c := h.startClient(ClientOptions{Name: "banned", MinBackoff: time.Hour})
	waitFor(t, "refusal", func() bool { return c.Status().State == StateBackoff })
	if err := c.Status().LastError; err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "not allowed") {
		t.Fatalf("refused client's last error: %v", err)
	}
}

func TestMalformedStreamHeader(t *testing.T) {
	h := newHarness(t, ServerOptions{})
	c := h.startClient(ClientOptions{Name: "n"})
	waitFor(t, "session", func() bool { return c.Status().State == StateUp })
	sess := c.Status().Session
	for name, junk := range map[string][]byte{
		"bad version":  {9, 1, 0, 3, 'a', ':', '1'},
		"lying length": append([]byte{1, 1, 0x01, 0xff}, "a:1"...), // 511 announced, 3 sent, then EOF
		"bad target":   append([]byte{1, 1, 0, 3}, "a:0"...),
	} {
		st, err := sess.OpenRaw()
		if err != nil {
			t.Fatal(err)
		}
		st.Write(junk)
		st.CloseWrite()
		st.SetReadDeadline(time.Now().Add(5 * time.Second))
		err = wire.ReadReply(st)
		st.Close()
		var re *wire.RejectError
		if name == "lying length" {
			// The far side sees end-of-stream mid-header and just closes.
			if err == nil {
				t.Errorf("%s: stream accepted", name)
			}
			continue
		}
		if !errors.As(err, &re) || re.Code != wire.CodeBadHeader {
			t.Errorf("%s: reply %v, want bad header", name, err)
		}
	}
	// The session still serves good streams.
	conn, err := c.Dial(context.Background(), wire.Header{Kind: wire.KindTCP, Target: "echo:1"})
	if err != nil {
		t.Fatalf("dial after junk: %v", err)
	}
	roundTrip(t, conn, []byte("still here"))
}

// rawTunnel completes a valid handshake by hand and returns the WebSocket,
// so a test can send what no west would.
func rawTunnel(t *testing.T, h *harness, name string) *websocket.Conn {
	t.Helper()
	return rawTunnelAs(t, h, name, "")
}

func TestGarbageAfterUpgrade(t *testing.T) {
	// A short keepalive ends sessions that stall mid-frame quickly.
	mo := MuxOptions{KeepAliveInterval: 200 * time.Millisecond, KeepAliveTimeout: time.Second}
	h := newHarness(t, ServerOptions{Mux: mo})
	good := h.startClient(ClientOptions{Name: "good", Mux: mo})
	waitFor(t, "good session", func() bool { return good.Status().State == StateUp })

	for name, send := range map[string]func(*websocket.Conn) error{
		"garbage frame": func(ws *websocket.Conn) error {
			return ws.WriteMessage(websocket.BinaryMessage, []byte("GET / HTTP/1.1\r\n\r\n not yamux at all"))
		},
		"text message": func(ws *websocket.Conn) error {
			return ws.WriteMessage(websocket.TextMessage, []byte("hello"))
		},
		"oversized message": func(ws *websocket.Conn) error {
			return ws.WriteMessage(websocket.BinaryMessage, make([]byte, 4<<20))
		},
		"replayed syn": func(ws *websocket.Conn) error {
			// A yamux SYN (a window update) for stream 3, twice.
			syn := []byte{0, 1, 0, 1, 0, 0, 0, 3, 0, 0, 0, 0}
			if err := ws.WriteMessage(websocket.BinaryMessage, syn); err != nil {
				return err
			}
			return ws.WriteMessage(websocket.BinaryMessage, syn)
		},
		"stalled frame": func(ws *websocket.Conn) error {
			// A yamux SYN for stream 3, then a data frame claiming 60000
			// bytes with none behind it.
			syn := []byte{0, 1, 0, 1, 0, 0, 0, 3, 0, 0, 0, 0}
			if err := ws.WriteMessage(websocket.BinaryMessage, syn); err != nil {
				return err
			}
			return ws.WriteMessage(websocket.BinaryMessage, []byte{0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0xea, 0x60})
		},
	} {
		peer := "attacker-" + strings.ReplaceAll(name, " ", "-")
		ws := rawTunnel(t, h, peer)
		waitFor(t, peer+" registered", func() bool { return h.server.Session(peer) != nil })
		// The server may cut an attack off half-sent (the oversized
		// message), so a send error is no failure; a session left up is.
		send(ws)
		// Keep reading so that close handshakes complete.
		go func() {
			for {
				if _, _, err := ws.ReadMessage(); err != nil {
					return
				}
			}
		}()
		deadline := time.Now().Add(10 * time.Second)
		for h.server.Session(peer) != nil {
			if time.Now().After(deadline) {
				t.Fatalf("%s: session still up after 10s", name)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// The legitimate peer was never disturbed.
	conn, err := h.server.Dial(context.Background(), "good", wire.Header{Kind: wire.KindTCP, Target: "echo:1"})
	if err != nil {
		t.Fatalf("dial good peer after attacks: %v", err)
	}
	roundTrip(t, conn, []byte("undisturbed"))
}

// holdUntil accepts every stream and holds it open until release closes.
func holdUntil(release <-chan struct{}) StreamHandlerFunc {
	return func(ctx context.Context, req *Request) {
		c, err := req.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		select {
		case <-release:
		case <-ctx.Done():
		}
	}
}

func TestMaxStreams(t *testing.T) {
	release := make(chan struct{})
	h := newHarness(t, ServerOptions{Handler: holdUntil(release), Mux: MuxOptions{MaxStreams: 2}})
	c := h.startClient(ClientOptions{Name: "n"})
	waitFor(t, "session", func() bool { return c.Status().State == StateUp })
	ctx := context.Background()
	var held []net.Conn
	for range 2 {
		conn, err := c.Dial(ctx, wire.Header{Kind: wire.KindTCP, Target: "x:1"})
		if err != nil {
			t.Fatalf("stream within the limit: %v", err)
		}
		held = append(held, conn)
	}
	_, err := c.Dial(ctx, wire.Header{Kind: wire.KindTCP, Target: "x:1"})
	var re *wire.RejectError
	if !errors.As(err, &re) || re.Code != wire.CodeOverloaded {
		t.Fatalf("third stream: %v, want overloaded", err)
	}
	close(release)
	for _, conn := range held {
		conn.Close()
	}
	// Once the held streams end, new ones are served again.
	waitFor(t, "a free stream slot", func() bool {
		conn, err := c.Dial(ctx, wire.Header{Kind: wire.KindTCP, Target: "x:1"})
		if err != nil {
			return false
		}
		conn.Close()
		return true
	})
}

// FuzzHandshake throws arbitrary handshake headers at the server: it must
// never panic, and must admit only a proper upgrade naming a peer and
// offering west's subprotocol.
func FuzzHandshake(f *testing.F) {
	f.Add("websocket", "peer", wire.Subprotocol, "")
	f.Add("WebSocket", "ws://case1.L.fiap.org", "x, "+wire.Subprotocol, NewID()+"/"+NewID())
	f.Add("", "", "", "")
	f.Add("websocket", "p", "west.v1", "") // the smux version, before yamux
	f.Add("websocket", "\xa2", wire.Subprotocol, "")
	f.Add("websocket", strings.Repeat("n", wire.MaxNameLen+1), wire.Subprotocol, "")
	f.Add("websocket", "p", wire.Subprotocol, "a/b/c")
	f.Add("websocket", "p", wire.Subprotocol, "/b")
	f.Add("websocket", "p", wire.Subprotocol, "a/"+strings.Repeat("b", 65))
	s := NewServer(ServerOptions{Handler: echoHandler})
	idOK := regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}/[A-Za-z0-9_-]{1,64}$`)
	f.Fuzz(func(t *testing.T, upgrade, origin, protocols, inst string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header["Upgrade"] = []string{upgrade}
		r.Header["Sec-Websocket-Protocol"] = []string{protocols}
		r.Header[InstanceHeader] = []string{inst}
		_, err := s.checkHandshake(r, origin)
		valid := strings.EqualFold(upgrade, "websocket") && origin != "" &&
			len(origin) <= wire.MaxNameLen && utf8.ValidString(origin) &&
			(inst == "" || idOK.MatchString(inst))
		if valid {
			offered := false
			for p := range strings.SplitSeq(protocols, ",") {
				offered = offered || strings.TrimSpace(p) == wire.Subprotocol
			}
			valid = offered
		}
		if (err == nil) != valid {
			t.Fatalf("upgrade %q origin %q protocols %q: err %v, valid %v", upgrade, origin, protocols, err, valid)
		}
		// A full request through ServeHTTP must not panic either; an
		// invalid one gets 400 without reaching the upgrade.
		w := httptest.NewRecorder()
		r.Header.Set("Origin", origin)
		if !valid {
			s.ServeHTTP(w, r)
			if w.Code != http.StatusBadRequest {
				t.Fatalf("invalid handshake answered %d", w.Code)
			}
		}
	})
}
