package tunnel

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/west-tunnel/west/internal/monotime"
	"github.com/west-tunnel/west/internal/testutil"
	"github.com/west-tunnel/west/internal/wire"
)

// stallRelay forwards TCP between tunnel clients and their server until
// stall, which makes it stop reading the connections it has, one way or
// both, while it goes on forwarding new ones; it closes nothing: a
// middlebox gone wrong, or a path that went dark.
type stallRelay struct {
	ln   net.Listener
	stop chan struct{}

	mu    sync.Mutex
	conns []net.Conn
	pairs []*relayPair
}

type relayPair struct {
	stalled  chan struct{} // closed by stall
	bothWays bool          // set before stalled is closed
}

func newStallRelay(t *testing.T, target string) *stallRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &stallRelay{ln: ln, stop: make(chan struct{})}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		close(r.stop)
		ln.Close()
		r.mu.Lock()
		for _, c := range r.conns {
			c.Close()
		}
		r.mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p := &relayPair{stalled: make(chan struct{})}
			r.mu.Lock()
			r.conns = append(r.conns, c, s)
			r.pairs = append(r.pairs, p)
			r.mu.Unlock()
			wg.Go(func() { r.pipe(p, s, c, true) })
			wg.Go(func() { r.pipe(p, c, s, false) })
		}
	})
	return r
}

// pipe copies src to dst until its pair stalls this way; what it has
// read by then it keeps. It closes nothing when its source ends.
func (r *stallRelay) pipe(p *relayPair, dst, src net.Conn, fromClient bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-p.stalled:
			if fromClient || p.bothWays {
				<-r.stop
				return
			}
		default:
		}
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// stall stops the connections relayed so far from client to server, and
// from server to client too if bothWays.
func (r *stallRelay) stall(bothWays bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.pairs {
		select {
		case <-p.stalled:
		default:
			p.bothWays = bothWays
			close(p.stalled)
		}
	}
}

// A peer that stops reading while it still sends (here a relay that
// stops forwarding one way and closes nothing) does not hang the tunnel:
// the side that hears nothing closes it as dead, its peer then hears
// nothing either, and a stream whose writes block on the stalled
// direction gets an error within a couple of dead_afters.
func TestHalfStalledPathEnds(t *testing.T) {
	mo := MuxOptions{KeepAliveInterval: 100 * time.Millisecond, KeepAliveTimeout: 500 * time.Millisecond, StreamWindow: minStreamWindow}
	h := newHarness(t, ServerOptions{Mux: mo})
	relay := newStallRelay(t, h.http.Listener.Addr().String())
	c := h.startClient(ClientOptions{URL: "ws://" + relay.ln.Addr().String(), Name: "half", Mux: mo, MinBackoff: time.Hour})
	waitFor(t, "session", func() bool { return c.Status().State == StateUp && h.server.Session("half") != nil })
	sess, srv := c.Status().Session, h.server.Session("half")

	conn, err := c.Dial(context.Background(), wire.Header{Kind: wire.KindTCP, Target: "x:1"})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	go io.Copy(io.Discard, conn)
	wrote := make(chan error, 1)
	go func() {
		buf := make([]byte, 64<<10)
		for {
			if _, err := conn.Write(buf); err != nil {
				wrote <- err
				return
			}
		}
	}()
	roundTrip(t, mustDial(t, c), []byte("through the relay"))

	relay.stall(false)
	start := time.Now()
	limit := 3*mo.KeepAliveTimeout + time.Second
	for _, s := range []struct {
		side string
		done <-chan struct{}
	}{{"server", srv.Done()}, {"client", sess.Done()}} {
		select {
		case <-s.done:
			t.Logf("%s session ended %s after the stall", s.side, time.Since(start).Round(time.Millisecond))
		case <-time.After(limit - time.Since(start)):
			t.Fatalf("%s session still up %s after the relay stalled one way (dead_after %s)", s.side, limit, mo.KeepAliveTimeout)
		}
	}
	select {
	case err := <-wrote:
		t.Logf("stream write ended: %v", err)
	case <-time.After(time.Second):
		t.Fatal("a stream write still blocks after its session ended")
	}
}

