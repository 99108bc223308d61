package node

// Protocol upgrades through HTTP listeners (a review of upgrades and
// streaming): each failed before its fix.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/west-tunnel/west/internal/testutil"
)

// upgradeShapes runs f over the shapes an HTTP listener reaches a backend in:
// an ea listener through one tunnel, through a chain of two, and an en
// listener (case 2) through one tunnel.
func upgradeShapes(t *testing.T, ou string, f func(t *testing.T, entry string)) {
	for _, hops := range []int{1, 2} {
		t.Run(fmt.Sprintf("ea-%d-hop", hops), func(t *testing.T) { f(t, through(t, hops, "http", ou, "")) })
	}
	t.Run("en-1-hop", func(t *testing.T) {
		g := startNode(t, fmt.Sprintf(`{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"},
			"proxy": {"http://127.0.0.1:0": {"en": "L", "/": {"ou": %q}}}}`, ou), Options{})
		startNode(t, fmt.Sprintf(`{"west": {"nm": "L"}, "wstc": {"ws://%s": {}}}`, g.Addrs().Tunnel), Options{})
		waitUp(t, g, "L")
		for _, a := range g.Addrs().Proxies {
			f(t, a)
		}
	})
}

// rawUpgrade sends an upgrade request for proto on a new connection and
// reads the 101.
func rawUpgrade(t *testing.T, entry, path, proto string) (*net.TCPConn, *bufio.Reader) {
	t.Helper()
	c := testutil.DialClient(t, entry)
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", path, proto)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	if resp.StatusCode != 101 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("upgrade: %s %q", resp.Status, b)
	}
	return c, br
}

// wsEcho is a WebSocket backend that answers each message with "echo "
// and the message.
func wsEcho(w http.ResponseWriter, r *http.Request) {
	c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	echoMessages(c)
}

// echoMessages answers each message on c with "echo " and the message,
// until c fails.
func echoMessages(c *websocket.Conn) {
	for {
		typ, msg, err := c.ReadMessage()
		if err != nil {
			return
		}
		if err := c.WriteMessage(typ, append([]byte("echo "), msg...)); err != nil {
			return
		}
	}
}

// switchTo has a backend's handler answer 101 for proto on its own, as a
// backend that switches protocols does, and returns the connection (nil
// if it could not be taken) and what net/http had read ahead on it.
func switchTo(w http.ResponseWriter, proto string) (net.Conn, *bufio.ReadWriter) {
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, nil
	}
	io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "+proto+"\r\n\r\n")
	return c, brw
}

// TestUpgradeLoggedAs101: an upgraded connection's access line and
// metrics say 101, the status its client got, not 200.
func TestUpgradeLoggedAs101(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(wsEcho))
	defer be.Close()
	g := startNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	var logs testutil.Buffer
	l := startNode(t, fmt.Sprintf(`{"west": {"nm": "L", "cp": "127.0.0.1:0"}, "proxy": {"http://127.0.0.1:0": {"ea": "ws://%s", "/": {"ou": %q}}}}`,
		g.Addrs().Tunnel, be.URL+"/"), Options{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: LevelVerbose}))})
	entry := strings.TrimPrefix(proxyURL(t, l), "http://")
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	c, resp, err := d.Dial("ws://"+entry+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 {
		t.Fatalf("client got %d", resp.StatusCode)
	}
	c.WriteMessage(websocket.TextMessage, []byte("x"))
	c.ReadMessage()
	c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""))
	c.ReadMessage()
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "msg=request") {
		if time.Now().After(deadline) {
			t.Fatalf("no access line: %s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "msg=request") && !strings.Contains(line, "status=101") {
			t.Errorf("access line of a WebSocket the client got 101 for: %s", line)
		}
	}
	mresp, err := http.Get("http://" + l.Addrs().Control + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	for _, line := range strings.Split(string(m), "\n") {
		if strings.HasPrefix(line, "west_requests_total") {
			t.Logf("%s", line)
			if !strings.Contains(line, `code_class="1xx"`) {
				t.Errorf("metric of a WebSocket: %s", line)
			}
		}
	}
}

// upgradedDownUp is a backend that switches each request to "tcp" and
// then, on /down, sends without end, and on /up, answers "k", reads an
// upload and tells uploadEnd how its read ended (as dlUploadTarget).
func upgradedDownUp(t *testing.T) (be *httptest.Server, uploadEnd <-chan error) {
	ended := make(chan error, 1)
	be = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw := switchTo(w, "tcp")
		if c == nil {
			return
		}
		defer c.Close()
		if r.URL.Path == "/down" {
			io.Copy(c, &testutil.Pattern{})
			return
		}
		io.WriteString(c, "k")
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, err := io.Copy(io.Discard, brw)
		ended <- err
	}))
	t.Cleanup(be.Close)
	return be, ended
}

