package node

import (
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
)

// tcpPath is one way for a tcp:// listener's connections to reach ou.
type tcpPath struct {
	entry   string
	streams func() int // tunnel streams open along the path
}

// tcpPaths builds, for target, a tcp:// listener sending up ("ea", one
// tunnel), one sending down ("en", one tunnel), and a chain of two (ea,
// then en from the middle west), and runs f on each.
func tcpPaths(t *testing.T, target string, f func(t *testing.T, p tcpPath)) {
	w := func(name string) string { return fmt.Sprintf(`"west": {"nm": %q}`, name) }
	t.Run("ea", func(t *testing.T) {
		g := startNode(t, `{`+w("G")+`, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
		l := startNode(t, fmt.Sprintf(`{%s, "proxy": {"tcp://127.0.0.1:0": {"ea": "ws://%s", "ou": "tcp://%s"}}}`,
			w("L"), g.Addrs().Tunnel, target), Options{})
		waitUp(t, g, "L")
		f(t, tcpPath{entry: onlyProxy(t, l), streams: func() int { return g.Server().Session("L").Streams() }})
	})
	t.Run("en", func(t *testing.T) {
		g := startNode(t, fmt.Sprintf(`{%s, "wsts": {"sp": "ws://127.0.0.1:0"},
			"proxy": {"tcp://127.0.0.1:0": {"en": "L2", "ou": "tcp://%s"}}}`, w("G"), target), Options{})
		startNode(t, fmt.Sprintf(`{%s, "wstc": {"ws://%s": {}}}`, w("L2"), g.Addrs().Tunnel), Options{})
		waitUp(t, g, "L2")
		f(t, tcpPath{entry: onlyProxy(t, g), streams: func() int { return g.Server().Session("L2").Streams() }})
	})
	t.Run("chain", func(t *testing.T) {
		var pre prebound
		mid := pre.addr(t)
		g := startNode(t, fmt.Sprintf(`{%s, "wsts": {"sp": "ws://127.0.0.1:0"},
			"proxy": {"tcp://%s": {"en": "L2", "ou": "tcp://%s"}}}`, w("G"), mid, target), Options{Listen: pre.listen})
		startNode(t, fmt.Sprintf(`{%s, "wstc": {"ws://%s": {}}}`, w("L2"), g.Addrs().Tunnel), Options{})
		waitUp(t, g, "L2")
		l := startNode(t, fmt.Sprintf(`{%s, "proxy": {"tcp://127.0.0.1:0": {"ea": "ws://%s", "ou": "tcp://%s"}}}`,
			w("L"), g.Addrs().Tunnel, mid), Options{})
		waitUp(t, g, "L")
		f(t, tcpPath{entry: onlyProxy(t, l), streams: func() int {
			return g.Server().Session("L").Streams() + g.Server().Session("L2").Streams()
		}})
	})
}

func onlyProxy(t *testing.T, n *Node) string {
	t.Helper()
	for _, a := range n.Addrs().Proxies {
		return a
	}
	t.Fatal("no listener")
	return ""
}

// connTarget serves each connection with serve, handing it the raw
// *net.TCPConn, and returns its address.
func connTarget(t *testing.T, serve func(c *net.TCPConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(c.(*net.TCPConn))
			}()
		}
	}()
	return ln.Addr().String()
}

func dialEntry(t *testing.T, entry string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", entry)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return c.(*net.TCPConn)
}

// waitStreams waits until no stream is open along p.
func waitStreams(t *testing.T, p tcpPath) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for p.streams() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d streams still open after both ends closed", p.streams())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTCPClientResetMidUploadResetsTarget: a client that resets its
// connection in the middle of an upload resets the target's connection,
// as it would have without the tunnel, through a chain too: a clean end
// would make the target take the cut upload for a complete one.
func TestTCPClientResetMidUploadResetsTarget(t *testing.T) {
	got := make(chan int64, 1)
	ended := make(chan error, 1)
	target := connTarget(t, func(c *net.TCPConn) {
		c.SetDeadline(time.Now().Add(30 * time.Second))
		n, err := io.Copy(io.Discard, c)
		got <- n
		ended <- err
	})
	tcpPaths(t, target, func(t *testing.T, p tcpPath) {
		c := dialEntry(t, p.entry)
		if _, err := io.CopyN(c, &testutil.Pattern{}, 4<<20); err != nil {
			t.Fatal(err)
		}
		c.SetLinger(0)
		c.Close()
		select {
		case err := <-ended:
			if n := <-got; err == nil {
				t.Errorf("the target read a clean end after %d bytes of an upload its client reset; want a reset", n)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the target's connection did not end")
		}
		waitStreams(t, p)
	})
}