// deafTunnel is a raw tunnel whose socket has a small receive buffer, for
// a peer that stops reading: the server's writes to it soon wait.
func deafTunnel(t *testing.T, h *harness, name string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{wire.Subprotocol}, HandshakeTimeout: 5 * time.Second,
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				c.(*net.TCPConn).SetReadBuffer(4 << 10)
			}
			return c, err
		}}
	ws, _, err := d.Dial(h.url, http.Header{"Origin": {name}})
	if err != nil {
		t.Fatalf("raw handshake: %v", err)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

// TestPeerThatTakesNoDataIsClosed: a peer that stops reading, but goes on
// sending (pings, here), holds the server's send loop in a write, and
// with it every frame behind that write. Once the write has waited for
// dead_after, and the peer's TCP has acknowledged nothing more for
// dead_after, the session is closed as dead; what the peer sent kept it
// up for as long as the peer liked.
func TestPeerThatTakesNoDataIsClosed(t *testing.T) {
	const deadAfter = time.Second
	h := newHarness(t, ServerOptions{Mux: MuxOptions{KeepAliveInterval: deadAfter / 4, KeepAliveTimeout: deadAfter}})
	ws := deafTunnel(t, h, "deaf")
	waitFor(t, "the session", func() bool { return h.server.Session("deaf") != nil })
	q := h.server.Session("deaf").queue

	// A stream to the echo handler, its window wide open, and data for it
	// to echo: the echo stops only because the peer does not read.
	hdr, _ := wire.Header{Kind: wire.KindTCP, Target: "echo:1"}.AppendBinary(nil, wire.Version)
	open := slices.Concat(yamuxFrame(frameWindowUpdate, flagSYN, 1, 64<<20, nil), yamuxFrame(frameData, 0, 1, uint32(len(hdr)), hdr))
	if err := ws.WriteMessage(websocket.BinaryMessage, open); err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for range 3 { // within the stream's first window
		if err := ws.WriteMessage(websocket.BinaryMessage, muxFrame(frameData, 1, chunk)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the server's send loop to wait in a write", func() bool {
		return q.writing.Load() > 0 && time.Duration(monotime.Now()-q.lastWrite.Load()) > 100*time.Millisecond
	})

	start := time.Now()
	for h.server.Session("deaf") != nil {
		if time.Since(start) > 4*deadAfter {
			t.Fatalf("the session of a peer that takes no data is up %s after its send loop stalled (dead_after %s)",
				time.Since(start).Round(time.Millisecond), deadAfter)
		}
		ws.WriteMessage(websocket.BinaryMessage, yamuxFrame(framePing, flagSYN, 0, 7, nil))
		time.Sleep(deadAfter / 8)
	}
	t.Logf("closed %s after the send loop stalled", time.Since(start).Round(time.Millisecond))
}

// TestPingFloodLogsLittle: a peer that sends pings faster than it takes
// their answers makes the multiplexer drop answers, and warn of each; a
// line a second reaches the log, with a count, not a line a ping.
func TestPingFloodLogsLittle(t *testing.T) {
	var log testutil.Buffer
	h := newHarness(t, ServerOptions{Logger: slog.New(slog.NewTextHandler(&log, nil))})
	ws := deafTunnel(t, h, "pinger")
	waitFor(t, "the session", func() bool { return h.server.Session("pinger") != nil })
	const pings = 5000
	for i := range pings {
		if err := ws.WriteMessage(websocket.BinaryMessage, yamuxFrame(framePing, flagSYN, 0, uint32(i), nil)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond) // for the last to be read
	if n := strings.Count(log.String(), "dropped ping reply"); n == 0 || n > 5 {
		t.Errorf("%d pings gave %d log lines of dropped answers; want one a second", pings, n)
	}
}

// TestBadHeaderFloodLogsLittle: a peer that opens stream after stream
// with a malformed header gets each refused, and a log line a second for
// them, with a count, not a line a stream.
func TestBadHeaderFloodLogsLittle(t *testing.T) {
	var log testutil.Buffer
	h := newHarness(t, ServerOptions{Logger: slog.New(slog.NewTextHandler(&log, nil))})
	ws := rawTunnel(t, h, "garbler")
	const streams = 500
	bad := []byte{99, 0, 0, 0} // an unknown header version
	for i := range streams {
		id := uint32(2*i + 1)
		msg := slices.Concat(yamuxFrame(frameWindowUpdate, flagSYN, id, 0, nil), muxFrame(frameData, id, bad))
		if err := ws.WriteMessage(websocket.BinaryMessage, msg); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond) // for the last to be read
	waitFor(t, "the streams to be refused", func() bool {
		s := h.server.Session("garbler")
		return s != nil && s.Streams() == 0
	})
	if n := strings.Count(log.String(), "bad stream header"); n > 3 {
		t.Errorf("%d streams with a bad header gave %d log lines; want one a second", streams, n)
	}
}

// TestRefusedHandshakeFloodLogsLittle: anyone who reaches the server can
// send refused handshakes as fast as it likes, on one kept-alive
// connection; they reach the log once a second, with a count.
func TestRefusedHandshakeFloodLogsLittle(t *testing.T) {
	var log testutil.Buffer
	h := newHarness(t, ServerOptions{Logger: slog.New(slog.NewTextHandler(&log, nil))})
	url := "http" + strings.TrimPrefix(h.url, "ws")
	const tries = 300
	for range tries {
		resp, err := http.Get(url) // no upgrade
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("a GET without an upgrade: %s", resp.Status)
		}
	}
	if n := strings.Count(log.String(), `msg="tunnel handshake refused"`); n == 0 || n > 3 {
		t.Errorf("%d refused handshakes gave %d log lines; want one a second", tries, n)
	}
}

// TestDeadTunnelSaysWhy: a tunnel the keepalive closes as dead says so
// in the client's last error, which /api/state and /healthz show, rather
// than only that it closed.
func TestDeadTunnelSaysWhy(t *testing.T) {
	// A server that takes the upgrade and then never answers, as one whose
	// machine vanished, or whose path drops every packet, does.
	gone := make(chan struct{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		<-gone
	})}
	go hs.Serve(ln)
	t.Cleanup(func() { close(gone); hs.Close() })

	c, _ := runClient(t, ClientOptions{URL: "ws://" + ln.Addr().String(), Name: "d", Handler: echoHandler, MinBackoff: time.Minute,
		Mux: MuxOptions{KeepAliveInterval: 100 * time.Millisecond, KeepAliveTimeout: 300 * time.Millisecond}})
	waitFor(t, "the tunnel", func() bool { return c.Status().State == StateUp })
	waitFor(t, "the keepalive to end it", func() bool { return c.Status().State == StateBackoff })
	err = c.Status().LastError
	t.Logf("last error: %v", err)
	if err == nil || !strings.Contains(err.Error(), "silent") {
		t.Errorf("last error %q does not say that the server went silent", err)
	}
}
