package node

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/control"
)

// fetch GETs url with client and returns the status and body.
func fetch(t *testing.T, client *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// metric sums the samples of name whose labels include all of labels
// (each `key="value"`) in a Prometheus text body, and counts them.
func metric(body, name string, labels ...string) (sum float64, n int) {
	for line := range strings.SplitSeq(body, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || rest[0] != '{' && rest[0] != ' ' {
			continue
		}
		all := true
		for _, l := range labels {
			all = all && strings.Contains(rest, l)
		}
		if !all {
			continue
		}
		v, err := strconv.ParseFloat(rest[strings.LastIndexByte(rest, ' ')+1:], 64)
		if err == nil {
			sum += v
			n++
		}
	}
	return sum, n
}

// TestControlPortCase2 runs the seed's use case 2 on loopback (G with a
// tunnel server and a listener for peer L; L dialling G), sends requests,
// and reads G's and L's control ports.
func TestControlPortCase2(t *testing.T) {
	checkNoNewGoroutines(t)
	be := backend(t)
	g, _ := runNode(t, fmt.Sprintf(`{
		"west": {"nm": "ws://case2.G", "cp": "127.0.0.1:0"},
		"wsts": {"sp": "ws://127.0.0.1:0"},
		"proxy": {"http://127.0.0.1:0": {"en": "ws://case2.L",
			"/pa": {"ou": "%s/a"},
			"/dead": {"ou": "http://127.0.0.1:1/"}}}
	}`, be.URL), Options{})
	gAddrs := g.Addrs()
	gCP := "http://" + gAddrs.Control
	base := proxyURL(t, g)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}

	// Before L connects: unhealthy, and a request fails for want of a peer.
	if code, body := fetch(t, client, gCP+"/healthz"); code != 503 || !strings.Contains(body, "ws://case2.L") {
		t.Errorf("G /healthz before L connects: %d %q, want 503 naming ws://case2.L", code, body)
	}
	if code, _ := fetch(t, client, base+"/pa"); code != 503 {
		t.Errorf("request before L connects: %d, want 503", code)
	}
	_, body := fetch(t, client, gCP+"/metrics")
	if n, _ := metric(body, "west_health_problems"); n != 1 {
		t.Errorf("G's west_health_problems before L connects: %v, want 1", n)
	}

	l, stopL := runNode(t, fmt.Sprintf(`{
		"west": {"nm": "ws://case2.L", "cp": "127.0.0.1:0"},
		"wstc": {"ws://%s": {}}
	}`, gAddrs.Tunnel), Options{})
	lCP := "http://" + l.Addrs().Control
	waitUp(t, g, "ws://case2.L")
	_, body = fetch(t, client, gCP+"/metrics")
	if n, count := metric(body, "west_health_problems"); n != 0 || count != 1 {
		t.Errorf("G's west_health_problems with L up: %v in %d series, want 0 in one", n, count)
	}
	const n = 7
	for i := range n {
		resp, err := client.Post(fmt.Sprintf("%s/pa/r%d", base, i), "text/plain", strings.NewReader(strings.Repeat("x", 100+i)))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
	}

	// L cannot reach this route's target.
	if code, _ := fetch(t, client, base+"/dead"); code != 502 {
		t.Errorf("request to a dead target: %d, want 502", code)
	}

	// JSON first: it says over which address L came, for the text check.
	code, body := fetch(t, client, gCP+"/api/state")
	var gs control.State
	if err := json.Unmarshal([]byte(body), &gs); code != 200 || err != nil {
		t.Fatalf("G /api/state: %d, decode: %v", code, err)
	}
	if gs.Name != "ws://case2.G" || gs.Server == nil || len(gs.Server.Peers) != 1 {
		t.Fatalf("G /api/state: name %q, server %+v; want one peer", gs.Name, gs.Server)
	}
	peer := gs.Server.Peers[0]
	if peer.Name != "ws://case2.L" || !strings.HasPrefix(peer.RemoteAddr, "127.0.0.1:") ||
		time.Since(peer.Since) > time.Minute || peer.BytesIn == 0 || peer.BytesOut == 0 || peer.StreamsTotal == 0 {
		t.Errorf("G's peer: %+v", peer)
	}
	if len(gs.Proxies) != 1 || !gs.Proxies[0].PeerUp || gs.Proxies[0].Via != "server" ||
		len(gs.Proxies[0].Routes) != 2 || gs.Proxies[0].Routes[1].Path != "/pa" {
		t.Errorf("G's proxies: %+v", gs.Proxies)
	}

	// L's view of the same tunnel: up, to G's tunnel address.
	code, body = fetch(t, client, lCP+"/api/state")
	var ls control.State
	if err := json.Unmarshal([]byte(body), &ls); code != 200 || err != nil {
		t.Fatalf("L /api/state: %d, decode: %v", code, err)
	}
	if len(ls.Clients) != 1 || ls.Clients[0].State != control.ClientUp || ls.Clients[0].Connects != 1 ||
		ls.Clients[0].Session == nil || ls.Clients[0].Session.RemoteAddr != gAddrs.Tunnel {
		t.Errorf("L's clients: %+v, want one up to %s", ls.Clients, gAddrs.Tunnel)
	}

	code, body = fetch(t, client, gCP+"/")
	if code != 200 {
		t.Fatalf("G /: %d", code)
	}
	for _, want := range []string{
		"--- west object ---", "--- wsts object ---", "--- wstc object ---", "--- proxy object ---",
		`"name":"ws://case2.L"`, fmt.Sprintf(`"remote_addr":%q`, peer.RemoteAddr), `"peer_up":true`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("G / lacks %s", want)
		}
	}

	code, body = fetch(t, client, gCP+"/metrics")
	if code != 200 {
		t.Fatalf("G /metrics: %d", code)
	}
	if got, _ := metric(body, "west_requests_total"); got != n+2 {
		t.Errorf("G west_requests_total: %v, want %d", got, n+2)
	}
	if got, _ := metric(body, "west_requests_total", `code_class="5xx"`); got != 2 {
		t.Errorf(`G west_requests_total{code_class="5xx"}: %v, want 2`, got)
	}
	if got, _ := metric(body, "west_dial_failures_total", `reason="peer_down"`); got != 1 {
		t.Errorf(`G west_dial_failures_total{reason="peer_down"}: %v, want 1`, got)
	}
	if got, _ := metric(body, "west_requests_total", `route="/pa"`, `code_class="2xx"`); got != n {
		t.Errorf(`G west_requests_total{route="/pa",code_class="2xx"}: %v, want %d`, got, n)
	}
	if got, _ := metric(body, "west_request_duration_seconds_count", `route="/pa"`); got != n+1 {
		t.Errorf(`G west_request_duration_seconds_count{route="/pa"}: %v, want %d`, got, n+1)
	}
	if got, _ := metric(body, "west_tunnels_up", `role="server"`, `peer="ws://case2.L"`); got != 1 {
		t.Errorf("G west_tunnels_up: %v, want 1", got)
	}
	gIn, _ := metric(body, "west_tunnel_bytes_total", `peer="ws://case2.L"`, `direction="in"`)
	gOut, _ := metric(body, "west_tunnel_bytes_total", `peer="ws://case2.L"`, `direction="out"`)
	if gIn <= 0 || gOut <= 0 {
		t.Errorf("G west_tunnel_bytes_total: in %v out %v, want both > 0", gIn, gOut)
	}
	// Both ends count the same payload: what G sent, L received.
	_, body = fetch(t, client, lCP+"/metrics")
	if got, _ := metric(body, "west_dial_failures_total", `reason="dial_failed"`); got != 1 {
		t.Errorf(`L west_dial_failures_total{reason="dial_failed"}: %v, want 1`, got)
	}
	lIn, _ := metric(body, "west_tunnel_bytes_total", `role="client"`, `direction="in"`)
	lOut, _ := metric(body, "west_tunnel_bytes_total", `role="client"`, `direction="out"`)
	if lIn != gOut || lOut != gIn {
		t.Errorf("bytes: G in %v out %v, L in %v out %v; want them mirrored", gIn, gOut, lIn, lOut)
	}

	for name, url := range map[string]string{"G": gCP, "L": lCP} {
		if code, body := fetch(t, client, url+"/healthz"); code != 200 {
			t.Errorf("%s /healthz: %d %q, want 200", name, code, body)
		}
	}

	// L goes away: G's health turns 503 naming it, within seconds.
	stopL()
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, body = fetch(t, client, gCP+"/healthz")
		if code == 503 {
			if !strings.Contains(body, "ws://case2.L") {
				t.Errorf("G /healthz: 503 %q, want it to name ws://case2.L", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("G /healthz still %d 5s after L stopped", code)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The tunnel server forgets the peer a moment before it reports the
	// end to the metrics.
	for {
		_, body = fetch(t, client, gCP+"/metrics")
		if got, _ := metric(body, "west_tunnels_up", `peer="ws://case2.L"`); got == 0 {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("G west_tunnels_up 5s after L stopped: %v, want 0", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got, _ := metric(body, "west_tunnel_disconnects_total", `peer="ws://case2.L"`); got != 1 {
		t.Errorf("G west_tunnel_disconnects_total: %v, want 1", got)
	}
	if got, _ := metric(body, "west_tunnel_bytes_total", `peer="ws://case2.L"`, `direction="in"`); got < gIn {
		t.Errorf("G bytes in went down from %v to %v when the tunnel ended", gIn, got)
	}
}

func TestControlPortAccessList(t *testing.T) {
	for _, tc := range []struct {
		acl  string
		want int
	}{
		{`["10.0.0.0/8"]`, 403},
		{`["10.0.0.0/8", "127.0.0.1"]`, 200},
		{`[]`, 200},
	} {
		n, _ := runNode(t, fmt.Sprintf(`{"west": {"nm": "x", "cp": "127.0.0.1:0", "control_ca": %s}}`, tc.acl), Options{})
		for _, path := range []string{"/", "/api/state", "/metrics", "/healthz"} {
			if code, _ := fetch(t, http.DefaultClient, "http://"+n.Addrs().Control+path); code != tc.want {
				t.Errorf("control_ca %s: GET %s: %d, want %d", tc.acl, path, code, tc.want)
			}
		}
	}
}

// checkNoNewGoroutines fails the test if goroutines it started from
// west's or net/http's code are still running once its cleanups are done.
func checkNoNewGoroutines(t *testing.T) {
	before := goroutineIDs()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			var leaked []string
			for id, stack := range goroutineStacks() {
				if !before[id] && (strings.Contains(stack, "west-tunnel/west/internal/") || strings.Contains(stack, "net/http.")) &&
					!strings.Contains(stack, "testing.tRunner") {
					leaked = append(leaked, stack)
				}
			}
			if len(leaked) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("%d goroutines leaked; the first:\n%.2000s", len(leaked), leaked[0])
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

func goroutineStacks() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := make(map[string]string)
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		id, _, _ := strings.Cut(strings.TrimPrefix(g, "goroutine "), " ")
		out[id] = g
	}
	return out
}

func goroutineIDs() map[string]bool {
	ids := make(map[string]bool)
	for id := range goroutineStacks() {
		ids[id] = true
	}
	return ids
}

// TestControlPortLazyClient: an idle lazy client ("ee": "no") is healthy;
// after the first request it is up, and so is its listener's peer.
func TestControlPortLazyClient(t *testing.T) {
	be := backend(t)
	g, _ := runNode(t, `{"west": {"nm": "case1.G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	tunnelURL := "ws://" + g.Addrs().Tunnel
	l, _ := runNode(t, fmt.Sprintf(`{
		"west": {"nm": "case1.L", "cp": "127.0.0.1:0"},
		"wstc": {%q: {"ee": "no"}},
		"proxy": {"http://127.0.0.1:0": {"ea": %q, "/px": {"ou": "%s/x"}}}
	}`, tunnelURL, tunnelURL, be.URL), Options{})
	cp := "http://" + l.Addrs().Control
	state := func() control.State {
		t.Helper()
		_, body := fetch(t, http.DefaultClient, cp+"/api/state")
		var s control.State
		if err := json.Unmarshal([]byte(body), &s); err != nil {
			t.Fatalf("decode /api/state: %v", err)
		}
		if len(s.Clients) != 1 || len(s.Proxies) != 1 {
			t.Fatalf("/api/state: %d clients, %d proxies; want 1 and 1", len(s.Clients), len(s.Proxies))
		}
		return s
	}

	s := state()
	if c, p := s.Clients[0], s.Proxies[0]; c.State != control.ClientIdle || c.Early || c.Connects != 0 ||
		p.PeerUp || p.Via != "client" || p.Peer != tunnelURL {
		t.Errorf("before any request: client %+v, proxy %+v", c, p)
	}
	if code, body := fetch(t, http.DefaultClient, cp+"/healthz"); code != 200 {
		t.Errorf("/healthz with the lazy client idle: %d %q, want 200", code, body)
	}

	if code, _ := fetch(t, http.DefaultClient, proxyURL(t, l)+"/px"); code != 200 {
		t.Fatalf("request through the lazy tunnel: %d", code)
	}
	s = state()
	if c, p := s.Clients[0], s.Proxies[0]; c.State != control.ClientUp || c.Connects != 1 || c.Session == nil || !p.PeerUp {
		t.Errorf("after a request: client %+v, proxy %+v", c, p)
	}
	if code, body := fetch(t, http.DefaultClient, cp+"/healthz"); code != 200 {
		t.Errorf("/healthz with the lazy client up: %d %q, want 200", code, body)
	}
}

// TestControlPeerUpBySide: a listener's peer_up follows the tunnel on its
// own side. A's listener sends to server S through a lazy client, still
// idle; B, a client of A, is named as S's URL and is up. The listener's
// peer is not up.
func TestControlPeerUpBySide(t *testing.T) {
	s, _ := runNode(t, `{"west": {"nm": "S"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	sURL := "ws://" + s.Addrs().Tunnel
	a, _ := runNode(t, fmt.Sprintf(`{"west": {"nm": "A"}, "wsts": {"sp": "ws://127.0.0.1:0"},
		"wstc": {%q: {"ee": "no"}},
		"proxy": {"http://127.0.0.1:0": {"ea": %q, "/": {"ou": "http://127.0.0.1:1/"}}}}`, sURL, sURL), Options{})
	runNode(t, fmt.Sprintf(`{"west": {"nm": %q}, "wstc": {"ws://%s": {}}}`, sURL, a.Addrs().Tunnel), Options{})
	waitUp(t, a, sURL)
	st := a.State()
	if len(st.Proxies) != 1 || len(st.Clients) != 1 || st.Clients[0].State != control.ClientIdle {
		t.Fatalf("A's state: %+v", st)
	}
	if p := st.Proxies[0]; p.PeerUp {
		t.Errorf("listener to %s (idle client) shows its peer up: client B, named alike, was taken for it", p.Peer)
	}
}

// TestControlTextEscapesAsTheSeed: GET / prints each object as the
// seed's json.dumps did, whose ensure_ascii (on by default) writes every
// character outside printable ASCII as a \u escape (a surrogate pair
// beyond the BMP).
func TestControlTextEscapesAsTheSeed(t *testing.T) {
	n := startNode(t, `{"west": {"nm": "ws://café.example/😀", "cp": "127.0.0.1:0"}}`, Options{})
	code, body := getStatus(t, "http://"+n.Addrs().Control+"/")
	if code != 200 {
		t.Fatalf("GET /: %d", code)
	}
	if want := `"nm":"ws://caf\u00e9.example/\ud83d\ude00"`; !strings.Contains(body, want) {
		t.Errorf("GET / shows the name as\n%s\nwant the seed's %s", body, want)
	}
}

// TestHealthzOneLinePerProblem: a tunnel client pointed at a port that is
// no tunnel server but answers HTTP (here the control port of another
// west, a port's typo away) is refused with what that server said. Its
// answer, many lines, must not spill into /healthz, whose body has one
// reason per line (west_health_problems counts them).
func TestHealthzOneLinePerProblem(t *testing.T) {
	g := startNode(t, `{"west": {"nm": "hz.G", "cp": "127.0.0.1:0"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	l := startNode(t, fmt.Sprintf(`{"west": {"nm": "hz.L", "cp": "127.0.0.1:0"},
		"wstc": {"ws://%s": {}}}`, g.Addrs().Control), Options{})
	client := &http.Client{Timeout: 5 * time.Second}
	var body string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var code int
		code, body = fetch(t, client, "http://"+l.Addrs().Control+"/healthz")
		if code == http.StatusServiceUnavailable && strings.Contains(body, "refused") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/healthz %d %q: want 503 saying the handshake was refused", code, body)
		}
	}
	if lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n"); len(lines) != 1 || !strings.Contains(body, "200 OK: --- west object ---") {
		t.Errorf("/healthz of one problem: %d lines %q; want one, with the first line of what the server answered", len(lines), body)
	}
}
