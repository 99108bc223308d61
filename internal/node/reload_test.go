package node

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/config"
	"github.com/west-tunnel/west/internal/testutil"
	"github.com/west-tunnel/west/internal/tunnel"
)

func mustParse(t *testing.T, js string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(js))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, js)
	}
	return cfg
}

func TestReload(t *testing.T) {
	be := backend(t)
	echo := testutil.EchoServer(t)
	g, _ := runNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	g2, _ := runNode(t, `{"west": {"nm": "G2"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	srv, srv2 := "ws://"+g.Addrs().Tunnel, "ws://"+g2.Addrs().Tunnel
	var pre prebound
	httpAddr, tcpAddr, newAddr := pre.addr(t), pre.addr(t), pre.addr(t)
	// newAddr is only reserved; release it so that the reload can bind it.
	pre.mu.Lock()
	pre.lns[newAddr].Close()
	delete(pre.lns, newAddr)
	pre.mu.Unlock()

	conf := func(routes, extra string) string {
		return fmt.Sprintf(`{"west": {"nm": "L"}, "proxy": {
			"http://%s": {"ea": %q, %s},
			"tcp://%s": {"ea": %q, "ou": "tcp://%s"}%s}}`, httpAddr, srv, routes, tcpAddr, srv, echo, extra)
	}
	l, _ := runNode(t, conf(fmt.Sprintf(`"/a": {"ou": "%s/x"}`, be.URL), ""), Options{Listen: pre.listen})
	waitClient(t, l, srv, tunnel.StateUp)
	if code, _ := getStatus(t, "http://"+httpAddr+"/a"); code != 200 {
		t.Fatalf("before reload: /a %d", code)
	}
	// A raw TCP connection that must live through every reload.
	tc, err := net.Dial("tcp", tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	echoLine(t, tc, "before")

	// Reroute /a to /b, add a listener and a tunnel client.
	next := conf(fmt.Sprintf(`"/b": {"ou": "%s/x"}`, be.URL),
		fmt.Sprintf(`, "http://%s": {"ea": %q, "/": {"ou": "%s/x"}}`, newAddr, srv2, be.URL))
	if err := l.Reload(mustParse(t, next)); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if code, _ := getStatus(t, "http://"+httpAddr+"/a"); code != 404 {
		t.Errorf("after reload: /a %d, want 404", code)
	}
	if code, _ := getStatus(t, "http://"+httpAddr+"/b"); code != 200 {
		t.Errorf("after reload: /b %d, want 200", code)
	}
	waitClient(t, l, srv2, tunnel.StateUp)
	if code, body := getStatus(t, "http://"+newAddr+"/new"); code != 200 {
		t.Errorf("added listener: %d %q", code, body)
	}
	echoLine(t, tc, "after the first reload")
	if c := l.Client(srv).Status().Connects; c != 1 {
		t.Errorf("the unchanged tunnel was redialled: %d connects", c)
	}

	// Refused: a change of the west object; nothing changes.
	bad := strings.Replace(next, `"nm": "L"`, `"nm": "L-renamed"`, 1)
	if err := l.Reload(mustParse(t, bad)); err == nil || !strings.Contains(err.Error(), "west") {
		t.Errorf("reload changing west.nm: %v, want a refusal naming west", err)
	}
	if code, _ := getStatus(t, "http://"+newAddr+"/new"); code != 200 {
		t.Errorf("after a refused reload: %d", code)
	}

	// Remove the added listener and its tunnel client.
	if err := l.Reload(mustParse(t, conf(fmt.Sprintf(`"/b": {"ou": "%s/x"}`, be.URL), ""))); err != nil {
		t.Fatalf("second reload: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for g2.Server().Session("L") != nil {
		if time.Now().After(deadline) {
			t.Fatal("the removed tunnel client is still connected")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := http.Get("http://" + newAddr + "/new"); err == nil {
		t.Error("the removed listener still answers")
	}
	echoLine(t, tc, "after the second reload")
	if _, ok := l.Addrs().Proxies["http://"+newAddr]; ok {
		t.Error("Addrs still lists the removed listener")
	}
}

func TestReloadTokens(t *testing.T) {
	t.Setenv("WEST_TEST_TOKEN_A", "token-a-0123456789abcdef")
	t.Setenv("WEST_TEST_TOKEN_B", "token-b-0123456789abcdef")
	var pre prebound
	addr := pre.addr(t)
	gconf := `{"west": {"nm": "G"}, "wsts": {"sp": "ws://%s", "tokens": {"A": "env:WEST_TEST_TOKEN_A"%s}}}`
	g, _ := runNode(t, fmt.Sprintf(gconf, addr, ""), Options{Listen: pre.listen})
	g.gate.Load().failDelay = 10 * time.Millisecond
	srv := "ws://" + addr
	b, _ := runNode(t, fmt.Sprintf(`{"west": {"nm": "B"}, "wstc": {%q: {"token": "env:WEST_TEST_TOKEN_B"}}}`, srv), Options{})
	waitClient(t, b, srv, tunnel.StateBackoff)
	// Admitting B takes a reload, not a restart.
	if err := g.Reload(mustParse(t, fmt.Sprintf(gconf, addr, `, "B": "env:WEST_TEST_TOKEN_B"`))); err != nil {
		t.Fatalf("reload with B's token: %v", err)
	}
	waitClient(t, b, srv, tunnel.StateUp)

	// Rotating a token takes a reload of the same file: C's token file
	// changes under an unchanged config.
	tokenFile := filepath.Join(t.TempDir(), "c.token")
	if err := os.WriteFile(tokenFile, []byte("old-token-0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	withC := fmt.Sprintf(gconf, addr, fmt.Sprintf(`, "B": "env:WEST_TEST_TOKEN_B", "C": "file:%s"`, tokenFile))
	if err := g.Reload(mustParse(t, withC)); err != nil {
		t.Fatalf("reload with C: %v", err)
	}
	t.Setenv("WEST_TEST_TOKEN_C", "new-token-0123456789abcdef")
	c, _ := runNode(t, fmt.Sprintf(`{"west": {"nm": "C"}, "wstc": {%q: {"token": "env:WEST_TEST_TOKEN_C"}}}`, srv), Options{})
	waitClient(t, c, srv, tunnel.StateBackoff)
	if err := os.WriteFile(tokenFile, []byte("new-token-0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := g.Reload(mustParse(t, withC)); err != nil {
		t.Fatalf("reload after rotating C's token: %v", err)
	}
	waitClient(t, c, srv, tunnel.StateUp)
}

// TestReloadUnsetVariableSaysRestart: a reload naming a variable that
// west's environment lacks is refused, saying that the environment is
// read at start only, so that one set since (in a systemd unit's
// EnvironmentFile) takes a restart.
func TestReloadUnsetVariableSaysRestart(t *testing.T) {
	t.Setenv("WEST_TEST_TOKEN_A", "token-a-0123456789abcdef")
	gconf := `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0", "tokens": {"A": "env:WEST_TEST_TOKEN_A"%s}}}`
	g, _ := runNode(t, fmt.Sprintf(gconf, ""), Options{})
	<-g.Running()
	err := g.Reload(mustParse(t, fmt.Sprintf(gconf, `, "B": "env:WEST_TEST_TOKEN_NEVER_SET"`)))
	if err == nil || !strings.Contains(err.Error(), `wsts.tokens["B"]: environment variable WEST_TEST_TOKEN_NEVER_SET is not set`) ||
		!strings.Contains(err.Error(), "restart") {
		t.Errorf("reload naming an unset variable: %v; want it refused, naming the variable and saying to restart", err)
	}
}

func TestReloadFileThroughControlPort(t *testing.T) {
	be := backend(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "west.json")
	write := func(js string) {
		if err := os.WriteFile(file, []byte(js), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var pre prebound
	cp, listen := pre.addr(t), pre.addr(t)
	conf := func(path string) string {
		return fmt.Sprintf(`{"west": {"nm": "G", "cp": %q}, "wsts": {"sp": "ws://127.0.0.1:0"},
			"proxy": {"http://%s": {"en": "L", %q: {"ou": "%s/x"}}}}`, cp, listen, path, be.URL)
	}
	runFromFile(t, file, conf("/one"), &pre)

	post := func(header ...string) (int, string) {
		req, err := http.NewRequest("POST", "http://"+cp+"/api/reload", nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return resp.StatusCode, string(b)
	}
	write(conf("/two"))
	if code, body := post(); code != 200 {
		t.Fatalf("POST /api/reload: %d %q", code, body)
	}
	if code, _ := getStatus(t, "http://"+listen+"/two"); code != 200 {
		t.Errorf("new route after reload: %d", code)
	}
	if _, text := getStatus(t, "http://"+cp+"/"); !strings.Contains(text, `"/two"`) || strings.Contains(text, `"/one"`) {
		t.Errorf("the control port still shows the old configuration:\n%.2000s", text)
	}
	write(`{"west": {"nm": "G", "cp": 5}}`)
	code, body := post()
	if code != 422 || !strings.Contains(body, "west.cp") {
		t.Errorf("reload of a bad file: %d %q, want 422 naming west.cp", code, body)
	}
	if code, _ := getStatus(t, "http://"+listen+"/two"); code != 200 {
		t.Errorf("after a rejected reload: %d", code)
	}
	if code, _ := getStatus(t, "http://"+cp+"/api/reload"); code != 405 {
		t.Errorf("GET /api/reload: %d, want 405", code)
	}

	// A page of another site, open in a browser on a host the control
	// port trusts, cannot make the node reload.
	write(conf("/three"))
	for _, h := range [][]string{
		{"Sec-Fetch-Site", "cross-site"},
		{"Origin", "http://evil.example"},
	} {
		if code, body := post(h...); code != 403 {
			t.Errorf("POST /api/reload with %s: %s: %d %q, want 403", h[0], h[1], code, body)
		}
	}
	if code, _ := getStatus(t, "http://"+listen+"/three"); code != 404 {
		t.Errorf("a cross-site POST reloaded the node: /three answers %d", code)
	}
	if code, body := post("Sec-Fetch-Site", "same-origin"); code != 200 {
		t.Errorf("POST /api/reload from the same origin: %d %q, want 200", code, body)
	}
}

// TestReloadRevokesConnectedPeers: a reload that takes a peer's token
// away, or leaves its address or name out of wsts.ca, ends the tunnel the
// peer already has, not only its next handshake: a revoked peer loses its
// access at once. Peers still admitted keep their tunnels.
func TestReloadRevokesConnectedPeers(t *testing.T) {
	t.Setenv("WEST_TEST_TOKEN_A", "token-a-0123456789abcdef")
	t.Setenv("WEST_TEST_TOKEN_B", "token-b-0123456789abcdef")
	var pre prebound
	addr := pre.addr(t)
	gconf := `{"west": {"nm": "G"}, "wsts": {"sp": "ws://%s", %s"tokens": {"A": "env:WEST_TEST_TOKEN_A"%s}}}`
	g, _ := runNode(t, fmt.Sprintf(gconf, addr, "", `, "B": "env:WEST_TEST_TOKEN_B"`), Options{Listen: pre.listen})
	g.gate.Load().failDelay = 10 * time.Millisecond
	srv := "ws://" + addr
	peer := func(name string) *Node {
		n, _ := runNode(t, fmt.Sprintf(`{"west": {"nm": %q}, "wstc": {%q: {"token": "env:WEST_TEST_TOKEN_%s"}}}`, name, srv, name), Options{})
		waitClient(t, n, srv, tunnel.StateUp)
		return n
	}
	a, b := peer("A"), peer("B")

	gone := func(name string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for g.Server().Session(name) != nil {
			if time.Now().After(deadline) {
				t.Fatalf("peer %s is still connected after the reload revoked it", name)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// B's token is taken away.
	if err := g.Reload(mustParse(t, fmt.Sprintf(gconf, addr, "", ""))); err != nil {
		t.Fatalf("reload without B's token: %v", err)
	}
	gone("B")
	// B is told why, before it redials (a quarter second later at least).
	if st := waitClient(t, b, srv, tunnel.StateBackoff); st.LastError == nil || !strings.Contains(st.LastError.Error(), `no longer admitted: peer name "B": missing or wrong token`) {
		t.Errorf("B's last error %v, want the server's reason", st.LastError)
	}
	if st := a.Client(srv).Status(); st.State != tunnel.StateUp || st.Connects != 1 {
		t.Errorf("A, still admitted, lost its tunnel: %s after %d connects", st.State, st.Connects)
	}

	// wsts.ca no longer holds A's address.
	if err := g.Reload(mustParse(t, fmt.Sprintf(gconf, addr, `"ca": ["192.0.2.1"], `, ""))); err != nil {
		t.Fatalf("reload with a ca leaving A out: %v", err)
	}
	gone("A")
	waitClient(t, a, srv, tunnel.StateBackoff)
}

// TestReloadRotatesClientToken: a tunnel client's token is read anew on a
// reload even when its wstc entry is unchanged, so that a token rotated
// in its file (on both sides, each then reloaded) is the one presented
// at the next handshake, and the tunnel comes back.
func TestReloadRotatesClientToken(t *testing.T) {
	dir := t.TempDir()
	gTok, lTok := filepath.Join(dir, "g-l.token"), filepath.Join(dir, "l.token")
	write := func(file, tok string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(gTok, "old-token-0123456789abcdef")
	write(lTok, "old-token-0123456789abcdef")
	var pre prebound
	addr := pre.addr(t)
	gconf := fmt.Sprintf(`{"west": {"nm": "G"}, "wsts": {"sp": "ws://%s", "tokens": {"L": "file:%s"}}}`, addr, gTok)
	g, _ := runNode(t, gconf, Options{Listen: pre.listen})
	g.gate.Load().failDelay = 10 * time.Millisecond
	srv := "ws://" + addr
	lconf := fmt.Sprintf(`{"west": {"nm": "L"}, "wstc": {%q: {"token": "file:%s"}}}`, srv, lTok)
	l, _ := runNode(t, lconf, Options{})
	waitClient(t, l, srv, tunnel.StateUp)

	write(gTok, "new-token-0123456789abcdef")
	write(lTok, "new-token-0123456789abcdef")
	if err := l.Reload(mustParse(t, lconf)); err != nil {
		t.Fatalf("reload of L: %v", err)
	}
	if st := l.Client(srv).Status(); st.State != tunnel.StateUp || st.Connects != 1 {
		t.Errorf("reading L's token anew disturbed its tunnel: %s after %d connects", st.State, st.Connects)
	}
	if err := g.Reload(mustParse(t, gconf)); err != nil {
		t.Fatalf("reload of G: %v", err)
	}
	// G disconnects L, whose tunnel was admitted by the old token; L
	// must come back with the new one.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := l.Client(srv).Status()
		if st.State == tunnel.StateUp && st.Connects >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("L did not come back with its rotated token: %s after %d connects, last error %v", st.State, st.Connects, st.LastError)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestReloadRerouteFreesOldStreams: requests in flight when a reload
// reroutes their HTTP listener finish by the old routes, and the tunnel
// streams they used are closed then, not kept in the old handler's pool,
// which nothing will draw from again: each reload under load would
// otherwise hold a stream, a far-side goroutine and a backend connection
// per request in flight, for the pool's 90 s idle timeout.
func TestReloadRerouteFreesOldStreams(t *testing.T) {
	const inFlight = 8
	arrived := make(chan struct{}, inFlight)
	release := make(chan struct{})
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
		io.WriteString(w, "ok")
	}))
	defer be.Close()
	defer close(release)
	g, _ := runNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	srv := "ws://" + g.Addrs().Tunnel
	var pre prebound
	listen := pre.addr(t)
	conf := func(path string) string {
		return fmt.Sprintf(`{"west": {"nm": "L"}, "proxy": {"http://%s": {"ea": %q, %q: {"ou": "%s/x"}}}}`, listen, srv, path, be.URL)
	}
	l, _ := runNode(t, conf("/a"), Options{Listen: pre.listen})
	waitClient(t, l, srv, tunnel.StateUp)

	done := make(chan getResult, inFlight)
	for range inFlight {
		go func() { done <- <-getLater("http://" + listen + "/a") }()
	}
	for range inFlight {
		<-arrived
	}
	if err := l.Reload(mustParse(t, conf("/b"))); err != nil {
		t.Fatal(err)
	}
	for range inFlight {
		release <- struct{}{}
	}
	for range inFlight {
		if r := <-done; r.err != nil || r.code != 200 {
			t.Fatalf("a request in flight across the reload: %d %v", r.code, r.err)
		}
	}
	sess := l.Client(srv).Status().Session
	deadline := time.Now().Add(5 * time.Second)
	for sess.Stats().StreamsOpen.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d tunnel streams still open after the old routes' requests ended", sess.Stats().StreamsOpen.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestShutdownWaitsForRemovedListener: a request in flight on a listener
// that a reload removed is still drained by a shutdown that follows
// within shutdown_grace, as it would be had the listener stayed: the
// shutdown does not close the tunnel under it.
func TestShutdownWaitsForRemovedListener(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
		io.WriteString(w, "ok")
	}))
	defer be.Close()
	g, _ := runNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	srv := "ws://" + g.Addrs().Tunnel
	var pre prebound
	listen := pre.addr(t)
	l, stop := runNode(t, fmt.Sprintf(`{"west": {"nm": "L"}, "proxy": {"http://%s": {"ea": %q, "/": {"ou": "%s/x"}}}}`, listen, srv, be.URL),
		Options{Listen: pre.listen})
	waitClient(t, l, srv, tunnel.StateUp)
	res := getLater("http://" + listen + "/slow")
	<-arrived
	if err := l.Reload(mustParse(t, fmt.Sprintf(`{"west": {"nm": "L"}, "wstc": {%q: {}}}`, srv))); err != nil {
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	select {
	case <-stopped:
		t.Error("the shutdown ended while a request on the removed listener was in flight")
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	if r := <-res; r.err != nil || r.code != 200 {
		t.Errorf("request in flight on the removed listener across a shutdown: %d %v", r.code, r.err)
	}
	<-stopped
}

// TestReloadBindFailureIsNotARefusal: a reload whose new listener cannot
// bind its port still applies the rest, and says so: the control port
// must not answer that the running configuration stays, when the routes
// it changed are already in force.
func TestReloadBindFailureIsNotARefusal(t *testing.T) {
	be := backend(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	file := filepath.Join(t.TempDir(), "west.json")
	var pre prebound
	cp, listen := pre.addr(t), pre.addr(t)
	conf := func(path, extra string) string {
		return fmt.Sprintf(`{"west": {"nm": "G", "cp": %q}, "wsts": {"sp": "ws://127.0.0.1:0"},
			"proxy": {"http://%s": {"en": "L", %q: {"ou": "%s/x"}}%s}}`, cp, listen, path, be.URL, extra)
	}
	runFromFile(t, file, conf("/one", ""), &pre)

	next := conf("/two", fmt.Sprintf(`, "http://%s": {"en": "L", "/": {"ou": "%s/x"}}`, busy.Addr(), be.URL))
	if err := os.WriteFile(file, []byte(next), 0o600); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post("http://"+cp+"/api/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if code, _ := getStatus(t, "http://"+listen+"/two"); code != 200 {
		t.Fatalf("the new route is not in force: %d", code)
	}
	if resp.StatusCode == 200 || resp.StatusCode == 422 || strings.Contains(string(body), "configuration stays") ||
		!strings.Contains(string(body), busy.Addr().String()) {
		t.Errorf("POST /api/reload with a port in use: %d %q; want an error naming %s that does not call the reload refused",
			resp.StatusCode, body, busy.Addr())
	}
}

// TestReloadBindFailureIsLoggedAsOne: the reload's log line counts a
// listener that could not bind as failed, not as started.
func TestReloadBindFailureIsLoggedAsOne(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	var log testutil.Buffer
	n, _ := runNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`,
		Options{Logger: slog.New(slog.NewTextHandler(&log, nil))})
	startNode(t, fmt.Sprintf(`{"west": {"nm": "L"}, "wstc": {"ws://%s": {}}}`, n.Addrs().Tunnel), Options{})
	waitUp(t, n, "L") // and n runs: it may reload
	next := fmt.Sprintf(`{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"}, "proxy": {
		"http://127.0.0.1:0": {"en": "L", "/": {"ou": "http://127.0.0.1:9/"}},
		"http://%s": {"en": "L", "/": {"ou": "http://127.0.0.1:9/"}}}}`, busy.Addr())
	var partial *PartialError
	if err := n.Reload(mustParse(t, next)); !errors.As(err, &partial) {
		t.Fatalf("reload with a port in use: %v, want a PartialError", err)
	}
	if !strings.Contains(log.String(), "listeners_started=1 listeners_failed=1 ") {
		t.Errorf("the reload's log does not count one listener started and one failed:\n%s", log.String())
	}
}

// TestReloadRenamedClientRetires: a tunnel client whose name a reload
// changes comes up under the new name beside the old tunnel, which
// retires once the request it carries has ended, rather than cutting
// that request: the server keeps the two names apart.
func TestReloadRenamedClientRetires(t *testing.T) {
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/x/slow" {
			arrived <- struct{}{}
			<-release
		}
		io.WriteString(w, "ok")
	}))
	defer be.Close()
	g, _ := runNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	srv := "ws://" + g.Addrs().Tunnel
	var pre prebound
	listen := pre.addr(t)
	conf := func(name string) string {
		return fmt.Sprintf(`{"west": {"nm": "L"}, "wstc": {%q: {"nm": %q}}, "proxy": {"http://%s": {"ea": %q, "/": {"ou": "%s/x"}}}}`,
			srv, name, listen, srv, be.URL)
	}
	l, _ := runNode(t, conf("L-old"), Options{Listen: pre.listen})
	waitUp(t, g, "L-old")
	res := getLater("http://" + listen + "/slow")
	<-arrived
	if err := l.Reload(mustParse(t, conf("L-new"))); err != nil {
		t.Fatal(err)
	}
	waitUp(t, g, "L-new")
	if code, body := getStatus(t, "http://"+listen+"/fast"); code != 200 {
		t.Errorf("a request through the renamed tunnel: %d %q", code, body)
	}
	close(release)
	if r := <-res; r.err != nil || r.code != 200 {
		t.Errorf("the request in flight on the old tunnel: %d %v", r.code, r.err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for g.Server().Session("L-old") != nil {
		if time.Now().After(deadline) {
			t.Fatal("the old tunnel did not retire once its request had ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestReloadDialAllowAndControlCA: west.dial_allow and west.control_ca,
// unlike the rest of the west object, take a reload: a target taken out
// of dial_allow is refused to the next stream, and an address taken out
// of control_ca to the next request to the control port.
func TestReloadDialAllowAndControlCA(t *testing.T) {
	echo := testutil.EchoServer(t)
	gconf := `{"west": {"nm": "G", "cp": "127.0.0.1:0", "dial_allow": [%q], "control_ca": [%q]}, "wsts": {"sp": "ws://127.0.0.1:0"}}`
	g, _ := runNode(t, fmt.Sprintf(gconf, echo, "127.0.0.0/8"), Options{})
	var pre prebound
	entry := pre.addr(t)
	runNode(t, fmt.Sprintf(`{"west": {"nm": "L"}, "proxy": {"tcp://%s": {"ea": "ws://%s", "ou": "tcp://%s"}}}`,
		entry, g.Addrs().Tunnel, echo), Options{Listen: pre.listen})
	waitUp(t, g, "L")
	echoes := func() bool {
		c, err := net.DialTimeout("tcp", entry, 5*time.Second)
		if err != nil {
			// L resets a connection whose target the far side refuses;
			// on a busy machine the reset can come before the dial has
			// returned, which then reports it.
			t.Logf("dial: %v", err)
			return false
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("ping\n"))
		buf := make([]byte, 5)
		_, err = io.ReadFull(c, buf)
		return err == nil && string(buf) == "ping\n"
	}
	control := "http://" + g.Addrs().Control + "/healthz"
	client := &http.Client{Timeout: 5 * time.Second}
	if !echoes() {
		t.Fatal("no echo through a target dial_allow admits")
	}
	if code, _ := fetch(t, client, control); code != http.StatusOK {
		t.Fatalf("control port from inside control_ca: %d", code)
	}

	if err := g.Reload(mustParse(t, fmt.Sprintf(gconf, "192.0.2.1:7", "192.0.2.0/24"))); err != nil {
		t.Fatalf("reload narrowing dial_allow and control_ca: %v", err)
	}
	if echoes() {
		t.Error("a target taken out of dial_allow by a reload is still dialled")
	}
	if code, _ := fetch(t, client, control); code != http.StatusForbidden {
		t.Errorf("control port from an address taken out of control_ca: %d, want 403", code)
	}
}

// udpPrefixServer answers each datagram with prefix and the datagram.
func udpPrefixServer(t *testing.T, prefix string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte(prefix), buf[:n]...), addr)
		}
	}()
	return pc.LocalAddr().String()
}

// TestReloadReroutesTCPAndUDPInPlace: a reload that changes a tcp:// or
// udp:// listener's ou serves new connections and flows by it on the same
// socket; TCP connections open stay with the old target past
// shutdown_grace, while UDP flows end, so that the next datagram of a
// client goes to the new target. One that narrows ca closes the open ones
// it now refuses.
func TestReloadReroutesTCPAndUDPInPlace(t *testing.T) {
	tcpA, tcpB := testutil.LineServer(t, "A "), testutil.LineServer(t, "B ")
	udpA, udpB := udpPrefixServer(t, "A "), udpPrefixServer(t, "B ")
	g, _ := runNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	var pre prebound
	tcpAddr, udpAddr := pre.addr(t), freeUDPAddr(t)
	lconf := func(tcpOU, udpOU, ca string) string {
		return fmt.Sprintf(`{"west": {"nm": "L"}, "proxy": {
			"tcp://%s": {"ea": "ws://%s", "ou": "tcp://%s"%s},
			"udp://%s": {"ea": "ws://%s", "ou": "udp://%s"%s}}}`,
			tcpAddr, g.Addrs().Tunnel, tcpOU, ca, udpAddr, g.Addrs().Tunnel, udpOU, ca)
	}
	l, _ := runNode(t, lconf(tcpA, udpA, ""), Options{Listen: pre.listen, ShutdownGrace: 200 * time.Millisecond})
	waitUp(t, g, "L")

	dialUDP := func() net.Conn {
		c, err := net.Dial("udp", udpAddr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	c1, r1 := dialLine(t, tcpAddr)
	u1 := dialUDP()
	if got := askLine(c1, r1, 5*time.Second); got != "A hi\n" {
		t.Fatalf("before the reload, tcp: %q", got)
	}
	if got := askUDP(u1); got != "A hi" {
		t.Fatalf("before the reload, udp: %q", got)
	}

	if err := l.Reload(mustParse(t, lconf(tcpB, udpB, ""))); err != nil {
		t.Fatalf("reload to the B targets: %v", err)
	}
	time.Sleep(400 * time.Millisecond) // twice shutdown_grace
	if got := askLine(c1, r1, 5*time.Second); got != "A hi\n" {
		t.Errorf("the tcp connection open at the reload: %q, want it still with A", got)
	}
	if got := askUDP(u1); got != "B hi" {
		t.Errorf("the udp client whose flow was open at the reload: %q, want B (a client that keeps sending would never leave A)", got)
	}
	c2, r2 := dialLine(t, tcpAddr)
	if got := askLine(c2, r2, 5*time.Second); got != "B hi\n" {
		t.Errorf("a tcp connection after the reload: %q, want B", got)
	}
	if got := askUDP(dialUDP()); got != "B hi" {
		t.Errorf("a udp flow after the reload: %q, want B", got)
	}

	if err := l.Reload(mustParse(t, lconf(tcpB, udpB, `, "ca": ["192.0.2.0/24"]`))); err != nil {
		t.Fatalf("reload narrowing ca: %v", err)
	}
	// The refused connection is closed as the reload ends, by its pipe,
	// beside Reload's return: wait for the close rather than race a line
	// through before it.
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, err := r2.ReadString('\n'); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("a tcp connection from outside the narrowed ca: %q, %v; want it closed", line, err)
	}
	if got := askUDP(u1); got != "no answer" {
		t.Errorf("a udp flow from outside the narrowed ca: %q, want no answer", got)
	}
}

// runFromFile writes js to file and runs G from it, as west -c file does,
// so that a reload reads the file; then L, a tunnel client of G's.
func runFromFile(t *testing.T, file, js string, pre *prebound) *Node {
	t.Helper()
	if err := os.WriteFile(file, []byte(js), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(cfg, Options{Logger: testLogger(t), Listen: pre.listen, ConfigPath: file})
	if err != nil {
		t.Fatal(err)
	}
	runStarted(t, g)
	runNode(t, fmt.Sprintf(`{"west": {"nm": "L"}, "wstc": {"ws://%s": {}}}`, g.Addrs().Tunnel), Options{})
	waitUp(t, g, "L")
	return g
}

// TestReloadForgetsRemovedListenersMetrics: the series of a listener a
// reload removed leave /metrics once its drain is over; those of a
// listener kept stay.
func TestReloadForgetsRemovedListenersMetrics(t *testing.T) {
	be := backend(t)
	echo := testutil.EchoServer(t)
	var pre prebound
	cp, keep, gone, tcpGone := pre.addr(t), pre.addr(t), pre.addr(t), pre.addr(t)
	conf := func(extra string) string {
		return fmt.Sprintf(`{"west": {"nm": "G", "cp": %q}, "wsts": {"sp": "ws://127.0.0.1:0"}, "proxy": {
			"http://%s": {"en": "L", "/": {"ou": "%s/x"}}%s}}`, cp, keep, be.URL, extra)
	}
	g, _ := runNode(t, conf(fmt.Sprintf(`,
			"http://%s": {"en": "L", "/": {"ou": "%s/x"}},
			"tcp://%s": {"en": "L", "ou": "tcp://%s"}`, gone, be.URL, tcpGone, echo)), Options{Listen: pre.listen})
	runNode(t, fmt.Sprintf(`{"west": {"nm": "L"}, "wstc": {"ws://%s": {}}}`, g.Addrs().Tunnel), Options{})
	waitUp(t, g, "L")
	for _, addr := range []string{keep, gone} {
		if code, _ := getStatus(t, "http://"+addr+"/"); code != 200 {
			t.Fatalf("GET through %s: %d", addr, code)
		}
	}
	c, err := net.Dial("tcp", tcpGone)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("x"))
	io.ReadFull(c, make([]byte, 1))
	c.Close()
	client := &http.Client{Timeout: 5 * time.Second}
	series := func(listener string) int {
		_, body := fetch(t, client, "http://"+cp+"/metrics")
		return strings.Count(body, `listener="`+listener+`"`)
	}
	waitFor(t, "the tcp connection's series", func() bool { return series("tcp://"+tcpGone) > 0 })
	if series("http://"+gone) == 0 || series("http://"+keep) == 0 {
		t.Fatal("no series for the http listeners before the reload")
	}

	if err := g.Reload(mustParse(t, conf(""))); err != nil {
		t.Fatalf("reload removing two listeners: %v", err)
	}
	waitFor(t, "the removed listeners' series to go", func() bool {
		return series("http://"+gone) == 0 && series("tcp://"+tcpGone) == 0
	})
	if series("http://"+keep) == 0 {
		t.Error("the kept listener's series went too")
	}
}

// TestReloadRaisesMaxConnsInPlace: a reload that changes a tcp://
// listener's max_conns applies it to the socket it has: a client waiting
// in the backlog for the single slot is served once the bound is raised,
// and the connection open stays, past shutdown_grace.
func TestReloadRaisesMaxConnsInPlace(t *testing.T) {
	echo := testutil.LineServer(t, "")
	g, _ := runNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	var pre prebound
	entry := pre.addr(t)
	conf := func(max int) string {
		return fmt.Sprintf(`{"west": {"nm": "L"}, "proxy": {"tcp://%s": {"ea": "ws://%s", "ou": "tcp://%s", "max_conns": %d}}}`,
			entry, g.Addrs().Tunnel, echo, max)
	}
	l, _ := runNode(t, conf(1), Options{Listen: pre.listen, ShutdownGrace: 200 * time.Millisecond})
	waitUp(t, g, "L")
	c1, r1 := dialLine(t, entry)
	if got := askLine(c1, r1, 5*time.Second); got != "hi\n" {
		t.Fatalf("first connection: %q", got)
	}
	c2, r2 := dialLine(t, entry)
	if got := askLine(c2, r2, 300*time.Millisecond); got == "hi\n" {
		t.Fatal("a second connection was served beyond max_conns 1")
	}

	if err := l.Reload(mustParse(t, conf(2))); err != nil {
		t.Fatalf("reload raising max_conns: %v", err)
	}
	c2.SetDeadline(time.Now().Add(5 * time.Second))
	if line, err := r2.ReadString('\n'); err != nil || line != "hi\n" {
		t.Errorf("the waiting connection after max_conns was raised: %q, %v; want its echo", line, err)
	}
	time.Sleep(400 * time.Millisecond) // twice shutdown_grace
	if got := askLine(c1, r1, 5*time.Second); got != "hi\n" {
		t.Errorf("the connection open at the reload: %q, want it kept", got)
	}
}

// proxyListener returns n's proxy listener named name, nil if none.
func proxyListener(n *Node, name string) *listener {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, l := range n.servers {
		if l.role == "proxy" && l.name == name {
			return l
		}
	}
	return nil
}

// TestReloadAddsAndRemovesMaxConnsInPlace: a reload that gives a tcp://
// listener a max_conns it had not keeps its socket and the connection
// open, which counts against the new bound, so that a new client waits;
// a reload that takes the bound away lets that client in.
func TestReloadAddsAndRemovesMaxConnsInPlace(t *testing.T) {
	echo := testutil.LineServer(t, "")
	g, _ := runNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	var pre prebound
	entry := pre.addr(t)
	name := "tcp://" + entry
	conf := func(limit string) string {
		return fmt.Sprintf(`{"west": {"nm": "L"}, "proxy": {%q: {"ea": "ws://%s", "ou": "tcp://%s"%s}}}`,
			name, g.Addrs().Tunnel, echo, limit)
	}
	var logs testutil.Buffer
	l, _ := runNode(t, conf(""), Options{Listen: pre.listen, ShutdownGrace: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	waitUp(t, g, "L")
	lst := proxyListener(l, name)
	c1, r1 := dialLine(t, entry)
	if got := askLine(c1, r1, 5*time.Second); got != "hi\n" {
		t.Fatalf("first connection: %q", got)
	}

	if err := l.Reload(mustParse(t, conf(`, "max_conns": 1`))); err != nil {
		t.Fatalf("reload adding max_conns: %v", err)
	}
	if proxyListener(l, name) != lst || l.Addrs().Proxies[name] != entry {
		t.Fatal("adding max_conns replaced the listener")
	}
	c2, r2 := dialLine(t, entry)
	if got := askLine(c2, r2, 300*time.Millisecond); got == "hi\n" {
		t.Fatal("a second connection was served beside the one open, beyond the added max_conns 1")
	}
	time.Sleep(400 * time.Millisecond) // twice shutdown_grace
	if got := askLine(c1, r1, 5*time.Second); got != "hi\n" {
		t.Errorf("the connection open when max_conns was added: %q, want it kept", got)
	}

	if err := l.Reload(mustParse(t, conf(""))); err != nil {
		t.Fatalf("reload removing max_conns: %v", err)
	}
	if proxyListener(l, name) != lst || l.Addrs().Proxies[name] != entry {
		t.Fatal("removing max_conns replaced the listener")
	}
	c2.SetDeadline(time.Now().Add(5 * time.Second))
	if line, err := r2.ReadString('\n'); err != nil || line != "hi\n" {
		t.Errorf("the waiting connection after max_conns was removed: %q, %v; want its echo", line, err)
	}
	if got := askLine(c1, r1, 5*time.Second); got != "hi\n" {
		t.Errorf("the first connection after max_conns was removed: %q, want it kept", got)
	}
	if strings.Contains(logs.String(), "stopping listener") {
		t.Errorf("a reload stopped the listener:\n%s", logs.String())
	}
}

// TestReloadForgetsRemovedRoutesMetrics: the series of a route that a
// reload took from a kept http:// listener leave /metrics once the
// requests its old handler was serving have ended, while the other
// routes' stay; a route added back counts anew, and one added back while
// the old handler still served it keeps its series.
func TestReloadForgetsRemovedRoutesMetrics(t *testing.T) {
	// A grace far longer than the waits below: the series must go when
	// the old handler is done, not when the grace is.
	rig := newRoutesRig(t, 20*time.Second, "/a", "/b")
	g, name, cp, entry, client, conf := rig.g, rig.name, rig.cp, rig.entry, rig.client, rig.conf
	release := rig.release
	get := func(path string) {
		t.Helper()
		if code, body := fetch(t, client, "http://"+entry+path); code != 200 {
			t.Fatalf("GET %s: %d %q", path, code, body)
		}
	}
	requests := func(route string) (float64, int) {
		_, body := fetch(t, client, "http://"+cp+"/metrics")
		return metric(body, "west_requests_total", `listener="`+name+`"`, `route="`+route+`"`)
	}
	series := func(route string) int { return rig.series(t, route) }
	reload := func(paths ...string) {
		t.Helper()
		if err := g.Reload(mustParse(t, conf(paths...))); err != nil {
			t.Fatalf("reload to routes %v: %v", paths, err)
		}
	}

	// A request is counted just after its answer has gone: wait for it.
	get("/a")
	get("/b")
	waitFor(t, "the routes' series", func() bool { return series("/a") > 0 && series("/b") > 0 })
	reload("/b")
	waitFor(t, "the removed route's series to go", func() bool { return series("/a") == 0 })
	if _, n := requests("/b"); n == 0 {
		t.Error("the kept route's series went too")
	}

	// Added back, the route counts anew.
	reload("/a", "/b", "/c")
	get("/a")
	get("/c")
	waitFor(t, "the route added back to count one request", func() bool { v, _ := requests("/a"); return v == 1 })
	waitFor(t, "the series of /c", func() bool { return series("/c") > 0 })
	// Taken away with /c while a request of the old handler is in flight,
	// and added back before that request ends: /c goes once it ends, /a
	// stays and goes on counting.
	held := rig.hold("/a")
	reload("/b")
	reload("/a", "/b")
	get("/a")
	close(release)
	if err := <-held; err != nil {
		t.Fatalf("the request in flight across the reloads: %v", err)
	}
	// /c goes in the same step that judges /a: once it has gone, /a's
	// series stays or has gone for good.
	waitFor(t, "the series of /c, removed with /a, to go", func() bool { return series("/c") == 0 })
	waitFor(t, "the route added back while its old handler served it to count 3 requests",
		func() bool { v, _ := requests("/a"); return v == 3 })
}

// TestReloadForgetsRemovedRouteAfterLongRequest: a request still running
// on a route a reload removed, when shutdown_grace has passed, counts
// when it ends, after the route's series went at the grace; they go
// again then, rather than stay until a restart.
func TestReloadForgetsRemovedRouteAfterLongRequest(t *testing.T) {
	rig := newRoutesRig(t, 200*time.Millisecond, "/a", "/b")
	g, name, entry, client, conf := rig.g, rig.name, rig.entry, rig.client, rig.conf
	release := rig.release
	series := func(route string) int { return rig.series(t, route) }
	if code, body := fetch(t, client, "http://"+entry+"/a"); code != 200 {
		t.Fatalf("GET /a: %d %q", code, body)
	}
	waitFor(t, "the series of /a", func() bool { return series("/a") > 0 })

	held := rig.hold("/a")
	old := proxyListener(g, name).handler.current()
	if err := g.Reload(mustParse(t, conf("/b"))); err != nil {
		t.Fatal(err)
	}
	// The grace passes with the request still running.
	waitFor(t, "the series of /a to go at the grace", func() bool { return series("/a") == 0 })
	close(release)
	if err := <-held; err != nil {
		t.Fatalf("the request across the reload: %v", err)
	}
	// The old handler has counted its last request by the time it is
	// finished.
	select {
	case <-old.Finished():
	case <-time.After(5 * time.Second):
		t.Fatal("the old handler did not finish")
	}
	waitFor(t, "the series of /a, counted again by its last request, to go", func() bool { return series("/a") == 0 })
}

// TestReloadForgetsRemovedListenerAfterLongRequest: a request still
// running on a listener a reload removed, cut when shutdown_grace has
// passed, counts as it ends, after the listener's series went; they go
// again then, as a removed route's do, rather than stay until a restart.
func TestReloadForgetsRemovedListenerAfterLongRequest(t *testing.T) {
	rig := newRoutesRig(t, 200*time.Millisecond, "/a")
	listenerSeries := func() int {
		_, body := fetch(t, rig.client, "http://"+rig.cp+"/metrics")
		return strings.Count(body, `listener="`+rig.name+`"`)
	}
	if code, body := fetch(t, rig.client, "http://"+rig.entry+"/a"); code != 200 {
		t.Fatalf("GET /a: %d %q", code, body)
	}
	waitFor(t, "the listener's series", func() bool { return listenerSeries() > 0 })

	held := rig.hold("/a")
	old := proxyListener(rig.g, rig.name).handler.current()
	without := fmt.Sprintf(`{"west": {"nm": "G", "cp": %q}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, rig.cp)
	if err := rig.g.Reload(mustParse(t, without)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-held: // cut once the grace has passed
	case <-time.After(5 * time.Second):
		t.Fatal("the request outlived its removed listener by 5s")
	}
	close(rig.release)
	// The old handler has counted its last request by the time it is
	// finished.
	select {
	case <-old.Finished():
	case <-time.After(5 * time.Second):
		t.Fatal("the removed listener's handler did not finish")
	}
	waitFor(t, "the removed listener's series, counted again by its last request, to go",
		func() bool { return listenerSeries() == 0 })
}

// TestReloadRetiringConnectingClientServesWaitingRequest: a request that
// waits for a tunnel client still connecting (Dial waits up to 3 s for an
// attempt under way) is served when a reload replaces that client before
// its tunnel is up: the client retires once the request has its stream
// and has ended, as a client up does. It was stopped at once, and the
// request failed with 502.
func TestReloadRetiringConnectingClientServesWaitingRequest(t *testing.T) {
	be := backend(t)
	g, _ := runNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	relay := testutil.StartRelay(t, g.Addrs().Tunnel)
	srv := "ws://" + relay.Addr()
	var pre prebound
	entry := pre.addr(t)
	conf := func(nm string) string {
		return fmt.Sprintf(`{"west": {"nm": "L"}, "wstc": {%q: {"nm": %q}},
			"proxy": {"http://%s": {"ea": %q, "/": {"ou": "%s/x"}}}}`, srv, nm, entry, srv, be.URL)
	}
	l, _ := runNode(t, conf("L0"), Options{Listen: pre.listen})
	waitClient(t, l, srv, tunnel.StateUp)
	// A slow path: a new tunnel takes a second or more to come up.
	relay.Delay(300 * time.Millisecond)
	if err := l.Reload(mustParse(t, conf("L1"))); err != nil {
		t.Fatal(err)
	}
	answer := make(chan string, 1)
	go func() {
		code, body := getStatus(t, "http://"+entry+"/")
		answer <- fmt.Sprintf("%d %.100s", code, body)
	}()
	connecting := l.Client(srv)
	waitFor(t, "the request to wait for the new client", func() bool { return connecting.Dialing() > 0 })
	if st := connecting.Status().State; st != tunnel.StateConnecting {
		t.Fatalf("the new client is %s, want connecting", st)
	}
	if err := l.Reload(mustParse(t, conf("L2"))); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-answer:
		if !strings.HasPrefix(got, "200 ") {
			t.Errorf("a request waiting for the client a reload replaced: %s, want 200", got)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no answer")
	}
}

// dialLine connects to a line echo at addr, closed when the test ends.
func dialLine(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

// askLine sends a line on c and returns the answer, or what failed, within
// wait.
func askLine(c net.Conn, r *bufio.Reader, wait time.Duration) string {
	c.SetDeadline(time.Now().Add(wait))
	if _, err := io.WriteString(c, "hi\n"); err != nil {
		return "write: " + err.Error()
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return "read: " + err.Error()
	}
	return line
}

// waitFor polls cond until it holds, failing the test after 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// routesRig is a node G whose http:// listener has a route per path to a
// backend that holds each request asking ?hold=1 (telling arrived) until
// release closes, with a control port for /metrics, and a node L that
// serves G's routes.
type routesRig struct {
	g                *Node
	name, cp, entry  string
	client           *http.Client
	arrived, release chan struct{}
	backend          string
}

func newRoutesRig(t *testing.T, grace time.Duration, paths ...string) *routesRig {
	t.Helper()
	rig := &routesRig{arrived: make(chan struct{}, 1), release: make(chan struct{}),
		client: &http.Client{Timeout: 5 * time.Second}}
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("hold") != "" {
			rig.arrived <- struct{}{}
			<-rig.release
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(be.Close)
	rig.backend = be.URL
	var pre prebound
	rig.cp, rig.entry = pre.addr(t), pre.addr(t)
	rig.name = "http://" + rig.entry
	rig.g, _ = runNode(t, rig.conf(paths...), Options{Listen: pre.listen, ShutdownGrace: grace})
	runNode(t, fmt.Sprintf(`{"west": {"nm": "L"}, "wstc": {"ws://%s": {}}}`, rig.g.Addrs().Tunnel), Options{})
	waitUp(t, rig.g, "L")
	return rig
}

// conf is G's configuration with a route for each of paths.
func (rig *routesRig) conf(paths ...string) string {
	var routes []string
	for _, p := range paths {
		routes = append(routes, fmt.Sprintf(`%q: {"ou": "%s/x"}`, p, rig.backend))
	}
	return fmt.Sprintf(`{"west": {"nm": "G", "cp": %q}, "wsts": {"sp": "ws://127.0.0.1:0"}, "proxy": {
		%q: {"en": "L", %s}}}`, rig.cp, rig.name, strings.Join(routes, ", "))
}

// series is how many of /metrics' series name route.
func (rig *routesRig) series(t *testing.T, route string) int {
	t.Helper()
	_, body := fetch(t, rig.client, "http://"+rig.cp+"/metrics")
	return strings.Count(body, `route="`+route+`"`)
}

// hold sends a request for path that the backend holds until release
// closes, and returns once it has arrived there; the channel then tells
// how it ended.
func (rig *routesRig) hold(path string) <-chan error {
	held := make(chan error, 1)
	go func() {
		resp, err := rig.client.Get("http://" + rig.entry + path + "?hold=1")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		held <- err
	}()
	<-rig.arrived
	return held
}

// TestReloadUDPPeerChangesSide: a reload that turns a udp:// listener's
// "en": X into "ea": X (a client named as the server's URL) moves its
// flows as a change of peer does: the next datagram of a client whose flow
// was open goes through the tunnel to the server X, not on through the
// client named X.
func TestReloadUDPPeerChangesSide(t *testing.T) {
	echo := udpEcho(t)
	s, _ := runNode(t, `{"west": {"nm": "S"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	sURL := "ws://" + s.Addrs().Tunnel
	udpAddr := freeUDPAddr(t)
	aconf := func(side string) string {
		return fmt.Sprintf(`{"west": {"nm": "A"}, "wsts": {"sp": "ws://127.0.0.1:0"},
			"proxy": {"udp://%s": {%q: %q, "ou": "udp://%s"}}}`, udpAddr, side, sURL, echo)
	}
	a, _ := runNode(t, aconf("en"), Options{})
	runNode(t, fmt.Sprintf(`{"west": {"nm": %q}, "wstc": {"ws://%s": {}}}`, sURL, a.Addrs().Tunnel), Options{})
	waitUp(t, a, sURL)

	c, err := net.Dial("udp", udpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := askUDP(c); got != "echo hi" {
		t.Fatalf("through the client named %s: %q", sURL, got)
	}
	if err := a.Reload(mustParse(t, aconf("ea"))); err != nil {
		t.Fatalf("reload to ea: %v", err)
	}
	waitUp(t, s, "A")
	if got := askUDP(c); got != "echo hi" {
		t.Fatalf("after the reload: %q", got)
	}
	if n := s.Server().Session("A").Stats().StreamsTotal.Load(); n != 1 {
		t.Errorf("S carried %d streams from A after the reload, want the flow's 1: it stayed with the client named alike", n)
	}
}

// TestReloadReplacedClientMovesUDPFlows: a reload that replaces the
// tunnel client a udp:// listener dials through (its wstc entry changed)
// moves the flows open to the new client, as a change of peer does. A
// client that keeps sending held the old tunnel, retiring, until the
// whole shutdown_grace had passed.
func TestReloadReplacedClientMovesUDPFlows(t *testing.T) {
	echo := udpEcho(t)
	g, _ := runNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	gURL := "ws://" + g.Addrs().Tunnel
	udpAddr := freeUDPAddr(t)
	lconf := func(name string) string {
		return fmt.Sprintf(`{"west": {"nm": "L", "shutdown_grace": "30s"}, "wstc": {%q: {"nm": %q}},
			"proxy": {"udp://%s": {"ea": %q, "ou": "udp://%s"}}}`, gURL, name, udpAddr, gURL, echo)
	}
	l, _ := runNode(t, lconf("L"), Options{})
	waitUp(t, g, "L")
	c, err := net.Dial("udp", udpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := askUDP(c); got != "echo hi" {
		t.Fatalf("before the reload: %q", got)
	}
	if err := l.Reload(mustParse(t, lconf("L2"))); err != nil {
		t.Fatal(err)
	}
	askUDPUntil(t, c, func() bool { return g.Server().Session("L") == nil },
		"the flow still holds the replaced tunnel")
	if s := g.Server().Session("L2"); s == nil || s.Stats().StreamsTotal.Load() != 1 {
		t.Errorf("G carries no flow from the new tunnel")
	}
}

// TestReloadChangedClientFinishesExchange: a reload that changes a tunnel
// client's entry (here "ee") starts a new client and retires the old one
// as it retires a removed one: a request in flight on the old tunnel ends
// whole, and the next goes through the new.
func TestReloadChangedClientFinishesExchange(t *testing.T) {
	arrived := make(chan struct{}, 1)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			arrived <- struct{}{}
			time.Sleep(time.Second)
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(be.Close)
	g, _ := runNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	gURL := "ws://" + g.Addrs().Tunnel
	var pre prebound
	addr := pre.addr(t)
	lconf := func(early string) string {
		return fmt.Sprintf(`{"west": {"nm": "L", "shutdown_grace": "20s"}, "wstc": {%q: {"ee": %q}},
			"proxy": {"http://%s": {"ea": %q, "/": {"ou": "%s/"}}}}`, gURL, early, addr, gURL, be.URL)
	}
	l, _ := runNode(t, lconf("yes"), Options{Listen: pre.listen})
	base := "http://" + addr
	slow := getLater(base + "/slow")
	select {
	case <-arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("the slow request never reached the backend")
	}
	if err := l.Reload(mustParse(t, lconf("no"))); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if code, body, _ := get(t, base+"/after"); code != 200 || body != "ok" {
		t.Errorf("a request after the reload: %d %q", code, body)
	}
	if r := <-slow; r.err != nil || r.code != 200 {
		t.Errorf("the request in flight on the old tunnel: %d, %v", r.code, r.err)
	}
}

// askUDP sends "hi" on c until an answer comes, at most ten times, and
// returns the answer, or "no answer".
func askUDP(c net.Conn) string {
	buf := make([]byte, 100)
	for range 10 {
		c.Write([]byte("hi"))
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if n, err := c.Read(buf); err == nil {
			return string(buf[:n])
		}
	}
	return "no answer"
}

// TestReloadRefusesDNSRebinding: a web page of another site, open in a
// browser on a host inside control_ca, cannot make the node reload by
// rebinding its own name to the control port's address: the browser
// then sends the page's name as Host and Origin, and Sec-Fetch-Site
// same-origin, all of which CrossOriginProtection takes for the control
// port's own.
func TestReloadRefusesDNSRebinding(t *testing.T) {
	be := backend(t)
	file := filepath.Join(t.TempDir(), "west.json")
	var pre prebound
	cp, listen := pre.addr(t), pre.addr(t)
	conf := func(path string) string {
		return fmt.Sprintf(`{"west": {"nm": "G", "cp": %q, "control_ca": ["127.0.0.1"]}, "wsts": {"sp": "ws://127.0.0.1:0"},
			"proxy": {"http://%s": {"en": "L", %q: {"ou": "%s/x"}}}}`, cp, listen, path, be.URL)
	}
	runFromFile(t, file, conf("/one"), &pre)
	if err := os.WriteFile(file, []byte(conf("/two")), 0o600); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(cp)
	evil := "rebind.attacker.example:" + port
	for _, h := range []map[string]string{
		{"Origin": "http://" + evil, "Sec-Fetch-Site": "same-origin"}, // a current browser
		{"Origin": "http://" + evil},                                  // one without Sec-Fetch-*, or over plain http
	} {
		req, err := http.NewRequest("POST", "http://"+cp+"/api/reload", strings.NewReader(""))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = evil // the browser connects to cp, having resolved the page's name to it
		for k, v := range h {
			req.Header.Set(k, v)
		}
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("POST /api/reload from a rebound page (%v): %d %q, want 403", h, resp.StatusCode, body)
		}
	}
	if code, _ := getStatus(t, "http://"+listen+"/two"); code == 200 {
		t.Errorf("a page of another site reloaded the node: /two answers %d", code)
	}
	// curl, by name or address, still reloads.
	req, _ := http.NewRequest("POST", "http://"+cp+"/api/reload", nil)
	req.Host = "g.example.org:" + port
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("POST /api/reload as curl sends it, by name: %d, want 200", resp.StatusCode)
	}
}

// TestReloadForgetsRoutesOfListenerReAddedWithout: a listener a reload
// removes while a request of its route /b runs, and a later reload adds
// back with /a only, before that request has ended: once it has, /b's
// series leave /metrics, as those of a route a reload took from a kept
// listener do. They stayed until a restart: the removed listener's
// series were kept whole because a listener of its name was back.
func TestReloadForgetsRoutesOfListenerReAddedWithout(t *testing.T) {
	rig := newRoutesRig(t, 20*time.Second, "/a", "/b")
	g, cp := rig.g, rig.cp
	if code, body := fetch(t, rig.client, "http://"+rig.entry+"/b"); code != 200 {
		t.Fatalf("GET /b: %d %q", code, body)
	}
	waitFor(t, "the series of /b", func() bool { return rig.series(t, "/b") > 0 })
	held := rig.hold("/b")
	old := proxyListener(g, rig.name).handler.current()
	without := fmt.Sprintf(`{"west": {"nm": "G", "cp": %q}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, cp)
	if err := g.Reload(mustParse(t, without)); err != nil {
		t.Fatal(err)
	}
	if err := g.Reload(mustParse(t, rig.conf("/a"))); err != nil {
		t.Fatal(err)
	}
	if code, body := fetch(t, rig.client, "http://"+rig.entry+"/a"); code != 200 {
		t.Fatalf("GET /a on the listener added back: %d %q", code, body)
	}
	// A request is counted just after its answer has gone: wait for it,
	// before the old listener's forgets can run, so that the check below
	// sees what they did to /a rather than a count not yet made.
	waitFor(t, "the series of /a", func() bool { return rig.series(t, "/a") > 0 })
	close(rig.release)
	if err := <-held; err != nil {
		t.Fatalf("the request across the reloads: %v", err)
	}
	select {
	case <-old.Finished():
	case <-time.After(5 * time.Second):
		t.Fatal("the removed listener's handler did not finish")
	}
	waitFor(t, "the series of /b, which no listener has any more, to go", func() bool { return rig.series(t, "/b") == 0 })
	if rig.series(t, "/a") == 0 {
		t.Error("the series of /a, which the listener added back serves, went too")
	}
}

// sessionsOf counts the tunnels up under peer name on n's tunnel server.
func sessionsOf(n *Node, peer string) int {
	c := 0
	for _, s := range n.Server().Sessions() {
		if s.Peer() == peer {
			c++
		}
	}
	return c
}

// TestReloadReplacedClientMovesENUDPFlows: the en side of
// TestReloadReplacedClientMovesUDPFlows. G's udp:// listener sends through
// the tunnel of L, a client of G. A reload of L that replaces its tunnel
// client under the same name (its token is read from elsewhere) brings up a second tunnel
// beside the old, which retires. G's flows should move to the new tunnel,
// as its HTTP listeners' streams do, so that the old one can go; a UDP
// client that keeps sending holds it until L's whole shutdown_grace.
func TestReloadReplacedClientMovesENUDPFlows(t *testing.T) {
	echo := udpEcho(t)
	udpAddr := freeUDPAddr(t)
	t.Setenv("WEST_TEST_TOKEN_MOVE_L", "s3cret")
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	g, _ := runNode(t, fmt.Sprintf(`{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0", "tokens": {"L": "env:WEST_TEST_TOKEN_MOVE_L"}},
		"proxy": {"udp://%s": {"en": "L", "ou": "udp://%s"}}}`, udpAddr, echo), Options{})
	gURL := "ws://" + g.Addrs().Tunnel
	lconf := func(token string) string {
		return fmt.Sprintf(`{"west": {"nm": "L", "shutdown_grace": "30s"}, "wstc": {%q: {"token": %q}}}`, gURL, token)
	}
	l, _ := runNode(t, lconf("env:WEST_TEST_TOKEN_MOVE_L"), Options{})
	waitUp(t, g, "L")
	c, err := net.Dial("udp", udpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := askUDP(c); got != "echo hi" {
		t.Fatalf("before the reload: %q", got)
	}
	old := g.Server().Sessions()[0]
	if err := l.Reload(mustParse(t, lconf("file:"+tokFile))); err != nil {
		t.Fatal(err)
	}
	// The old tunnel may go within a poll of the new one's coming: wait
	// for the new one, not for the moment both are up.
	newUp := func() bool {
		for _, s := range g.Server().Sessions() {
			if s != old && s.Peer() == "L" {
				return true
			}
		}
		return false
	}
	deadline := time.Now().Add(10 * time.Second)
	for !newUp() {
		if time.Now().After(deadline) {
			t.Fatal("L's new tunnel never came up")
		}
		time.Sleep(10 * time.Millisecond)
	}
	askUDPUntil(t, c, func() bool { return !slices.Contains(g.Server().Sessions(), old) },
		"G's udp flow still holds L's retiring tunnel")
}

// askUDPUntil has c, a client of a udp:// listener in front of an echo,
// keep sending after a reload until moved (a tunnel has gone), and then
// once more, through the new tunnel; each answer must come. stuck says
// what it means that moved never came.
func askUDPUntil(t *testing.T, c net.Conn, moved func() bool, stuck string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !moved() {
		if time.Now().After(deadline) {
			t.Fatal("5s after the reload, with its client sending, " + stuck)
		}
		if got := askUDP(c); got != "echo hi" {
			t.Fatalf("after the reload: %q", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := askUDP(c); got != "echo hi" {
		t.Fatalf("through the new tunnel: %q", got)
	}
}

// TestReloadRefusalNamesTheKey: a reload refused for a change that needs
// a restart names the key that changed, as every config error names its
// JSON path, so that an operator knows what to put back.
func TestReloadRefusalNamesTheKey(t *testing.T) {
	const base = `{"west": {"nm": "L", "cp": ":9702", "keepalive": "5s"}, "wsts": {"sp": "ws://127.0.0.1:9801"}}`
	old := mustParse(t, base)
	for _, tc := range []struct{ from, to, want string }{
		{`"nm": "L"`, `"nm": "L2"`, "west.nm"},
		{`"cp": ":9702"`, `"cp": ":9703"`, "west.cp"},
		{`"keepalive": "5s"`, `"keepalive": "2s"`, "west.keepalive"},
		{`"keepalive": "5s"`, `"keepalive": "5s", "shutdown_grace": "30s"`, "west.shutdown_grace"},
		{`"keepalive": "5s"`, `"keepalive": "5s", "stream_window": "4MiB"`, "west.stream_window"},
		{`:9801"`, `:9802"`, "wsts.sp"},
		{`:9801"`, `:9801", "max_streams": 10`, "wsts.max_streams"},
	} {
		next := mustParse(t, strings.Replace(base, tc.from, tc.to, 1))
		err := fixedParts(old, next)
		if err == nil || !strings.Contains(err.Error(), tc.want+" changed") {
			t.Errorf("reload changing %s: %v; want a refusal naming %s", tc.to, err, tc.want)
		}
	}
	if err := fixedParts(old, mustParse(t, base)); err != nil {
		t.Errorf("reload of the same file: %v", err)
	}
}

// TestReadRefusesDNSRebinding: as TestReloadRefusesDNSRebinding, for
// reads. A page that rebinds its own name to the control port reads
// /api/state (the peers, listeners, targets) as its own origin. Browsers
// send Sec-Fetch-Site with a page's requests; those by name are refused.
// curl (no Sec-Fetch-Site), an address or localhost, and an address typed
// into the browser ("none") still read.
func TestReadRefusesDNSRebinding(t *testing.T) {
	var pre prebound
	cp := pre.addr(t)
	runNode(t, fmt.Sprintf(`{"west": {"nm": "G", "cp": %q}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, cp), withListen(Options{}, pre.listen))
	_, port, _ := net.SplitHostPort(cp)
	for _, tc := range []struct {
		host, site string
		want       int
	}{
		{"rebind.attacker.example:" + port, "same-origin", http.StatusForbidden},
		{"rebind.attacker.example:" + port, "cross-site", http.StatusForbidden},
		{"rebind.attacker.example:" + port, "none", http.StatusOK}, // typed by its user
		{"g.example.org:" + port, "", http.StatusOK},               // curl by name
		{"127.0.0.1:" + port, "same-origin", http.StatusOK},
		{"localhost:" + port, "same-origin", http.StatusOK},
	} {
		for _, path := range []string{"/", "/api/state", "/metrics", "/healthz"} {
			req, err := http.NewRequest("GET", "http://"+cp+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = tc.host
			if tc.site != "" {
				req.Header.Set("Sec-Fetch-Site", tc.site)
			}
			resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("GET %s with Host %s, Sec-Fetch-Site %q: %d, want %d", path, tc.host, tc.site, resp.StatusCode, tc.want)
			}
		}
	}
}

// TestReloadAddedUDPListenerLeavesHeldDrainingTunnel: as
// TestReloadReplacedClientMovesENUDPFlows, with G's udp:// listener added
// by a reload of G after L's retiring tunnel has told G that it drains,
// and before L's new tunnel is up. L's retiring tunnel is held up by a
// TCP connection, so that the added listener's first flow finds it, the
// only tunnel to L (Dial takes a draining one then).
// Once L's new tunnel is up, the flow moves there, as those of a UDP
// listener that took the notice do, rather than hold the retiring tunnel
// for the whole grace.
func TestReloadAddedUDPListenerLeavesHeldDrainingTunnel(t *testing.T) {
	echo := udpEcho(t)
	udpAddr := freeUDPAddr(t)
	t.Setenv("WEST_TEST_TOKEN_HELD_L", "s3cret")
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hold := connTarget(t, func(c *net.TCPConn) { io.Copy(io.Discard, c) })
	var pre prebound
	gTunnel := pre.addr(t)
	tcpAddr := pre.addr(t)
	gconf := func(proxy string) string {
		return fmt.Sprintf(`{"west": {"nm": "G"}, "wsts": {"sp": "ws://%s", "tokens": {"L": "env:WEST_TEST_TOKEN_HELD_L"}}, "proxy": {"tcp://%s": {"en": "L", "ou": "tcp://%s"}%s}}`,
			gTunnel, tcpAddr, hold, proxy)
	}
	g, _ := runNode(t, gconf(""), withListen(Options{}, pre.listen))
	relay := testutil.StartRelay(t, gTunnel)
	lconf := func(token string) string {
		return fmt.Sprintf(`{"west": {"nm": "L", "shutdown_grace": "30s"}, "wstc": {"ws://%s": {"token": %q}}}`, relay.Addr(), token)
	}
	l, _ := runNode(t, lconf("env:WEST_TEST_TOKEN_HELD_L"), Options{})
	waitUp(t, g, "L")
	old := g.Server().Sessions()[0]
	tc, err := net.Dial("tcp", tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	tc.Write([]byte("held"))
	waitFor(t, "the TCP connection's stream on L's tunnel", func() bool { return old.Streams() == 1 })

	relay.Refuse(true)
	if err := l.Reload(mustParse(t, lconf("file:"+tokFile))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "G told that L's old tunnel drains", old.PeerDraining)
	if err := g.Reload(mustParse(t, gconf(fmt.Sprintf(`, "udp://%s": {"en": "L", "ou": "udp://%s"}`, udpAddr, echo)))); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("udp", udpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	askUDP(c) // the flow starts on the only tunnel to L
	relay.Refuse(false)
	waitFor(t, "L's new tunnel up", func() bool {
		return slices.ContainsFunc(g.Server().Sessions(), func(s *tunnel.Session) bool { return s != old })
	})
	askUDPUntil(t, c, func() bool { return old.Streams() == 1 },
		"the flow of G's added udp listener still holds L's retiring tunnel")
}
