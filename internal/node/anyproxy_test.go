package node

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/west-tunnel/west/internal/testutil"
)

// through builds a path of one tunnel (case 1 shape: L's listener sends
// through L's tunnel client to G, which dials ou) or two (case 3 shape:
// L's listener goes through G's tunnel server to G's own listener, which
// sends through the tunnel of L2, a client of G, and L2 dials ou). kind is
// "http" or "tcp"; extra holds more keys for the listener whose outgoing
// URL is ou. It returns the address of the entry listener.
func through(t *testing.T, hops int, kind, ou, extra string) string {
	t.Helper()
	routes := func(ou, extra string) string {
		if extra != "" {
			extra += ", "
		}
		if kind != "http" {
			return fmt.Sprintf(`%s"ou": %q`, extra, ou)
		}
		return fmt.Sprintf(`%s"/": {"ou": %q}`, extra, ou)
	}
	var g *Node
	first := ou
	firstExtra := extra
	switch hops {
	case 1:
		g = startNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	case 2:
		var pre prebound
		gListen := pre.addr(t)
		if kind == "udp" {
			gListen = freeUDPAddr(t)
		}
		g = startNode(t, fmt.Sprintf(`{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"},
			"proxy": {"%s://%s": {"en": "L2", %s}}}`, kind, gListen, routes(ou, extra)), Options{Listen: pre.listen})
		startNode(t, fmt.Sprintf(`{"west": {"nm": "L2"}, "wstc": {"ws://%s": {}}}`, g.Addrs().Tunnel), Options{})
		waitUp(t, g, "L2")
		first, firstExtra = kind+"://"+gListen, ""
		if kind == "http" {
			first += "/"
		}
	default:
		t.Fatalf("hops %d", hops)
	}
	l := startNode(t, fmt.Sprintf(`{"west": {"nm": "L"}, "proxy": {"%s://127.0.0.1:0": {"ea": "ws://%s", %s}}}`,
		kind, g.Addrs().Tunnel, routes(first, firstExtra)), Options{})
	for _, a := range l.Addrs().Proxies {
		return a
	}
	t.Fatal("no listener")
	return ""
}

// forHops runs f as subtests over one tunnel and over a chain of two.
func forHops(t *testing.T, f func(t *testing.T, hops int)) {
	for _, hops := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d-hop", hops), func(t *testing.T) { f(t, hops) })
	}
}

func TestTCPEchoHalfClose(t *testing.T) {
	echo := testutil.EchoServer(t)
	forHops(t, func(t *testing.T, hops int) {
		entry := through(t, hops, "tcp", "tcp://"+echo, "")
		const size = 100 << 20
		c, err := net.Dial("tcp", entry)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Minute))
		sent := sha256.New()
		go func() {
			io.Copy(c, io.TeeReader(io.LimitReader(&testutil.Pattern{}, size), sent))
			// Half-close: the reply must still come back in full.
			c.(*net.TCPConn).CloseWrite()
		}()
		got := sha256.New()
		n, err := io.Copy(got, c)
		if err != nil || n != size {
			t.Fatalf("echo: %d bytes, %v; want %d", n, err, size)
		}
		if fmt.Sprintf("%x", got.Sum(nil)) != fmt.Sprintf("%x", sent.Sum(nil)) {
			t.Fatal("echoed bytes differ from those sent")
		}
	})
}

// TestTCPRefusedTargetResets: a client of a tcp:// listener whose target
// refuses is reset, through a chain as through one tunnel. In a chain the
// middle west accepted the stream before its own listener dialled on, so
// the client saw a connection open and end, as if the target had nothing
// to say.
func TestTCPRefusedTargetResets(t *testing.T) {
	gone, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := gone.Addr().String()
	gone.Close()
	forHops(t, func(t *testing.T, hops int) {
		c, err := net.Dial("tcp", through(t, hops, "tcp", "tcp://"+refused, ""))
		if errors.Is(err, syscall.ECONNRESET) {
			return // reset before the connect call returned
		}
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("read from a connection whose target refused: %d bytes, %v; want a reset", n, err)
		}
	})
}

func TestTLSOverTCP(t *testing.T) {
	be := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tls ok %s", r.TLS.ServerName)
	}))
	defer be.Close()
	forHops(t, func(t *testing.T, hops int) {
		entry := through(t, hops, "tcp", "tcp://"+be.Listener.Addr().String(), "")
		client := be.Client()
		client.Transport.(*http.Transport).DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", entry)
		}
		resp, err := client.Get(be.URL)
		if err != nil {
			t.Fatalf("TLS through the tcp listener: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.HasPrefix(string(body), "tls ok") {
			t.Fatalf("body %q", body)
		}
	})
}

