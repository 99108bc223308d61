package node

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/tunnel"
)

// TestReloadForgetsRemovedClientsSeries: once a tunnel client a reload
// removed (here one an "ea" implied) has closed its tunnel, its tunnel
// series (role="client", its server's URL) leave /metrics: they stayed,
// west_tunnels_up at 0, until 256 other peers had gone down after it, so
// that an alert on a tunnel down fired for one removed on purpose. A
// client the reload replaced (same server, other options) keeps its
// series, and so does the tunnel server's side of the removed tunnel
// (role="server", kept for the 256 peers seen last).
func TestReloadForgetsRemovedClientsSeries(t *testing.T) {
	g1 := startNode(t, `{"west": {"nm": "G1", "cp": "127.0.0.1:0"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	g2 := startNode(t, `{"west": {"nm": "G2"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	removed, replaced := "ws://"+g1.Addrs().Tunnel, "ws://"+g2.Addrs().Tunnel
	conf := func(replacedOpts, proxies string) string {
		return fmt.Sprintf(`{"west": {"nm": "L", "cp": "127.0.0.1:0"}, "wstc": {%q: {%s}}, "proxy": {%s}}`,
			replaced, replacedOpts, proxies)
	}
	l, _ := runNode(t, conf("", fmt.Sprintf(`"udp://%s": {"ea": %q, "ou": "udp://%s"}`, freeUDPAddr(t), removed, udpEcho(t))),
		Options{})
	waitClient(t, l, removed, tunnel.StateUp)
	old := l.Client(replaced)
	waitClient(t, l, replaced, tunnel.StateUp)

	client := &http.Client{Timeout: 5 * time.Second}
	series := func(n *Node, labels ...string) (float64, int) {
		_, body := fetch(t, client, "http://"+n.Addrs().Control+"/metrics")
		return metric(body, "west_tunnels_up", labels...)
	}
	for _, url := range []string{removed, replaced} {
		if up, _ := series(l, `role="client"`, `peer="`+url+`"`); up != 1 {
			t.Fatalf(`west_tunnels_up{role="client",peer=%q} = %v before the reload, want 1`, url, up)
		}
	}

	// The replaced client is lazy now: its new self stays idle, and its
	// old self stops.
	if err := l.Reload(mustParse(t, conf(`"ee": "no"`, ""))); err != nil {
		t.Fatalf("reload removing the listener and its implied client: %v", err)
	}
	waitFor(t, "the removed client's series to go", func() bool {
		_, body := fetch(t, client, "http://"+l.Addrs().Control+"/metrics")
		for _, name := range []string{"west_tunnels_up", "west_tunnel_connects_total", "west_tunnel_disconnects_total",
			"west_streams_open", "west_tunnel_bytes_total"} {
			if _, n := metric(body, name, `peer="`+removed+`"`); n > 0 {
				return false
			}
		}
		return true
	})
	waitFor(t, "the replaced client's old self to stop", func() bool { return old.Status().State == tunnel.StateStopped })
	if up, n := series(l, `role="client"`, `peer="`+replaced+`"`); n != 1 || up != 0 {
		t.Errorf(`west_tunnels_up{role="client",peer=%q}: %d series, %v; want it kept at 0 for a client the reload replaced`,
			replaced, n, up)
	}
	waitFor(t, "G1 to see the removed tunnel end", func() bool {
		up, n := series(g1, `role="server"`, `peer="L"`)
		return n == 1 && up == 0
	})
}
