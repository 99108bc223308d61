package node

// Chains of wests (cases 3 and 4) cut, stopped and reloaded under raw
// TCP and upgraded connections, and a busy middle listener (a review of
// chains end to end): each failed before its fix.

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
)

// dlUploadTarget serves "D" with an endless download and "U" by reading
// an upload and reporting on uploadEnd how its read ended; each side only
// reads or only writes, so that a write's error cannot take a reset from
// a read.
func dlUploadTarget(t *testing.T) (string, <-chan error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	uploadEnd := make(chan error, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b := make([]byte, 1)
				if _, err := io.ReadFull(c, b); err != nil {
					return
				}
				if b[0] == 'D' {
					io.Copy(c, &testutil.Pattern{})
					return
				}
				c.Write([]byte("k"))
				c.SetReadDeadline(time.Now().Add(20 * time.Second))
				_, err := io.Copy(io.Discard, c)
				uploadEnd <- err
			}()
		}
	}()
	return ln.Addr().String(), uploadEnd
}

// TestChainTunnelLossResetsRawTCP: case 3 with a tcp:// listener at L
// and at G; the tunnel of either hop is cut under a download and an
// upload. As over one tunnel, the client and the target must both be
// reset, not read a clean end of stream.
func TestChainTunnelLossResetsRawTCP(t *testing.T) {
	for _, hop := range []string{"L-G", "G-L2"} {
		t.Run(hop, func(t *testing.T) {
			target, uploadEnd := dlUploadTarget(t)
			var pre prebound
			gListen := pre.addr(t)
			g := startNode(t, fmt.Sprintf(`{"west": {"nm": "rc.G"}, "wsts": {"sp": "ws://127.0.0.1:0"},
				"proxy": {"tcp://%s": {"en": "rc.L2", "ou": "tcp://%s"}}}`, gListen, target), withListen(faultOpts(t), pre.listen))
			r1 := testutil.StartRelay(t, g.Addrs().Tunnel)
			r2 := testutil.StartRelay(t, g.Addrs().Tunnel)
			startNode(t, fmt.Sprintf(`{"west": {"nm": "rc.L2"}, "wstc": {"ws://%s": {}}}`, r2.Addr()), faultOpts(t))
			l := startNode(t, fmt.Sprintf(`{"west": {"nm": "rc.L"},
				"proxy": {"tcp://127.0.0.1:0": {"ea": "ws://%s", "ou": "tcp://%s"}}}`, r1.Addr(), gListen), faultOpts(t))
			var addr string
			for _, a := range l.Addrs().Proxies {
				addr = a
			}
			waitUp(t, g, "rc.L2")
			waitUp(t, g, "rc.L")

			down := downloadAndUpload(t, addr)
			if hop == "L-G" {
				r1.Drop()
			} else {
				r2.Drop()
			}
			wantBothReset(t, down, down, uploadEnd)
		})
	}
}

// downloadAndUpload starts, through addr, a tcp:// listener before a
// dlUploadTarget, a download (returned, its first MiB read) and an
// upload that runs until its connection fails.
func downloadAndUpload(t *testing.T, addr string) net.Conn {
	t.Helper()
	down := testutil.DialClient(t, addr)
	down.Write([]byte("D"))
	if _, err := io.CopyN(io.Discard, down, 1<<20); err != nil {
		t.Fatalf("first MiB of the download: %v", err)
	}
	up := testutil.DialClient(t, addr)
	up.Write([]byte("U"))
	if _, err := io.ReadFull(up, make([]byte, 1)); err != nil {
		t.Fatalf("the target's answer to the upload: %v", err)
	}
	go io.Copy(up, &testutil.Pattern{})
	time.Sleep(200 * time.Millisecond) // the upload under way
	return down
}

// withListen is o listening through listen (a prebound's).
func withListen(o Options, listen func(network, addr string) (net.Listener, error)) Options {
	o.Listen = listen
	return o
}