// TestRedisOverTCP drives a real redis-server with the real redis-cli. CI
// installs both and sets WEST_REQUIRE_REDIS, so there the test cannot be
// skipped.
func TestRedisOverTCP(t *testing.T) {
	server, errS := exec.LookPath("redis-server")
	cli, errC := exec.LookPath("redis-cli")
	if errS != nil || errC != nil {
		if os.Getenv("WEST_REQUIRE_REDIS") != "" {
			t.Fatalf("redis-server and redis-cli are required: %v %v", errS, errC)
		}
		t.Skip("redis-server or redis-cli not installed; .ci/run installs them")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	rs := exec.Command(server, "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	if err := rs.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rs.Process.Kill(); rs.Wait() })
	redisAddr := fmt.Sprintf("127.0.0.1:%d", port)
	waitDial(t, redisAddr)

	forHops(t, func(t *testing.T, hops int) {
		entry := through(t, hops, "tcp", "tcp://"+redisAddr, "")
		host, p, _ := net.SplitHostPort(entry)
		run := func(stdin string, args ...string) string {
			t.Helper()
			cmd := exec.Command(cli, append([]string{"-h", host, "-p", p}, args...)...)
			cmd.Stdin = strings.NewReader(stdin)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("redis-cli %s: %v: %.200s", args[0], err, out)
			}
			return strings.TrimSpace(string(out))
		}
		if got := run("", "PING"); got != "PONG" {
			t.Fatalf("PING: %q", got)
		}
		key := fmt.Sprintf("west-%d", hops)
		big := strings.Repeat("v", 1<<20)
		// -x takes the value, 1 MiB, from standard input.
		if got := run(big, "-x", "SET", key); got != "OK" {
			t.Fatalf("SET: %.200q", got)
		}
		if got := run("", "STRLEN", key); got != fmt.Sprint(len(big)) {
			t.Fatalf("STRLEN: %q", got)
		}
		// A pipelined batch with its input half-closed by redis-cli.
		cmd := exec.Command(cli, "-h", host, "-p", p, "--pipe")
		var in strings.Builder
		for i := range 1000 {
			fmt.Fprintf(&in, "*3\r\n$5\r\nRPUSH\r\n$%d\r\n%s\r\n$%d\r\n%d\r\n", len(key+"l"), key+"l", len(fmt.Sprint(i)), i)
		}
		cmd.Stdin = strings.NewReader(in.String())
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "errors: 0, replies: 1000") {
			t.Fatalf("redis-cli --pipe: %v: %.300s", err, out)
		}
		if got := run("", "LLEN", key+"l"); got != "1000" {
			t.Fatalf("LLEN: %q", got)
		}
	})
}

func waitDial(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never came up: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestWebSocketUpgrade(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		// Greet first, so a message flows backend to client unprompted.
		c.WriteMessage(websocket.TextMessage, []byte("hello "+r.URL.Path))
		echoMessages(c)
	}))
	defer be.Close()
	forHops(t, func(t *testing.T, hops int) {
		entry := through(t, hops, "http", be.URL+"/", "")
		d := websocket.Dialer{HandshakeTimeout: 20 * time.Second}
		c, _, err := d.Dial("ws://"+entry+"/chat", nil)
		if err != nil {
			t.Fatalf("WebSocket handshake through the tunnel: %v", err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, msg, err := c.ReadMessage()
		if err != nil || string(msg) != "hello /chat" {
			t.Fatalf("greeting: %q, %v", msg, err)
		}
		for i := range 50 {
			want := fmt.Sprintf("message %d %s", i, strings.Repeat("x", i*100))
			if err := c.WriteMessage(websocket.TextMessage, []byte(want)); err != nil {
				t.Fatal(err)
			}
			_, got, err := c.ReadMessage()
			if err != nil || string(got) != "echo "+want {
				t.Fatalf("message %d: %d bytes, %v", i, len(got), err)
			}
		}
		c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	})
}

// TestServerSentEvents checks that events cross one by one: the backend
// sends the next event only after the client has read the previous, so
// any buffering on the way stalls the test into its deadline.
func TestServerSentEvents(t *testing.T) {
	next := make(chan struct{})
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		for i := range 5 {
			fmt.Fprintf(w, "id: %d\ndata: event %d\n\n", i, i)
			w.(http.Flusher).Flush()
			select {
			case <-next:
			case <-r.Context().Done():
				return
			}
		}
	}))
	defer be.Close()
	forHops(t, func(t *testing.T, hops int) {
		entry := through(t, hops, "http", be.URL+"/", "")
		resp, err := http.Get("http://" + entry + "/events")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
			t.Fatalf("content type %q", ct)
		}
		lines := make(chan string)
		go func() {
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				if strings.HasPrefix(sc.Text(), "data: ") {
					lines <- sc.Text()
				}
			}
			close(lines)
		}()
		for i := range 5 {
			select {
			case got := <-lines:
				if got != fmt.Sprintf("data: event %d", i) {
					t.Fatalf("event %d: %q", i, got)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("event %d did not arrive on its own: buffered on the way", i)
			}
			if i < 4 {
				next <- struct{}{}
			}
		}
	})
}

