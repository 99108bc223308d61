package node

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
)

// TestMetricsCountStreamsRefusedByMaxStreams: a stream a tunnel client
// opens beyond wsts.max_streams is refused as overloaded (README), one this
// west could not connect: west_dial_failures_total counts it, as it counts
// the overloaded refusals of a stopping west.
func TestMetricsCountStreamsRefusedByMaxStreams(t *testing.T) {
	echo := testutil.EchoServer(t)
	g := startNode(t, `{"west": {"nm": "G", "cp": "127.0.0.1:0"}, "wsts": {"sp": "ws://127.0.0.1:0", "max_streams": 1}}`, Options{})
	l := startNode(t, fmt.Sprintf(`{"west": {"nm": "L"}, "proxy": {"tcp://127.0.0.1:0": {"ea": "ws://%s", "ou": "tcp://%s"}}}`,
		g.Addrs().Tunnel, echo), Options{})
	entry := ""
	for _, a := range l.Addrs().Proxies {
		entry = a
	}
	waitUp(t, g, "L")
	// One connection holds the tunnel's only stream.
	held, err := net.Dial("tcp", entry)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	held.Write([]byte("hi"))
	if _, err := io.ReadFull(held, make([]byte, 2)); err != nil {
		t.Fatalf("the first connection: %v", err)
	}
	// The next is refused: its stream is over the limit. L resets it,
	// on loopback at times before Dial returns.
	if c, err := net.Dial("tcp", entry); err == nil {
		c.Write([]byte("hi"))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := io.ReadFull(c, make([]byte, 2)); err == nil {
			t.Fatalf("a connection beyond max_streams got %d bytes back", n)
		}
		c.Close()
	}
	var got float64
	var body string
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		_, body = fetch(t, http.DefaultClient, "http://"+g.Addrs().Control+"/metrics")
		if got, _ = metric(body, "west_dial_failures_total", `reason="overloaded"`); got >= 1 {
			break
		}
	}
	if got != 1 {
		all, _ := metric(body, "west_dial_failures_total")
		t.Errorf(`G west_dial_failures_total{reason="overloaded"} = %v after a stream refused by max_streams, want 1 (all reasons: %v)`, got, all)
	}
}
