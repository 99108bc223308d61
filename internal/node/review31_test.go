package node

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/tunnel"
)

// runTunnelClient runs a bare tunnel client named name against a node's
// tunnel server until the test ends, and waits until the server has it.
func runTunnelClient(t *testing.T, g *Node, name string) {
	t.Helper()
	c := tunnel.NewClient(tunnel.ClientOptions{URL: "ws://" + g.Addrs().Tunnel + "/", Name: name})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(10 * time.Second)
	for g.Server().Session(name) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("tunnel client %q never connected", name)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A tunnel client's name is its Origin header, which may hold any byte
// above 0x7f. A name that is not UTF-8 must not make a scrape of /metrics
// panic (which, in the registry's collecting goroutine, ends the process).
func TestMetricsPeerNameNotUTF8(t *testing.T) {
	g, _ := runNode(t, `{"west": {"nm": "G", "cp": "127.0.0.1:0"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	runTunnelClient(t, g, "L\xff")
	code, body := fetch(t, http.DefaultClient, "http://"+g.Addrs().Control+"/metrics")
	if code != 200 {
		t.Fatalf("GET /metrics: %d %.200s", code, body)
	}
	if up, n := metric(body, "west_tunnels_up", `role="server"`); up != 1 || n != 1 {
		t.Errorf("west_tunnels_up{role=server} = %v in %d series, want 1 in 1", up, n)
	}
	if !strings.Contains(body, "peer=\"L\ufffd\"") {
		t.Errorf("no series names the peer as L\ufffd")
	}
}
