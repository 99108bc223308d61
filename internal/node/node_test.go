package node

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/config"
	"github.com/west-tunnel/west/internal/testutil"
)

// prebound hands nodes listeners the test opened itself, so that configs
// can name real ports before the nodes that serve them start.
type prebound struct {
	mu  sync.Mutex
	lns map[string]net.Listener
}

// addr opens a loopback listener for a node to be started later.
func (p *prebound) addr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lns == nil {
		p.lns = make(map[string]net.Listener)
	}
	p.lns[ln.Addr().String()] = ln
	return ln.Addr().String()
}

func (p *prebound) listen(network, addr string) (net.Listener, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ln, ok := p.lns[addr]; ok {
		delete(p.lns, addr)
		return ln, nil
	}
	return net.Listen(network, addr)
}

// startNode parses js, starts a node on it, and stops it when the test ends.
func startNode(t *testing.T, js string, opts Options) *Node {
	t.Helper()
	cfg, err := config.Parse([]byte(js))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, js)
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	n, err := New(cfg, opts)
	if err != nil {
		t.Fatalf("new node: %v", err)
	}
	if err := n.Start(); err != nil {
		t.Fatalf("start node: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("node run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("node did not stop")
		}
	})
	return n
}

// proxyURL is the base URL of the node's only proxy listener.
func proxyURL(t *testing.T, n *Node) string {
	t.Helper()
	addrs := n.Addrs().Proxies
	if len(addrs) != 1 {
		t.Fatalf("node has %d proxy listeners, want 1", len(addrs))
	}
	for _, a := range addrs {
		return "http://" + a
	}
	return ""
}