// upgradedDownloadAndUpload starts, through entry, a listener before an
// upgradedDownUp backend, a download (returned with its reader, its first
// MiB read) and an upload that runs until its connection fails, as
// downloadAndUpload does for a tcp:// listener.
func upgradedDownloadAndUpload(t *testing.T, entry string) (net.Conn, *bufio.Reader) {
	t.Helper()
	down, dbr := rawUpgrade(t, entry, "/down", "tcp")
	if _, err := io.CopyN(io.Discard, dbr, 1<<20); err != nil {
		t.Fatalf("first MiB of the download: %v", err)
	}
	up, ubr := rawUpgrade(t, entry, "/up", "tcp")
	if _, err := io.ReadFull(ubr, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	go io.Copy(up, &testutil.Pattern{})
	time.Sleep(200 * time.Millisecond) // the upload under way
	return down, dbr
}

// TestFaultTunnelLossUnderUpgrade: a tunnel lost under an upgraded
// connection (a raw stream after "Upgrade: tcp", as Docker's attach)
// must not end either side's connection as if the other had finished:
// as for a tcp:// listener, each sees its connection fail.
func TestFaultTunnelLossUnderUpgrade(t *testing.T) {
	be, uploadEnd := upgradedDownUp(t)
	for _, shape := range []string{"1-hop", "2-hop, far tunnel lost"} {
		t.Run(shape, func(t *testing.T) {
			var relay *testutil.Relay
			var entry string
			if shape == "1-hop" {
				g := startNode(t, `{"west": {"nm": "cut.G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, faultOpts(t))
				relay = testutil.StartRelay(t, g.Addrs().Tunnel)
				l := startNode(t, fmt.Sprintf(`{"west": {"nm": "cut.L"},
					"proxy": {"http://127.0.0.1:0": {"ea": "ws://%s", "/": {"ou": "%s/"}}}}`, relay.Addr(), be.URL), faultOpts(t))
				entry = strings.TrimPrefix(proxyURL(t, l), "http://")
			} else {
				var pre prebound
				gListen := pre.addr(t)
				opts := faultOpts(t)
				opts.Listen = pre.listen
				g := startNode(t, fmt.Sprintf(`{"west": {"nm": "cut.G"}, "wsts": {"sp": "ws://127.0.0.1:0"},
					"proxy": {"http://%s": {"en": "cut.L2", "/": {"ou": "%s/"}}}}`, gListen, be.URL), opts)
				relay = testutil.StartRelay(t, g.Addrs().Tunnel)
				startNode(t, fmt.Sprintf(`{"west": {"nm": "cut.L2"}, "wstc": {"ws://%s": {}}}`, relay.Addr()), faultOpts(t))
				waitUp(t, g, "cut.L2")
				l := startNode(t, fmt.Sprintf(`{"west": {"nm": "cut.L"},
					"proxy": {"http://127.0.0.1:0": {"ea": "ws://%s", "/": {"ou": "http://%s/"}}}}`, g.Addrs().Tunnel, gListen), faultOpts(t))
				entry = strings.TrimPrefix(proxyURL(t, l), "http://")
			}
			down, dbr := upgradedDownloadAndUpload(t, entry)
			relay.Drop()
			wantBothReset(t, down, dbr, uploadEnd)
		})
	}
}

// TestUpgradePipelined: bytes a client sends right behind its upgrade
// request, in the same write, reach the backend.
func TestUpgradePipelined(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw := switchTo(w, "tcp")
		if c == nil {
			return
		}
		defer c.Close()
		line, _ := brw.ReadString('\n')
		io.WriteString(c, "got "+line)
	}))
	defer be.Close()
	upgradeShapes(t, be.URL+"/", func(t *testing.T, entry string) {
		c := testutil.DialClient(t, entry)
		c.SetDeadline(time.Now().Add(3 * time.Second))
		io.WriteString(c, "GET /u HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\nhello\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 101 {
			t.Fatalf("upgrade: %v %v", resp, err)
		}
		line, err := br.ReadString('\n')
		if line != "got hello\n" {
			t.Fatalf("the bytes sent behind the upgrade request: backend answered %q, %v", line, err)
		}
	})
}

// TestUnaskedSwitchFreesBackend: a backend that answers 101 to a
// request that asked for no upgrade (or for another protocol) gets 502
// sent to the client, and its connection (and the tunnel stream to it)
// is let go of at once, not kept open for as long as the backend waits.
func TestUnaskedSwitchFreesBackend(t *testing.T) {
	closed := make(chan string, 10)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := switchTo(w, "foo")
		if c == nil {
			return
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		start := time.Now()
		io.Copy(io.Discard, c)
		closed <- fmt.Sprintf("%s %s: backend's connection ended after %v", r.Method, r.Header.Get("Upgrade"), time.Since(start).Round(time.Millisecond))
	}))
	defer be.Close()
	upgradeShapes(t, be.URL+"/", func(t *testing.T, entry string) {
		for _, req := range []string{
			"GET /unasked HTTP/1.1\r\nHost: x\r\n\r\n",
			"POST /unasked HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nz",
			"GET /unasked HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: bar\r\n\r\n",
		} {
			c := testutil.DialClient(t, entry)
			io.WriteString(c, req)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil || resp.StatusCode != http.StatusBadGateway {
				t.Fatalf("%q: %v %v", req, resp, err)
			}
			select {
			case s := <-closed:
				t.Log(s)
			case <-time.After(3 * time.Second):
				t.Errorf("%q: answered 502, but the backend's connection is still open 3s later", req)
				<-closed
			}
		}
	})
}

// TestUnaskedSwitchUsesUpStreams: the streams such answers leave open
// count against the tunnel's max_streams: a few of them and the listener
// answers every other request 503.
func TestUnaskedSwitchUsesUpStreams(t *testing.T) {
	quit := make(chan struct{})
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/unasked" {
			io.WriteString(w, "ok")
			return
		}
		c, _ := switchTo(w, "foo")
		if c == nil {
			return
		}
		defer c.Close()
		// Served until the client's end, or the test's.
		go func() { io.Copy(io.Discard, c); c.Close() }()
		<-quit
	}))
	defer be.Close()
	defer close(quit)
	g := startNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0", "max_streams": 4}}`, Options{})
	l := startNode(t, fmt.Sprintf(`{"west": {"nm": "L"}, "proxy": {"http://127.0.0.1:0": {"ea": "ws://%s", "/": {"ou": %q}}}}`,
		g.Addrs().Tunnel, be.URL+"/"), Options{})
	base := proxyURL(t, l)
	for i := range 4 {
		resp, err := http.Post(base+"/unasked", "text/plain", strings.NewReader("z"))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("unasked switch %d: %s", i, resp.Status)
		}
	}
	time.Sleep(500 * time.Millisecond)
	resp, err := http.Get(base + "/page")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("after four 502s for unasked switches, a plain GET got %s %q", resp.Status, b)
	}
}

// TestUpgradeAccessLineCountsBytes: an upgraded exchange's access line
// says what crossed after the 101, bytes_in from the client and
// bytes_out to it, on the entry west and, in a chain, on the middle one
// too. The client sends some of its bytes behind its upgrade request,
// which net/http reads ahead.
func TestUpgradeAccessLineCountsBytes(t *testing.T) {
	const (
		sent   = 70_000 // by the client, after the 101
		ahead  = 100    // of which right behind the upgrade request
		answer = 200_000
	)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw := switchTo(w, "websocket")
		if c == nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.CopyN(io.Discard, brw, sent); err != nil {
			return
		}
		c.Write(bytes.Repeat([]byte("m"), answer))
		io.Copy(io.Discard, brw) // until the client closes
	}))
	defer be.Close()
	verbose := func(b *testutil.Buffer) Options {
		return Options{Logger: slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: LevelVerbose}))}
	}
	for _, hops := range []int{1, 2} {
		t.Run(fmt.Sprintf("ea-%d-hop", hops), func(t *testing.T) {
			var logs []*testutil.Buffer // of the wests whose listeners the exchange passes
			var g *Node
			ou := be.URL + "/"
			if hops == 1 {
				g = startNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
			} else {
				// L's ou is G's own listener, which sends it on to L2.
				var pre prebound
				gListen := pre.addr(t)
				gLog := new(testutil.Buffer)
				logs = append(logs, gLog)
				opts := verbose(gLog)
				opts.Listen = pre.listen
				g = startNode(t, fmt.Sprintf(`{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"},
					"proxy": {"http://%s": {"en": "L2", "/": {"ou": %q}}}}`, gListen, ou), opts)
				startNode(t, fmt.Sprintf(`{"west": {"nm": "L2"}, "wstc": {"ws://%s": {}}}`, g.Addrs().Tunnel), Options{})
				waitUp(t, g, "L2")
				ou = "http://" + gListen + "/"
			}
			lLog := new(testutil.Buffer)
			logs = append(logs, lLog)
			l := startNode(t, fmt.Sprintf(`{"west": {"nm": "L"}, "proxy": {"http://127.0.0.1:0": {"ea": "ws://%s", "/": {"ou": %q}}}}`,
				g.Addrs().Tunnel, ou), verbose(lLog))

			c := testutil.DialClient(t, strings.TrimPrefix(proxyURL(t, l), "http://"))
			payload := bytes.Repeat([]byte("n"), sent)
			head := "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
			if _, err := c.Write(append([]byte(head), payload[:ahead]...)); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 101 {
				t.Fatalf("upgrade: %s", resp.Status)
			}
			if _, err := c.Write(payload[ahead:]); err != nil {
				t.Fatal(err)
			}
			if _, err := io.CopyN(io.Discard, br, answer); err != nil {
				t.Fatalf("the backend's answer: %v", err)
			}
			c.Close()

			for i, log := range logs {
				line := accessLine(t, log)
				for _, want := range []string{"status=101", fmt.Sprintf("bytes_in=%d", sent), fmt.Sprintf("bytes_out=%d", answer)} {
					if !slices.Contains(strings.Fields(line), want) {
						t.Errorf("access line %d of %d lacks %s: %s", i+1, len(logs), want, line)
					}
				}
			}
		})
	}
}