func TestHTTPSBackend(t *testing.T) {
	be := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "secure %s %s", r.Host, r.URL.Path)
	}))
	// The untrusted case makes handshakes fail on purpose; keep them quiet.
	be.Config.ErrorLog = log.New(io.Discard, "", 0)
	be.StartTLS()
	defer be.Close()
	caFile := filepath.Join(t.TempDir(), "backend-ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: be.Certificate().Raw})
	if err := os.WriteFile(caFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	plain := httptest.NewServer(http.NotFoundHandler())
	defer plain.Close()
	forHops(t, func(t *testing.T, hops int) {
		entry := through(t, hops, "http", be.URL+"/s", fmt.Sprintf(`"tls_ca_file": %q`, caFile))
		code, body := getStatus(t, "http://"+entry+"/path")
		if code != 200 || body != "secure "+be.Listener.Addr().String()+" /s/path" {
			t.Fatalf("https backend: %d %q", code, body)
		}
		// Without the CA the certificate is not trusted: 502, saying why.
		untrusted := through(t, hops, "http", be.URL+"/s", "")
		code, body = getStatus(t, "http://"+untrusted+"/path")
		want := "TLS handshake with backend " + be.Listener.Addr().String() + " failed: tls: failed to verify certificate"
		if code != 502 || !strings.Contains(body, want) {
			t.Fatalf("untrusted https backend: %d %q, want 502 saying %q", code, body, want)
		}
		// An https:// outgoing URL whose server speaks plain HTTP.
		plainEntry := through(t, hops, "http", "https://"+plain.Listener.Addr().String()+"/", "")
		code, body = getStatus(t, "http://"+plainEntry+"/path")
		if want := "TLS handshake with backend " + plain.Listener.Addr().String() + " failed: "; code != 502 || !strings.Contains(body, want) {
			t.Fatalf("https:// outgoing URL to a plain HTTP server: %d %q, want 502 saying %q", code, body, want)
		}
	})
}

// TestHTTPSBackendSilentHandshake: an https:// backend that accepts the
// connection and never answers the TLS handshake gets the listener's
// timeout (504), as one that never answers a request does, rather than
// holding the client for as long as it waits.
func TestHTTPSBackendSilentHandshake(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	entry := through(t, 1, "http", "https://"+ln.Addr().String()+"/", `"timeout": "300ms"`)
	resp, err := testClient(t, 10*time.Second).Get("http://" + entry + "/x")
	if err != nil {
		t.Fatalf("https backend that never answers the handshake: %v, want 504 after the listener's timeout", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("https backend that never answers the handshake: %d, want 504", resp.StatusCode)
	}
}

// freeUDPAddr returns a loopback UDP address that was free a moment ago.
func freeUDPAddr(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().String()
}

// udpEcho answers every datagram with "echo " and the datagram.
func udpEcho(t *testing.T) string { return udpPrefixServer(t, "echo ") }

func TestUDPFlows(t *testing.T) {
	echo := udpEcho(t)
	forHops(t, func(t *testing.T, hops int) {
		entry := through(t, hops, "udp", "udp://"+echo, "")
		// Several clients, each its own flow, each datagram answered
		// whole: sizes up to 60000 bytes keep their boundaries.
		for c := range 3 {
			conn, err := net.Dial("udp", entry)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			buf := make([]byte, 65535)
			for i, size := range []int{1, 100, 1400, 9000, 60000} {
				msg := []byte(fmt.Sprintf("client %d datagram %d ", c, i))
				msg = append(msg, make([]byte, size)...)
				// UDP may lose a datagram: retry a few times.
				var got []byte
				for try := 0; try < 20 && got == nil; try++ {
					conn.Write(msg)
					conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
					if n, err := conn.Read(buf); err == nil {
						got = buf[:n]
					}
				}
				if string(got) != "echo "+string(msg) {
					t.Fatalf("client %d datagram %d (%d bytes): got %d bytes back", c, i, len(msg), len(got))
				}
			}
		}
	})
}

func TestUDPAccessList(t *testing.T) {
	echo := udpEcho(t)
	entry := through(t, 1, "udp", "udp://"+echo, `"ca": ["10.0.0.0/8"]`)
	conn, err := net.Dial("udp", entry)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("let me in"))
	conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if n, err := conn.Read(make([]byte, 100)); err == nil {
		t.Fatalf("a client outside the udp listener's ca got %d bytes back", n)
	}
}

// A udp:// listener on every address answers each client from the
// address the client sent to: a client's connected socket (most DNS
// resolvers, WireGuard's) drops a reply from any other, and on a host
// with several addresses the kernel would pick the source by its routes.
// On loopback, a datagram to 127.0.0.2 comes from 127.0.0.1, where a
// reply would leave from by default.
func TestUDPWildcardListenerAnswersFromAddressAsked(t *testing.T) {
	echo := udpEcho(t)
	g := startNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	for i, host := range []string{"0.0.0.0", ""} { // both give a dual-stack socket in Go, where IPv6 is on
		_, port, _ := net.SplitHostPort(freeUDPAddr(t))
		startNode(t, fmt.Sprintf(`{"west": {"nm": "L%d"}, "proxy": {"udp://%s": {"ea": "ws://%s", "ou": "udp://%s"}}}`,
			i, net.JoinHostPort(host, port), g.Addrs().Tunnel, echo), Options{})
		for _, to := range []string{"127.0.0.1", "127.0.0.2"} {
			conn, err := net.Dial("udp", net.JoinHostPort(to, port))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			buf := make([]byte, 100)
			var got string
			for try := 0; try < 10 && got == ""; try++ {
				conn.Write([]byte("where from"))
				conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
				if n, err := conn.Read(buf); err == nil {
					got = string(buf[:n])
				}
			}
			if got != "echo where from" {
				t.Errorf("listener on %q, client sending to %s: got %q, want the echo from the address it sent to", host, to, got)
			}
		}
	}
}

// A flow waiting out its idle time holds no datagram buffers, on either
// west: DNS clients send each query from a new port, so a forwarder
// keeps a minute's worth of one-shot flows, thousands, at once.
func TestUDPIdleFlowsHoldNoBuffers(t *testing.T) {
	const flows = 500
	echo := udpEcho(t)
	entry := through(t, 1, "udp", "udp://"+echo, "")
	query := func() bool {
		c, err := net.Dial("udp", entry)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		buf := make([]byte, 100)
		for try := 0; try < 10; try++ {
			c.Write([]byte("query"))
			c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if _, err := c.Read(buf); err == nil {
				return true
			}
		}
		return false
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	query() // warm the pools and the tunnel up
	before := heap()
	for i := range flows {
		if !query() {
			t.Fatalf("query %d: no answer", i)
		}
	}
	per := (int64(heap()) - int64(before)) / flows
	t.Logf("heap per idle udp flow, both wests: %d bytes", per)
	if per > 48<<10 {
		t.Errorf("each idle udp flow holds %d bytes of heap, both wests together; want < 48 KiB", per)
	}
}

// A udp:// listener keeps at most max_conns flows, each a tunnel stream
// held for a minute: one-shot clients, as DNS resolvers are, take the
// place of the flow idle longest rather than every stream of the tunnel.
// Here the tunnel carries 6 streams at most; 20 one-shot clients through
// a listener of 3 flows are each answered, and a tcp:// listener on the
// same tunnel still gets its stream.
func TestUDPFlowsBoundedByMaxConns(t *testing.T) {
	echo := udpEcho(t)
	tcpEcho := testutil.EchoServer(t)
	g := startNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0", "max_streams": 6}}`, Options{})
	udpAddr := freeUDPAddr(t)
	var pre prebound
	tcpAddr := pre.addr(t)
	startNode(t, fmt.Sprintf(`{"west": {"nm": "L"}, "proxy": {
		"udp://%s": {"ea": "ws://%s", "ou": "udp://%s", "max_conns": 3},
		"tcp://%s": {"ea": "ws://%s", "ou": "tcp://%s"}}}`,
		udpAddr, g.Addrs().Tunnel, echo, tcpAddr, g.Addrs().Tunnel, tcpEcho), Options{Listen: pre.listen})
	for i := range 20 {
		c, err := net.Dial("udp", udpAddr)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 100)
		var got string
		for try := 0; try < 10 && got == ""; try++ {
			c.Write([]byte("query"))
			c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if n, err := c.Read(buf); err == nil {
				got = string(buf[:n])
			}
		}
		c.Close()
		if got != "echo query" {
			t.Fatalf("one-shot client %d: got %q, want its echo", i, got)
		}
	}
	conn, err := net.DialTimeout("tcp", tcpAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte("still room\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 11)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "still room\n" {
		t.Fatalf("tcp through the tunnel beside 20 udp clients: %q, %v; want the echo", buf, err)
	}
}