// TestChainNearTunnelLossUnderUpgrade: as TestFaultTunnelLossUnderUpgrade,
// with the chain's first tunnel (L to G) lost rather than its last.
func TestChainNearTunnelLossUnderUpgrade(t *testing.T) {
	be, uploadEnd := upgradedDownUp(t)
	var pre prebound
	gListen := pre.addr(t)
	g := startNode(t, fmt.Sprintf(`{"west": {"nm": "cut.G"}, "wsts": {"sp": "ws://127.0.0.1:0"},
		"proxy": {"http://%s": {"en": "cut.L2", "/": {"ou": "%s/"}}}}`, gListen, be.URL), withListen(faultOpts(t), pre.listen))
	relay := testutil.StartRelay(t, g.Addrs().Tunnel)
	startNode(t, fmt.Sprintf(`{"west": {"nm": "cut.L2"}, "wstc": {"ws://%s": {}}}`, g.Addrs().Tunnel), faultOpts(t))
	waitUp(t, g, "cut.L2")
	l := startNode(t, fmt.Sprintf(`{"west": {"nm": "cut.L"},
		"proxy": {"http://127.0.0.1:0": {"ea": "ws://%s", "/": {"ou": "http://%s/"}}}}`, relay.Addr(), gListen), faultOpts(t))
	entry := strings.TrimPrefix(proxyURL(t, l), "http://")
	down, dbr := upgradedDownloadAndUpload(t, entry)
	relay.Drop()
	wantBothReset(t, down, dbr, uploadEnd)
}

// TestChainGraceRunsOutUnderRawTCP: a west's stop whose grace runs out
// under raw TCP connections resets them on both sides ("a stop's grace
// ran out"), whichever west of a case 3 chain stops.
func TestChainGraceRunsOutUnderRawTCP(t *testing.T) {
	for _, who := range []string{"L", "G", "L2"} {
		t.Run(who, func(t *testing.T) {
			target, uploadEnd := dlUploadTarget(t)
			var pre prebound
			gListen := pre.addr(t)
			grace := `"shutdown_grace": "500ms"`
			opts := faultOpts(t)
			opts.ShutdownGrace = 0
			g, stopG := runNode(t, fmt.Sprintf(`{"west": {"nm": "rc.G", %s}, "wsts": {"sp": "ws://127.0.0.1:0"},
				"proxy": {"tcp://%s": {"en": "rc.L2", "ou": "tcp://%s"}}}`, grace, gListen, target), withListen(opts, pre.listen))
			_, stopL2 := runNode(t, fmt.Sprintf(`{"west": {"nm": "rc.L2", %s}, "wstc": {"ws://%s": {}}}`, grace, g.Addrs().Tunnel), opts)
			l, stopL := runNode(t, fmt.Sprintf(`{"west": {"nm": "rc.L", %s},
				"proxy": {"tcp://127.0.0.1:0": {"ea": "ws://%s", "ou": "tcp://%s"}}}`, grace, g.Addrs().Tunnel, gListen), opts)
			var addr string
			for _, a := range l.Addrs().Proxies {
				addr = a
			}
			waitUp(t, g, "rc.L2")
			waitUp(t, g, "rc.L")
			down := downloadAndUpload(t, addr)
			stop := map[string]func() time.Duration{"L": stopL, "G": stopG, "L2": stopL2}[who]
			go stop()
			wantBothReset(t, down, down, uploadEnd)
		})
	}
}