// backend is a loopback HTTP server exercising what must cross a tunnel.
func backend(t *testing.T) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend-Path", r.URL.Path)
		w.Header().Set("X-Backend-Query", r.URL.RawQuery)
		w.Header().Set("X-Backend-Host", r.Host)
		w.Header().Set("X-Backend-Method", r.Method)
		w.Header().Set("X-Backend-Custom", r.Header.Get("X-Custom"))
		w.Header().Set("X-Backend-Forwarded-For", r.Header.Get("X-Forwarded-For"))
		if s := r.URL.Query().Get("status"); s != "" {
			var code int
			fmt.Sscan(s, &code)
			w.WriteHeader(code)
		}
		// Echo the body, streaming, and report its digest in a trailer. Full
		// duplex: Go's HTTP/1 server otherwise stops reading the request
		// body once the response starts.
		http.NewResponseController(w).EnableFullDuplex()
		w.Header().Set("Trailer", "X-Body-Sha256")
		h := sha256.New()
		io.Copy(io.MultiWriter(w, h), r.Body)
		w.Header().Set("X-Body-Sha256", fmt.Sprintf("%x", h.Sum(nil)))
	})
	mux.HandleFunc("/x/chunks", func(w http.ResponseWriter, r *http.Request) {
		for i := range 3 {
			fmt.Fprintf(w, "chunk %d\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	})
	mux.HandleFunc("/x/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(3 * time.Second):
		}
	})
	mux.HandleFunc("/x/big", func(w http.ResponseWriter, r *http.Request) {
		var n int64
		fmt.Sscan(r.URL.Query().Get("n"), &n)
		w.Header().Set("Content-Length", fmt.Sprint(n))
		io.CopyN(w, &testutil.Pattern{}, n)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// pair starts use case 1 (L's listener sends through L's tunnel client to
// G, which dials the backend) and returns L's proxy base URL.
func case1(t *testing.T, backendURL string, extra string) (g, l *Node) {
	t.Helper()
	g = startNode(t, `{"west": {"nm": "case1.G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	l = startNode(t, fmt.Sprintf(`{
		"west": {"nm": "case1.L"},
		"proxy": {"http://127.0.0.1:0": {"ea": "ws://%s", %s "/px": {"ou": "%s/x"}}}
	}`, g.Addrs().Tunnel, extra, backendURL), Options{})
	return g, l
}

func TestCase1Requests(t *testing.T) {
	be := backend(t)
	_, l := case1(t, be.URL, "")
	base := proxyURL(t, l)

	for _, tc := range []struct {
		method, path, body string
		status             int
		wantPath, wantQ    string
	}{
		{"GET", "/px", "", 200, "/x", ""},
		{"GET", "/px/a/b?k=v&z=1", "", 200, "/x/a/b", "k=v&z=1"},
		{"POST", "/px/form", "name=west", 200, "/x/form", ""},
		{"PUT", "/px/put", "data", 200, "/x/put", ""},
		{"DELETE", "/px/del?status=204", "", 204, "/x/del", "status=204"},
		{"PATCH", "/px/p?status=201", "patch", 201, "/x/p", "status=201"},
		{"GET", "/px/missing?status=404", "", 404, "/x/missing", "status=404"},
		{"POST", "/px/err?status=500", "boom", 500, "/x/err", "status=500"},
	} {
		req, _ := http.NewRequest(tc.method, base+tc.path, strings.NewReader(tc.body))
		req.Header.Set("X-Custom", "custom-value")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.method, tc.path, err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		h := resp.Header
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s: status %d, want %d (%s)", tc.method, tc.path, resp.StatusCode, tc.status, got)
		}
		if h.Get("X-Backend-Path") != tc.wantPath || h.Get("X-Backend-Query") != tc.wantQ {
			t.Errorf("%s %s: backend saw path %q query %q, want %q %q", tc.method, tc.path, h.Get("X-Backend-Path"), h.Get("X-Backend-Query"), tc.wantPath, tc.wantQ)
		}
		if h.Get("X-Backend-Method") != tc.method || h.Get("X-Backend-Custom") != "custom-value" {
			t.Errorf("%s %s: method %q custom header %q did not cross", tc.method, tc.path, h.Get("X-Backend-Method"), h.Get("X-Backend-Custom"))
		}
		if host := strings.TrimPrefix(be.URL, "http://"); h.Get("X-Backend-Host") != host {
			t.Errorf("Host seen by backend %q, want the outgoing URL's %q", h.Get("X-Backend-Host"), host)
		}
		if h.Get("X-Backend-Forwarded-For") != "127.0.0.1" {
			t.Errorf("X-Forwarded-For %q, want 127.0.0.1", h.Get("X-Backend-Forwarded-For"))
		}
		if tc.status != 204 && string(got) != tc.body {
			t.Errorf("%s %s: body %q, want %q", tc.method, tc.path, got, tc.body)
		}
	}

	// Unmapped paths are the listener's own 404.
	resp, err := http.Get(base + "/elsewhere")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 404 || !strings.Contains(string(body), "no route") {
		t.Errorf("unmapped path: %d %q", resp.StatusCode, body)
	}
}

func TestStreamingResponseArrivesAsSent(t *testing.T) {
	be := backend(t)
	_, l := case1(t, be.URL, "")
	resp, err := http.Get(proxyURL(t, l) + "/px/chunks")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 64)
	start := time.Now()
	n, err := resp.Body.Read(buf)
	if err != nil || string(buf[:n]) != "chunk 0\n" {
		t.Fatalf("first chunk %q, %v", buf[:n], err)
	}
	// The backend sends the rest over 400 ms; the first chunk must not wait.
	if d := time.Since(start); d > 300*time.Millisecond {
		t.Fatalf("first chunk took %s: the body was buffered", d)
	}
	rest, _ := io.ReadAll(resp.Body)
	if string(rest) != "chunk 1\nchunk 2\n" {
		t.Fatalf("rest %q", rest)
	}
}

func TestLargeBodiesBothWays(t *testing.T) {
	if testing.Short() {
		t.Skip("100 MiB transfers skipped in -short")
	}
	be := backend(t)
	_, l := case1(t, be.URL, "")
	base := proxyURL(t, l)
	const size = 100 << 20

	// Upload 100 MiB; the backend echoes it and reports its digest in a
	// trailer, so both directions are checked without holding it in memory.
	want := sha256.New()
	io.CopyN(want, &testutil.Pattern{}, size)
	req, _ := http.NewRequest("POST", base+"/px/upload", io.LimitReader(&testutil.Pattern{}, size))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got := sha256.New()
	n, err := io.Copy(got, resp.Body)
	resp.Body.Close()
	if err != nil || n != size {
		t.Fatalf("echoed %d bytes, %v", n, err)
	}
	wantSum := fmt.Sprintf("%x", want.Sum(nil))
	if fmt.Sprintf("%x", got.Sum(nil)) != wantSum || resp.Trailer.Get("X-Body-Sha256") != wantSum {
		t.Fatalf("digest mismatch: echoed %x, trailer %s, want %s", got.Sum(nil), resp.Trailer.Get("X-Body-Sha256"), wantSum)
	}

	// Download 100 MiB with a Content-Length.
	resp, err = http.Get(fmt.Sprintf("%s/px/big?n=%d", base, size))
	if err != nil {
		t.Fatal(err)
	}
	got.Reset()
	n, err = io.Copy(got, resp.Body)
	resp.Body.Close()
	if err != nil || n != size || fmt.Sprintf("%x", got.Sum(nil)) != wantSum {
		t.Fatalf("download: %d bytes, %v, digest %x", n, err, got.Sum(nil))
	}
}

func TestConcurrentRequests(t *testing.T) {
	be := backend(t)
	_, l := case1(t, be.URL, "")
	base := proxyURL(t, l)
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := fmt.Sprintf("request %d %s", i, strings.Repeat("x", i*100))
			resp, err := http.Post(fmt.Sprintf("%s/px/c%d", base, i), "text/plain", strings.NewReader(body))
			if err != nil {
				errs <- err
				return
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(got) != body || resp.Header.Get("X-Backend-Path") != fmt.Sprintf("/x/c%d", i) {
				errs <- fmt.Errorf("request %d: got %d bytes (want %d) at %s, status %d", i, len(got), len(body), resp.Header.Get("X-Backend-Path"), resp.StatusCode)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestCase2ServerSideListener(t *testing.T) {
	be := backend(t)
	g := startNode(t, fmt.Sprintf(`{
		"west": {"nm": "case2.G"},
		"wsts": {"sp": "ws://127.0.0.1:0"},
		"proxy": {"http://127.0.0.1:0": {"en": "case2.L", "/pa": {"ou": "%s/a"}}}
	}`, be.URL), Options{})
	base := proxyURL(t, g)

	// No client yet: 503 at once, with the reason.
	start := time.Now()
	resp, err := http.Get(base + "/pa")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(body), "case2.L") {
		t.Fatalf("before the peer connects: %d %q, want 503 naming the peer", resp.StatusCode, body)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("503 took %s", d)
	}

	startNode(t, fmt.Sprintf(`{"west": {"nm": "case2.L"}, "wstc": {"ws://%s": {}}}`, g.Addrs().Tunnel), Options{})
	waitUp(t, g, "case2.L")
	resp, err = http.Post(base+"/pa/b?q=1", "text/plain", strings.NewReader("to L"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "to L" || resp.Header.Get("X-Backend-Path") != "/a/b" {
		t.Fatalf("through L: %d %q path %s", resp.StatusCode, body, resp.Header.Get("X-Backend-Path"))
	}
}

func waitUp(t *testing.T, server *Node, peer string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for server.Server().Session(peer) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("peer %s never connected", peer)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func get(t *testing.T, url string) (int, string, http.Header) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(body), resp.Header
}

// TestCase3Chain: L's client reaches L2's server through G, where G's own
// listener forwards to L2, a client of G.
func TestCase3Chain(t *testing.T) {
	be := backend(t)
	var pre prebound
	gListen := pre.addr(t)
	g := startNode(t, fmt.Sprintf(`{
		"west": {"nm": "case3.G"},
		"wsts": {"sp": "ws://127.0.0.1:0"},
		"proxy": {"http://%s": {"en": "case3.L2", "/by": {"ou": "%s/b"}}}
	}`, gListen, be.URL), Options{Listen: pre.listen})
	l := startNode(t, fmt.Sprintf(`{
		"west": {"nm": "case3.L"},
		"proxy": {"http://127.0.0.1:0": {"ea": "ws://%s", "/bx": {"ou": "http://%s/by"}}}
	}`, g.Addrs().Tunnel, gListen), Options{})
	startNode(t, fmt.Sprintf(`{"west": {"nm": "case3.L2"}, "wstc": {"ws://%s": {}}}`, g.Addrs().Tunnel), Options{})
	waitUp(t, g, "case3.L2")

	status, body, h := get(t, proxyURL(t, l)+"/bx/deep?z=9")
	if status != 200 || h.Get("X-Backend-Path") != "/b/deep" || h.Get("X-Backend-Query") != "z=9" {
		t.Fatalf("chain: %d %q path %s query %s", status, body, h.Get("X-Backend-Path"), h.Get("X-Backend-Query"))
	}
}

// TestCase4AnyOrder: G <- L <- L2, L being both a tunnel client of G and
// a tunnel server for L2, with the wests started in every order.
func TestCase4AnyOrder(t *testing.T) {
	be := backend(t)
	orders := [][]string{{"G", "L", "L2"}, {"L2", "L", "G"}, {"L", "L2", "G"}}
	for _, order := range orders {
		t.Run(strings.Join(order, "-"), func(t *testing.T) {
			var pre prebound
			gTunnel, gProxy := pre.addr(t), pre.addr(t)
			lTunnel, lProxy := pre.addr(t), pre.addr(t)
			configs := map[string]string{
				"G": fmt.Sprintf(`{"west": {"nm": "case4.G"}, "wsts": {"sp": "ws://%s"},
					"proxy": {"http://%s": {"en": "case4.L", "/baz": {"ou": "http://%s/ba"}}}}`, gTunnel, gProxy, lProxy),
				"L": fmt.Sprintf(`{"west": {"nm": "case4.L"}, "wsts": {"sp": "ws://%s"},
					"wstc": {"ws://%s": {}},
					"proxy": {"http://%s": {"en": "case4.L2", "/ba": {"ou": "%s/a"}}}}`, lTunnel, gTunnel, lProxy, be.URL),
				"L2": fmt.Sprintf(`{"west": {"nm": "case4.L2"}, "wstc": {"ws://%s": {}}}`, lTunnel),
			}
			nodes := map[string]*Node{}
			for _, name := range order {
				nodes[name] = startNode(t, configs[name], Options{Listen: pre.listen})
			}
			waitUp(t, nodes["G"], "case4.L")
			waitUp(t, nodes["L"], "case4.L2")
			status, body, h := get(t, "http://"+gProxy+"/baz/end")
			if status != 200 || h.Get("X-Backend-Path") != "/a/end" {
				t.Fatalf("two hops: %d %q path %s", status, body, h.Get("X-Backend-Path"))
			}
		})
	}
}

func TestFailuresAreClear(t *testing.T) {
	be := backend(t)
	// A port nothing listens on: the far side's dial is refused.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	refused := ln.Addr().String()
	ln.Close()

	g := startNode(t, `{"west": {"nm": "f.G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	l := startNode(t, fmt.Sprintf(`{
		"west": {"nm": "f.L"},
		"proxy": {"http://127.0.0.1:0": {"ea": "ws://%s", "timeout": "500ms",
			"/refused": {"ou": "http://%s/"},
			"/slow": {"ou": "%s/x/slow"}}}
	}`, g.Addrs().Tunnel, refused, be.URL), Options{})
	base := proxyURL(t, l)

	status, body, _ := get(t, base+"/refused")
	if status != 502 || !strings.Contains(body, "refused") {
		t.Errorf("refused target: %d %q, want 502 with the reason", status, body)
	}
	// Routes match the path as sent, so the 404 names it so: "no route
	// for /slow/x" would puzzle an operator who sees a route /slow.
	status, body, _ = get(t, base+"/%73low/x")
	if status != 404 || !strings.Contains(body, "no route for /%73low/x") {
		t.Errorf("a path no route matches as sent: %d %q, want 404 naming it as sent", status, body)
	}
	start := time.Now()
	status, body, _ = get(t, base+"/slow")
	if status != 504 || time.Since(start) > 2*time.Second || !strings.Contains(body, "timeout awaiting response headers (the listener's timeout is 500ms)") {
		t.Errorf("slow backend: %d %q after %s, want 504 after the 500ms timeout, saying so", status, body, time.Since(start))
	}

	// A tunnel server that is not there: 503 within a couple of seconds.
	ln, _ = net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	d := startNode(t, fmt.Sprintf(`{
		"west": {"nm": "f.D"},
		"proxy": {"http://127.0.0.1:0": {"ea": "ws://%s", "/p": {"ou": "%s/x"}}}
	}`, dead, be.URL), Options{})
	start = time.Now()
	status, body, _ = get(t, proxyURL(t, d)+"/p")
	if status != 503 || time.Since(start) > 4*time.Second || !strings.Contains(body, dead) {
		t.Errorf("dead tunnel server: %d %q after %s, want a prompt 503 naming it", status, body, time.Since(start))
	}
}

func TestLazyTunnel(t *testing.T) {
	be := backend(t)
	g := startNode(t, `{"west": {"nm": "lazy.G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	l := startNode(t, fmt.Sprintf(`{
		"west": {"nm": "lazy.L"},
		"wstc": {"ws://%[1]s": {"ee": "no"}},
		"proxy": {"http://127.0.0.1:0": {"ea": "ws://%[1]s", "/px": {"ou": "%[2]s/x"}}}
	}`, g.Addrs().Tunnel, be.URL), Options{})
	time.Sleep(100 * time.Millisecond) // an early client would have connected by now
	if g.Server().Session("lazy.L") != nil {
		t.Fatal("ee=no client connected before the first request")
	}
	status, body, _ := get(t, proxyURL(t, l)+"/px")
	if status != 200 || body != "" {
		t.Fatalf("first request through a lazy tunnel: %d %q", status, body)
	}
	if g.Server().Session("lazy.L") == nil {
		t.Fatal("no session after the first request")
	}
}

func TestListenConflictNamesAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg, err := config.Parse(fmt.Appendf(nil, `{"west": {"nm": "x"}, "wsts": {"sp": "ws://%s"}}`, ln.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	n, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = n.Start()
	if err == nil || !strings.Contains(err.Error(), ln.Addr().String()) || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("start on a taken port: %v, want an error naming %s", err, ln.Addr())
	}
}
