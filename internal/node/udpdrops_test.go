package node

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
)

// TestUDPDroppedDatagramsCounted: datagrams a udp:// listener drops are
// counted in west_udp_datagrams_dropped_total by listener and reason
// (here those of a route whose target the far west's dial_allow refuses:
// the first flow's, then new ones' while the route is held), as are, with
// listener "", those the far west could not get to their target (nothing
// listens on its port); a listener's series leave once a reload has
// removed it. Such drops showed only in debug or rate-limited logs.
func TestUDPDroppedDatagramsCounted(t *testing.T) {
	silent := freeUDPAddr(t) // dial_allow admits it; nothing listens there
	refused := udpEcho(t)    // dial_allow does not admit it
	g, _ := runNode(t, fmt.Sprintf(`{"west": {"nm": "G", "cp": "127.0.0.1:0", "dial_allow": [%q]},
		"wsts": {"sp": "ws://127.0.0.1:0"}}`, silent), Options{})
	var pre prebound
	cp := pre.addr(t)
	heldAddr, silentAddr := freeUDPAddr(t), freeUDPAddr(t)
	held, kept := "udp://"+heldAddr, "udp://"+silentAddr
	conf := func(withHeld bool) string {
		proxies := fmt.Sprintf(`%q: {"ea": "ws://%s", "ou": "udp://%s"}`, kept, g.Addrs().Tunnel, silent)
		if withHeld {
			proxies += fmt.Sprintf(`, %q: {"ea": "ws://%s", "ou": "udp://%s"}`, held, g.Addrs().Tunnel, refused)
		}
		return fmt.Sprintf(`{"west": {"nm": "L", "cp": %q}, "proxy": {%s}}`, cp, proxies)
	}
	l, _ := runNode(t, conf(true), Options{Listen: pre.listen})
	waitUp(t, g, "L")

	client := &http.Client{Timeout: 5 * time.Second}
	dropped := func(n *Node, labels ...string) float64 {
		_, body := fetch(t, client, "http://"+n.Addrs().Control+"/metrics")
		v, _ := metric(body, "west_udp_datagrams_dropped_total", labels...)
		return v
	}
	// sendUntil sends a datagram to addr until the count of labels on n
	// reaches want.
	sendUntil := func(addr string, n *Node, want float64, labels ...string) {
		t.Helper()
		c, err := net.Dial("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		deadline := time.Now().Add(10 * time.Second)
		for dropped(n, labels...) < want {
			if time.Now().After(deadline) {
				t.Fatalf("west_udp_datagrams_dropped_total{%v} = %v, want at least %v", labels, dropped(n, labels...), want)
			}
			c.Write([]byte("hi"))
			time.Sleep(50 * time.Millisecond)
		}
	}
	// The flow refused by the far side, then at least one datagram
	// dropped while the route is held.
	sendUntil(heldAddr, l, 2, `listener="`+held+`"`, `reason="target_forbidden"`)
	sendUntil(silentAddr, g, 1, `listener=""`, `reason="target_unreachable"`)
	if v := dropped(l, `listener="`+kept+`"`); v != 0 {
		t.Errorf("L counts %v datagrams dropped by %s, whose datagrams all reached the far west; want 0", v, kept)
	}

	if err := l.Reload(mustParse(t, conf(false))); err != nil {
		t.Fatalf("reload removing %s: %v", held, err)
	}
	waitFor(t, "the removed listener's series to go", func() bool {
		_, body := fetch(t, client, "http://"+cp+"/metrics")
		_, n := metric(body, "west_udp_datagrams_dropped_total", `listener="`+held+`"`)
		return n == 0
	})
}

// TestUDPFlowEndLogged: with -d, a udp:// flow's end is logged as its
// start is (README, the -v flag), also when it ends from outside: here a
// reload that changes the listener's target, and west stopping.
func TestUDPFlowEndLogged(t *testing.T) {
	g := startNode(t, `{"west": {"nm": "ue.G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	var log testutil.Buffer
	listen := freeUDPAddr(t)
	conf := func(target string) string {
		return fmt.Sprintf(`{"west": {"nm": "ue.L"}, "proxy": {"udp://%s": {"ea": "ws://%s", "ou": "udp://%s"}}}`,
			listen, g.Addrs().Tunnel, target)
	}
	l, stop := runNode(t, conf(udpEcho(t)), Options{Logger: slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	c, err := net.Dial("udp", listen)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	exchange := func() {
		t.Helper()
		buf := make([]byte, 100)
		for deadline := time.Now().Add(10 * time.Second); ; {
			c.Write([]byte("ping"))
			c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if _, err := c.Read(buf); err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("no reply through the udp:// listener")
			}
		}
	}
	ended := func() int { return strings.Count(log.String(), `msg="udp flow ended"`) }

	exchange()
	if err := l.Reload(mustParse(t, conf(udpEcho(t)))); err != nil {
		t.Fatalf("reload: %v", err)
	}
	exchange() // a flow of its own, to the new target
	if n := ended(); n != 1 {
		t.Errorf("after a reload that changed the target: %d lines saying the flow ended, want 1:\n%s", n, log.String())
	}
	stop()
	if n := ended(); n != 2 {
		t.Errorf("after west stopped: %d lines saying a flow ended, want 2:\n%s", n, log.String())
	}
}
