package node

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/config"
	"github.com/west-tunnel/west/internal/tunnel"
)

// runNode starts a node and returns a function that stops it and waits,
// for tests that stop nodes themselves.
func runNode(t *testing.T, js string, opts Options) (*Node, func() time.Duration) {
	t.Helper()
	cfg, err := config.Parse([]byte(js))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	n, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	return n, runStarted(t, n)
}

// runStarted starts and runs a built node; the returned function stops it
// and waits, as does the test's end.
func runStarted(t *testing.T, n *Node) func() time.Duration {
	t.Helper()
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	stopped := false
	stop := func() time.Duration {
		if stopped {
			return 0
		}
		stopped = true
		start := time.Now()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("node run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("node did not stop")
		}
		return time.Since(start)
	}
	t.Cleanup(func() { stop() })
	return stop
}

// getResult is how a GET sent in the background ended.
type getResult struct {
	code int
	err  error
}

// getLater sends a GET in the background and reports its status once its
// body has been read.
func getLater(url string) <-chan getResult {
	res := make(chan getResult, 1)
	go func() {
		resp, err := http.Get(url)
		if err != nil {
			res <- getResult{0, err}
			return
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		res <- getResult{resp.StatusCode, err}
	}()
	return res
}

// TestGracefulDrain stops each west of case 1 while a slow request is in
// flight: the request still completes, the listener stops taking new
// connections at once, and the stop waits no longer than the request.
func TestGracefulDrain(t *testing.T) {
	be := backend(t) // /x/slow answers after 3s
	for _, which := range []string{"near", "far"} {
		t.Run(which, func(t *testing.T) {
			g, stopG := runNode(t, `{"west": {"nm": "G", "shutdown_grace": "20s"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
			l, stopL := runNode(t, fmt.Sprintf(`{"west": {"nm": "L", "shutdown_grace": "20s"},
				"proxy": {"http://127.0.0.1:0": {"ea": "ws://%s", "/": {"ou": "%s/x"}}}}`, g.Addrs().Tunnel, be.URL), Options{})
			base := proxyURL(t, l)
			if code, _ := getStatus(t, base+"/warm"); code != 200 {
				t.Fatalf("warm-up: %d", code)
			}
			res := getLater(base + "/slow")
			time.Sleep(500 * time.Millisecond) // the request is in flight
			stop := stopL
			if which == "far" {
				stop = stopG
			}
			took := stop()
			r := <-res
			if r.err != nil || r.code != 200 {
				t.Fatalf("request in flight during the %s west's drain: %d, %v", which, r.code, r.err)
			}
			if took > 10*time.Second {
				t.Errorf("drain took %v, far longer than the request", took)
			}
			t.Logf("%s west drained in %v", which, took)
			if which == "near" {
				// The drained listener takes no new connections.
				if _, err := http.Get(base + "/after"); err == nil {
					t.Errorf("the drained listener still accepted a request")
				}
			}
		})
	}
}

// TestControlPortShowsTheDrain: while a west drains, its control port
// still answers: /healthz is 503 saying it is stopping, /api/state says
// draining, /metrics counts it among the health problems, and a reload
// is refused; once the drain ends, the port closes.
func TestControlPortShowsTheDrain(t *testing.T) {
	// The backend answers once the test has looked at the drain.
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(be.Close)
	free := sync.OnceFunc(func() { close(release) })
	g, _ := runNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	conf := fmt.Sprintf(`{"west": {"nm": "L", "cp": "127.0.0.1:0", "shutdown_grace": "20s"},
		"proxy": {"http://127.0.0.1:0": {"ea": "ws://%s", "/": {"ou": "%s/x"}}}}`, g.Addrs().Tunnel, be.URL)
	file := filepath.Join(t.TempDir(), "l.json")
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	l, stopL := runNode(t, conf, Options{ConfigPath: file})
	t.Cleanup(free) // before the nodes stop (cleanups run last first), should the test end early
	base, cp := proxyURL(t, l), "http://"+l.Addrs().Control
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	waitFor(t, "health before the drain", func() bool {
		code, _ := fetch(t, client, cp+"/healthz")
		return code == 200
	})
	res := getLater(base + "/slow")
	<-arrived // the request is in flight
	stopped := make(chan struct{})
	go func() { stopL(); close(stopped) }()
	waitFor(t, "the drain", func() bool { return l.State().Draining })

	if code, body := fetch(t, client, cp+"/healthz"); code != 503 || !strings.Contains(body, "west is stopping") {
		t.Errorf("during the drain: /healthz %d %q, want 503 saying west is stopping", code, body)
	}
	var st struct{ Draining bool }
	if code, body := fetch(t, client, cp+"/api/state"); code != 200 || json.Unmarshal([]byte(body), &st) != nil || !st.Draining {
		t.Errorf("during the drain: /api/state %d %q, want draining", code, body)
	}
	if code, body := fetch(t, client, cp+"/metrics"); code != 200 {
		t.Errorf("during the drain: /metrics %d", code)
	} else if n, _ := metric(body, "west_health_problems"); n != 1 {
		t.Errorf("during the drain: west_health_problems %v, want 1", n)
	}
	resp, err := client.Post(cp+"/api/reload", "", nil)
	if err != nil {
		t.Fatalf("reload during the drain: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(string(body), "west is stopping") {
		t.Errorf("reload during the drain: %d %q, want 422 saying west is stopping", resp.StatusCode, body)
	}

	free()
	if r := <-res; r.err != nil || r.code != 200 {
		t.Fatalf("the request in flight: %d, %v", r.code, r.err)
	}
	<-stopped
	if _, err := client.Get(cp + "/healthz"); err == nil {
		t.Errorf("the control port still answers after the drain")
	}
}

// TestDrainDeadline: a request longer than the grace is cut at the
// deadline, and the node stops anyway.
func TestDrainDeadline(t *testing.T) {
	be := backend(t)
	g, _ := runNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	l, stop := runNode(t, fmt.Sprintf(`{"west": {"nm": "L", "shutdown_grace": "300ms"},
		"proxy": {"http://127.0.0.1:0": {"ea": "ws://%s", "/": {"ou": "%s/x"}}}}`, g.Addrs().Tunnel, be.URL), Options{})
	base := proxyURL(t, l)
	go func() {
		resp, err := http.Get(base + "/slow")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	time.Sleep(300 * time.Millisecond)
	if took := stop(); took > 2500*time.Millisecond {
		t.Errorf("stop took %v with a 300ms grace", took)
	}
}

// TestKeepaliveKeys: west.keepalive and west.dead_after reach the
// tunnels, and a client notices its server's end at once. (A silent peer,
// detected by the keepalive alone, is TestFaultStallDetected's part.)
func TestKeepaliveKeys(t *testing.T) {
	g, stopG := runNode(t, `{"west": {"nm": "G", "keepalive": "100ms", "dead_after": "500ms"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	if mo := g.opts.Mux; mo.KeepAliveInterval != 100*time.Millisecond || mo.KeepAliveTimeout != 500*time.Millisecond {
		t.Fatalf("mux options %+v, want the config's keepalive and dead_after", mo)
	}
	l, _ := runNode(t, fmt.Sprintf(`{"west": {"nm": "L", "keepalive": "100ms", "dead_after": "500ms"}, "wstc": {"ws://%s": {}}}`, g.Addrs().Tunnel), Options{})
	url := "ws://" + g.Addrs().Tunnel
	waitClient(t, l, url, tunnel.StateUp)
	stopG()
	start := time.Now()
	waitClient(t, l, url, tunnel.StateBackoff)
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("tunnel noticed its server gone after %v", d)
	}
}

// pausingEvents is a backend whose /events sends one event, pauses for
// pause, sends a second and ends, as an event stream does between events;
// every other path answers "ok" at once.
func pausingEvents(t *testing.T, pause time.Duration) string {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.URL.Path != "/events" {
			io.WriteString(w, "ok")
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-time.After(pause):
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "data: two\n\n")
	}))
	t.Cleanup(be.Close)
	return be.URL
}

// firstEvent sends a GET to a pausingEvents backend's /events and reads
// its first event; lastEvent reads the rest, across the pause.
func firstEvent(t *testing.T, url string) *bufio.Reader {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || line != "data: one\n" {
		t.Fatalf("first event: %q, %v", line, err)
	}
	return br
}

func lastEvent(t *testing.T, events *bufio.Reader) {
	t.Helper()
	if rest, err := io.ReadAll(events); err != nil || string(rest) != "\ndata: two\n\n" {
		t.Fatalf("the rest of the event stream, across the far west's drain: %q, %v", rest, err)
	}
}

// TestDrainKeepsPausedResponse: a far west that drains waits for an HTTP
// response that pauses longer than a request's gap (an event stream
// between events), and does not wait for the streams its peer kept idle
// for reuse, on either of the listener's transports: its peer, told of
// the drain, closes them. Both ways: the far west as tunnel server (case
// 1) and as tunnel client (case 2).
func TestDrainKeepsPausedResponse(t *testing.T) {
	const pause = 1500 * time.Millisecond // three times what silence alone would allow
	be := pausingEvents(t, pause)
	for _, far := range []string{"server", "client"} {
		t.Run("far is the tunnel "+far, func(t *testing.T) {
			var base string
			var stopFar func() time.Duration
			if far == "server" {
				g, stopG := runNode(t, `{"west": {"nm": "G", "shutdown_grace": "20s"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
				l, _ := runNode(t, fmt.Sprintf(`{"west": {"nm": "L"},
					"proxy": {"http://127.0.0.1:0": {"ea": "ws://%s", "/": {"ou": "%s/"}}}}`, g.Addrs().Tunnel, be), Options{})
				base, stopFar = proxyURL(t, l), stopG
			} else {
				g, _ := runNode(t, fmt.Sprintf(`{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"},
					"proxy": {"http://127.0.0.1:0": {"en": "L", "/": {"ou": "%s/"}}}}`, be), Options{})
				_, stopL := runNode(t, fmt.Sprintf(`{"west": {"nm": "L", "shutdown_grace": "20s"}, "wstc": {"ws://%s": {}}}`, g.Addrs().Tunnel), Options{})
				waitUp(t, g, "L")
				base, stopFar = proxyURL(t, g), stopL
			}
			// Streams kept for reuse: one by the fast path (GET), one by
			// the fallback transport (POST).
			exchange := func(method string) error {
				var body io.Reader
				if method == http.MethodPost {
					body = strings.NewReader("body")
				}
				req, _ := http.NewRequest(method, base+"/x", body)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					return err
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				if err == nil && (resp.StatusCode != 200 || string(b) != "ok") {
					err = fmt.Errorf("%s: %d %q", method, resp.StatusCode, b)
				}
				return err
			}
			for _, m := range []string{http.MethodGet, http.MethodPost} {
				if err := exchange(m); err != nil {
					t.Fatal(err)
				}
			}
			events := firstEvent(t, base+"/events")
			took := make(chan time.Duration, 1)
			go func() { took <- stopFar() }()
			// A draining far west still serves what comes meanwhile.
			time.Sleep(200 * time.Millisecond)
			for _, m := range []string{http.MethodGet, http.MethodPost} {
				if err := exchange(m); err != nil {
					t.Errorf("during the drain: %v", err)
				}
			}
			lastEvent(t, events)
			// The drain ends with the response, not with the grace: the
			// idle streams did not hold it.
			if d := <-took; d > pause+3*time.Second {
				t.Errorf("the far west took %v to drain, with a %v response and a 20s grace", d, pause)
			} else {
				t.Logf("far west drained in %v", d)
			}
		})
	}
}

// postWants POSTs "body" to url and fails the test, saying what, unless
// the answer is 200 with body want.
func postWants(t *testing.T, url, want, what string) {
	t.Helper()
	resp, err := http.Post(url, "text/plain", strings.NewReader("body"))
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || string(b) != want {
		t.Fatalf("%s: %d %q, %v", what, resp.StatusCode, b, err)
	}
}

// listenerVia is the config of a west named name whose HTTP listener
// sends "/" through a tunnel to g, out to backend, with extra routes.
func listenerVia(g *Node, name, backend, extra string) string {
	return fmt.Sprintf(`{"west": {"nm": %q}, "proxy": {"http://127.0.0.1:0": {"ea": "ws://%s", "/": {"ou": "%s/"}%s}}}`,
		name, g.Addrs().Tunnel, backend, extra)
}

// TestDrainReachesHandlerSwappedIn: a listener whose handler a reload
// replaces while its peer drains keeps no stream to that peer idle: the
// new handler is told of the drain too, so a POST it sends (through the
// fallback transport, whose pool it must sweep) does not hold the far
// west's drain for the grace.
func TestDrainReachesHandlerSwappedIn(t *testing.T) {
	const pause = 2 * time.Second
	be := pausingEvents(t, pause)
	g, stopG := runNode(t, `{"west": {"nm": "G", "shutdown_grace": "20s"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	l, _ := runNode(t, listenerVia(g, "L", be, ""), Options{})
	base := proxyURL(t, l)
	events := firstEvent(t, base+"/events")
	took := make(chan time.Duration, 1)
	go func() { took <- stopG() }()
	sess := waitClient(t, l, "ws://"+g.Addrs().Tunnel, tunnel.StateUp).Session
	for deadline := time.Now().Add(5 * time.Second); !sess.PeerDraining(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("L was not told of G's drain")
		}
	}
	// A new route: the listener keeps its socket and gets a new handler.
	if err := l.Reload(mustParse(t, listenerVia(g, "L", be, fmt.Sprintf(`, "/y": {"ou": "%s/"}`, be)))); err != nil {
		t.Fatalf("reload: %v", err)
	}
	postWants(t, base+"/x", "ok", "POST through the new handler during the drain")
	lastEvent(t, events)
	if d := <-took; d > pause+3*time.Second {
		t.Errorf("G took %v to drain, with a %v response and a 20s grace: the POST's idle stream held it", d, pause)
	} else {
		t.Logf("G drained in %v", d)
	}
}

// TestDrainTellsTunnelsThatComeLate: a draining west still admits tunnels
// (a peer restarts, or its tunnel drops and redials), and tells each that
// comes up of its drain, as it told those up when the drain began. Both
// peers' event streams, paused longer than the silence rule allows, end
// whole: without the notice, the late peer's would be cut once the other
// exchange ended.
func TestDrainTellsTunnelsThatComeLate(t *testing.T) {
	be2 := pausingEvents(t, 2*time.Second)
	be4 := pausingEvents(t, 4*time.Second)
	g, stopG := runNode(t, `{"west": {"nm": "G", "shutdown_grace": "20s"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	l1, _ := runNode(t, listenerVia(g, "L1", be2, ""), Options{})
	ev1 := firstEvent(t, proxyURL(t, l1)+"/events")
	took := make(chan time.Duration, 1)
	go func() { took <- stopG() }()
	time.Sleep(200 * time.Millisecond) // G is draining, held by L1's stream
	l2, _ := runNode(t, listenerVia(g, "L2", be4, ""), Options{})
	ev2 := firstEvent(t, proxyURL(t, l2)+"/events")
	lastEvent(t, ev1)
	lastEvent(t, ev2)
	if d := <-took; d > 10*time.Second {
		t.Errorf("G drained in %v; both streams had ended by about 4.5 s", d)
	}
}

// TestDrainNoticeMatchesPeerSide: a client's name may be spelled as the
// URL of a tunnel server (the seed's samples name wests "ws//..."). A's
// listener sends to server S; B, a client of A, is named as S's URL. B's
// drain is B's, not S's: A's listener keeps its stream to S for reuse.
func TestDrainNoticeMatchesPeerSide(t *testing.T) {
	be := backend(t)
	s, _ := runNode(t, `{"west": {"nm": "S"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	sURL := "ws://" + s.Addrs().Tunnel
	a, _ := runNode(t, fmt.Sprintf(`{"west": {"nm": "A"}, "wsts": {"sp": "ws://127.0.0.1:0"},
		"proxy": {"http://127.0.0.1:0": {"ea": %q, "/": {"ou": "%s/"}}}}`, sURL, be.URL), Options{})
	_, stopB := runNode(t, fmt.Sprintf(`{"west": {"nm": %q}, "wstc": {"ws://%s": {}}}`, sURL, a.Addrs().Tunnel), Options{})
	waitUp(t, a, sURL)
	bSess := a.Server().Session(sURL)
	waitUp(t, s, "A")
	streams := s.Server().Session("A").Stats()
	// A POST goes through the fallback transport, which pools its stream.
	post := func() { postWants(t, proxyURL(t, a)+"/x", "body", "POST through A") }
	post()
	if n := streams.StreamsTotal.Load(); n != 1 {
		t.Fatalf("S saw %d streams from A after one POST, want 1", n)
	}
	stopB()
	if !bSess.PeerDraining() {
		t.Fatal("A was not told of B's drain")
	}
	post()
	if n := streams.StreamsTotal.Load(); n != 1 {
		t.Errorf("S saw %d streams from A after two POSTs, want 1: B's drain closed A's idle stream to S", n)
	}
}

// TestDrainingMiddleRefusesAsStopping: the middle west of a chain (case
// 4) closes its listeners as it begins to drain, while its tunnel to G
// stays up for what it carries. A request G sends it meanwhile, for its
// closed listener, gets 503 saying the west is stopping, as one does for
// a peer that is gone; it got 502, the kernel refusing the dial the
// middle west then made to its own closed address.
func TestDrainingMiddleRefusesAsStopping(t *testing.T) {
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	defer close(release)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/a/hold" {
			arrived <- struct{}{}
			<-release
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(be.Close)
	var pre prebound
	gProxy, lTunnel, lProxy := pre.addr(t), pre.addr(t), pre.addr(t)
	g := startNode(t, fmt.Sprintf(`{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"},
		"proxy": {"http://%s": {"en": "L", "/": {"ou": "http://%s/"}}}}`, gProxy, lProxy), Options{Listen: pre.listen})
	l, stopL := runNode(t, fmt.Sprintf(`{"west": {"nm": "L", "shutdown_grace": "5s"}, "wsts": {"sp": "ws://%s"},
		"wstc": {"ws://%s": {}},
		"proxy": {"http://%s": {"en": "L2", "/": {"ou": "%s/a/"}}}}`, lTunnel, g.Addrs().Tunnel, lProxy, be.URL), Options{Listen: pre.listen})
	startNode(t, fmt.Sprintf(`{"west": {"nm": "L2"}, "wstc": {"ws://%s": {}}}`, lTunnel), Options{})
	waitUp(t, g, "L")
	waitUp(t, l, "L2")
	if code, body := getStatus(t, "http://"+gProxy+"/x"); code != 200 {
		t.Fatalf("through the chain: %d %q", code, body)
	}
	held := make(chan int, 1)
	go func() {
		code, _ := getStatus(t, "http://"+gProxy+"/hold")
		held <- code
	}()
	<-arrived
	stopped := make(chan struct{})
	go func() { stopL(); close(stopped) }()
	waitFor(t, "L's listener to close", func() bool {
		c, err := net.Dial("tcp", lProxy)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	code, body := getStatus(t, "http://"+gProxy+"/x")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "stopping") {
		t.Errorf("a request for the draining middle's closed listener: %d %q, want 503 saying it is stopping", code, body)
	}
	release <- struct{}{}
	if code := <-held; code != 200 {
		t.Errorf("the request held across the drain: %d", code)
	}
	<-stopped
}

// TestFarDrainUnderSteadyLoad: the far west, G of case 1 (a tunnel
// server) or L of case 2 (a tunnel client), is stopped while the other's
// clients send it new requests without pause. It serves them for the
// first half of its grace, then refuses new streams (503, "stopping") and
// stops once those in flight are done. Before, a steady load left it no
// quiet moment: it served until the grace ran out and then cut the
// requests in flight (502).
func TestFarDrainUnderSteadyLoad(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(30 * time.Millisecond)
		io.WriteString(w, "ok")
	}))
	t.Cleanup(be.Close)
	const grace = 3 * time.Second
	for _, far := range []string{"server", "client"} {
		t.Run(far, func(t *testing.T) {
			var base string
			var stop func() time.Duration
			if far == "server" {
				g, stopG := runNode(t, fmt.Sprintf(`{"west": {"nm": "G", "shutdown_grace": %q}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, grace), Options{})
				l := startNode(t, fmt.Sprintf(`{"west": {"nm": "L"},
					"proxy": {"http://127.0.0.1:0": {"ea": "ws://%s", "/": {"ou": "%s/"}}}}`, g.Addrs().Tunnel, be.URL), Options{})
				base, stop = proxyURL(t, l), stopG
			} else {
				g := startNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"},
					"proxy": {"http://127.0.0.1:0": {"en": "L", "/": {"ou": "`+be.URL+`/"}}}}`, Options{})
				_, stopL := runNode(t, fmt.Sprintf(`{"west": {"nm": "L", "shutdown_grace": %q}, "wstc": {"ws://%s": {}}}`, grace, g.Addrs().Tunnel), Options{})
				waitUp(t, g, "L")
				base, stop = proxyURL(t, g), stopL
			}
			if code, _ := getStatus(t, base+"/warm"); code != 200 {
				t.Fatalf("warm-up: %d", code)
			}
			var mu sync.Mutex
			codes := map[string]int{}
			done := make(chan struct{})
			var load sync.WaitGroup
			for range 4 {
				load.Go(func() {
					client := &http.Client{Timeout: 10 * time.Second}
					for {
						select {
						case <-done:
							return
						default:
						}
						key := "error"
						resp, err := client.Get(base + "/load")
						if err == nil {
							body, _ := io.ReadAll(resp.Body)
							resp.Body.Close()
							key = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body)))
							if resp.StatusCode == 503 {
								key = "503" // "stopping", then the peer is down
							}
						}
						mu.Lock()
						codes[key]++
						mu.Unlock()
					}
				})
			}
			time.Sleep(300 * time.Millisecond) // the load is steady
			took := stop()
			time.Sleep(100 * time.Millisecond)
			close(done)
			load.Wait()
			t.Logf("the far west stopped after %v; answers: %v", took, codes)
			for key, n := range codes {
				if key != "200 ok" && key != "503" {
					t.Errorf("%d requests answered %q; want 200 or 503", n, key)
				}
			}
			if took > grace*3/4 {
				t.Errorf("the far west stopped after %v of its %v grace; want about half of it, when it stops taking streams", took, grace)
			}
		})
	}
}