// accessLine waits for the first access line in logs and returns it.
func accessLine(t *testing.T, logs *testutil.Buffer) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for line := range strings.Lines(logs.String()) {
			if strings.Contains(line, "msg=request") {
				return line
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no access line: %s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestUpgradeHopByHopHeaders: a WebSocket's 101 reaches the client
// without the hop-by-hop fields of the backend's connection, "Connection:
// Upgrade" and Upgrade aside, through each shape (in a chain, each west's
// listener forwards the 101 again), and the WebSocket works. Its request
// reaches the backend without the client's: Connection lists only
// "Upgrade".
func TestUpgradeHopByHopHeaders(t *testing.T) {
	asked := make(chan http.Header, 1)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case asked <- r.Header.Clone():
		default:
		}
		// Written as a second Connection line, after gorilla's own
		// "Connection: Upgrade".
		hops := http.Header{"Connection": {"X-Secret"}, "X-Secret": {"1"}, "Keep-Alive": {"timeout=5"},
			"Proxy-Connection": {"keep-alive"}, "X-End-To-End": {"kept"}}
		c, err := (&websocket.Upgrader{}).Upgrade(w, r, hops)
		if err != nil {
			return
		}
		defer c.Close()
		echoMessages(c)
	}))
	defer be.Close()
	upgradeShapes(t, be.URL+"/", func(t *testing.T, entry string) {
		d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
		ws, resp, err := d.Dial("ws://"+entry+"/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		<-asked
		if got := resp.Header.Values("Connection"); !slices.Equal(got, []string{"Upgrade"}) {
			t.Errorf("the client got Connection %q, want only \"Upgrade\"", got)
		}
		for _, name := range []string{"X-Secret", "Keep-Alive", "Proxy-Connection"} {
			if v := resp.Header[name]; v != nil {
				t.Errorf("the client got %s: %q", name, v)
			}
		}
		if resp.Header.Get("X-End-To-End") != "kept" {
			t.Errorf("the client lost X-End-To-End: %v", resp.Header)
		}
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		if err := ws.WriteMessage(websocket.TextMessage, []byte("hi")); err != nil {
			t.Fatal(err)
		}
		if _, msg, err := ws.ReadMessage(); string(msg) != "echo hi" {
			t.Fatalf("over the WebSocket: %q, %v", msg, err)
		}

		// gorilla's client lets no header name Connection: a raw request.
		c := testutil.DialClient(t, entry)
		io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, X-Client-Hop\r\nUpgrade: websocket\r\n"+
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"+
			"X-Client-Hop: 1\r\nKeep-Alive: 300\r\nX-Client-End: kept\r\n\r\n")
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("raw upgrade: %v, %v", resp, err)
		}
		sent := <-asked
		if got := sent.Values("Connection"); !slices.Equal(got, []string{"Upgrade"}) {
			t.Errorf("the backend got Connection %q, want only \"Upgrade\"", got)
		}
		for _, name := range []string{"X-Client-Hop", "Keep-Alive"} {
			if v := sent[name]; v != nil {
				t.Errorf("the backend got %s: %q", name, v)
			}
		}
		if sent.Get("X-Client-End") != "kept" {
			t.Errorf("the backend lost X-Client-End: %v", sent)
		}
	})
}
