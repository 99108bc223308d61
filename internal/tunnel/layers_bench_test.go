package tunnel

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
	"github.com/libp2p/go-yamux/v5"
)

// BenchmarkLayers moves bytes one way through each layer a tunnel stacks,
// alone and combined, to show where bulk throughput goes: loopback TCP,
// the tunnel's WebSocket (wsConn over gorilla/websocket with one-frame
// buffers) written by its client (masked frames) or its server, yamux over
// TCP, and yamux over the WebSocket in each direction, as a tunnel uses it.
func BenchmarkLayers(b *testing.B) {
	for _, l := range []struct {
		name  string
		setup func(b *testing.B) (io.WriteCloser, io.Reader)
	}{
		{"tcp", func(b *testing.B) (io.WriteCloser, io.Reader) { return loopbackPair(b) }},
		{"ws/client-writes", func(b *testing.B) (io.WriteCloser, io.Reader) { c, s := wsPair(b); return c, s }},
		{"ws/server-writes", func(b *testing.B) (io.WriteCloser, io.Reader) { c, s := wsPair(b); return s, c }},
		{"yamux-tcp", func(b *testing.B) (io.WriteCloser, io.Reader) {
			c, s := loopbackPair(b)
			return yamuxStreams(b, c, s)
		}},
		{"yamux-ws/client-writes", func(b *testing.B) (io.WriteCloser, io.Reader) {
			c, s := wsPair(b)
			return yamuxStreams(b, c, s)
		}},
		{"yamux-ws/server-writes", func(b *testing.B) (io.WriteCloser, io.Reader) {
			c, s := wsPair(b)
			cs, ss := yamuxStreams(b, c, s)
			return ss.(io.WriteCloser), cs.(io.Reader)
		}},
	} {
		b.Run(l.name, func(b *testing.B) {
			w, r := l.setup(b)
			read := make(chan int64, 1)
			go func() {
				n, _ := io.CopyBuffer(io.Discard, onlyReader{r}, make([]byte, 64<<10))
				read <- n
			}()
			benchBulk(b, w, func() int64 { w.Close(); return <-read })
		})
	}
}

func loopbackPair(b *testing.B) (net.Conn, net.Conn) {
	accepted := make(chan net.Conn, 1)
	addr := benchListener(b, func(c net.Conn) { accepted <- c })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	s := <-accepted
	b.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

// wsPair returns both ends of a loopback WebSocket as net.Conns, set up
// as the tunnel sets up its own (upgrader and buffers as in server.go and
// client.go).
func wsPair(b testing.TB) (client, server net.Conn) {
	accepted := make(chan net.Conn, 1)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		c.SetReadLimit(1 << 20)
		accepted <- &wsConn{ws: c}
	}))
	d := websocket.Dialer{Subprotocols: upgrader.Subprotocols, ReadBufferSize: wsReadBufferSize, WriteBufferSize: wsWriteBufferSize}
	c, _, err := d.Dial("ws"+strings.TrimPrefix(hs.URL, "http"), nil)
	if err != nil {
		b.Fatal(err)
	}
	c.SetReadLimit(1 << 20)
	client, server = &wsConn{ws: c}, <-accepted
	b.Cleanup(func() {
		client.Close()
		server.Close()
		hs.Close()
	})
	return client, server
}

// yamuxStreams runs yamux, configured as the tunnel configures it, over c
// (client) and s (server) and returns a stream's two ends.
func yamuxStreams(b *testing.B, c, s net.Conn) (io.WriteCloser, io.Reader) {
	mo := MuxOptions{}
	cfg := mo.yamuxConfig(slog.New(slog.DiscardHandler))
	cs, err := yamux.Client(c, cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	ss, err := yamux.Server(s, cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cs.Close(); ss.Close() })
	// yamux announces a stream as it opens it.
	out, err := cs.OpenStream(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	in, err := ss.AcceptStream()
	if err != nil {
		b.Fatal(err)
	}
	return out, in
}