// TestOneHopGraceRunsOutUnderRawTCP: the entry west of one tunnel stops
// with raw TCP in flight, and its grace runs out: both sides are reset.
func TestOneHopGraceRunsOutUnderRawTCP(t *testing.T) {
	target, uploadEnd := dlUploadTarget(t)
	opts := faultOpts(t)
	opts.ShutdownGrace = 0
	g := startNode(t, `{"west": {"nm": "rc.G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, opts)
	l, stopL := runNode(t, fmt.Sprintf(`{"west": {"nm": "rc.L", "shutdown_grace": "500ms"},
		"proxy": {"tcp://127.0.0.1:0": {"ea": "ws://%s", "ou": "tcp://%s"}}}`, g.Addrs().Tunnel, target), opts)
	var addr string
	for _, a := range l.Addrs().Proxies {
		addr = a
	}
	waitUp(t, g, "rc.L")
	down := downloadAndUpload(t, addr)
	go stopL()
	wantBothReset(t, down, down, uploadEnd)
}

// TestChainMiddleReloadRemovesTCPListener: G of case 3 reloads without
// its tcp:// listener while a download and an upload cross it; once its
// grace has run out the connections are cut, and both sides are reset,
// not ended as if complete.
func TestChainMiddleReloadRemovesTCPListener(t *testing.T) {
	target, uploadEnd := dlUploadTarget(t)
	var pre prebound
	gListen := pre.addr(t)
	gConf := func(proxy string) string {
		return fmt.Sprintf(`{"west": {"nm": "rc.G", "shutdown_grace": "500ms"}, "wsts": {"sp": "ws://127.0.0.1:%%s"}, "proxy": {%s}}`, proxy)
	}
	opts := faultOpts(t)
	opts.ShutdownGrace = 0
	tunnelLn := pre.addr(t)
	_, port, _ := net.SplitHostPort(tunnelLn)
	full := fmt.Sprintf(gConf(fmt.Sprintf(`"tcp://%s": {"en": "rc.L2", "ou": "tcp://%s"}`, gListen, target)), port)
	g := startNode(t, full, withListen(opts, pre.listen))
	startNode(t, fmt.Sprintf(`{"west": {"nm": "rc.L2"}, "wstc": {"ws://%s": {}}}`, g.Addrs().Tunnel), opts)
	l := startNode(t, fmt.Sprintf(`{"west": {"nm": "rc.L"},
		"proxy": {"tcp://127.0.0.1:0": {"ea": "ws://%s", "ou": "tcp://%s"}}}`, g.Addrs().Tunnel, gListen), opts)
	var addr string
	for _, a := range l.Addrs().Proxies {
		addr = a
	}
	waitUp(t, g, "rc.L2")
	waitUp(t, g, "rc.L")
	down := downloadAndUpload(t, addr)
	if err := g.Reload(mustParse(t, fmt.Sprintf(gConf(""), port))); err != nil {
		t.Fatalf("reload: %v", err)
	}
	wantBothReset(t, down, down, uploadEnd)
}

// TestChainBusyMiddleHTTPListener: G's http:// listener of case 3 is at
// its max_conns; a request handed to it waits the far side's dial timeout
// (10 s) for a slot and is then refused. The entry's client is told as
// for a far dial that timed out (504), with a reason.
func TestChainBusyMiddleHTTPListener(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			arrived <- struct{}{}
			<-release
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(be.Close)
	defer close(release)
	var pre prebound
	gListen := pre.addr(t)
	g := startNode(t, fmt.Sprintf(`{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"},
		"proxy": {"http://%s": {"en": "L2", "max_conns": 1, "/": {"ou": "%s/"}}}}`, gListen, be.URL), Options{Listen: pre.listen})
	startNode(t, fmt.Sprintf(`{"west": {"nm": "L2"}, "wstc": {"ws://%s": {}}}`, g.Addrs().Tunnel), Options{})
	waitUp(t, g, "L2")
	l := startNode(t, fmt.Sprintf(`{"west": {"nm": "L"},
		"proxy": {"http://127.0.0.1:0": {"ea": "ws://%s", "/": {"ou": "http://%s/"}}}}`, g.Addrs().Tunnel, gListen), Options{})
	base := proxyURL(t, l)
	held := getLater(base + "/hold")
	<-arrived
	start := time.Now()
	resp, err := http.Get(base + "/second")
	if err != nil {
		t.Fatalf("second request: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	t.Logf("second request after %v: %d %q", time.Since(start).Round(time.Millisecond), resp.StatusCode, body)
	if resp.StatusCode != http.StatusGatewayTimeout || !strings.Contains(string(body), "busy") {
		t.Errorf("a request for the busy middle listener: %d %q; want 504 saying the listener was busy", resp.StatusCode, body)
	}
	release <- struct{}{}
	<-held
}
