package control

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/config"
)

// caseG is the seed's case 2 G: a tunnel server, one listener for peer L,
// and one tunnel client of its own, early.
const caseG = `{
	"west": {"nm": "ws://case2.G", "cp": "127.0.0.1:9701"},
	"wsts": {"sp": "ws://127.0.0.1:9801"},
	"wstc": {"ws://127.0.0.1:9802": {}, "ws://127.0.0.1:9803": {"ee": "no"}},
	"proxy": {"http://127.0.0.1:9931": {"en": "ws://case2.L", "/pa": {"ou": "http://127.0.0.1:9941/a"}}}
}`

func mustConfig(t *testing.T, js string) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// fakeSource is a State the test changes as it goes.
type fakeSource struct {
	mu sync.Mutex
	s  State
}

func (f *fakeSource) State() State {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.s
}

func (f *fakeSource) set(update func(*State)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	update(&f.s)
}

var since = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// healthyG is caseG's state with everything that should be up, up.
func healthyG() State {
	return State{
		Name:        "ws://case2.G",
		ControlAddr: "127.0.0.1:9701",
		Server: &Server{URL: "ws://127.0.0.1:9801", Addr: "127.0.0.1:9801", Peers: []Peer{
			{Name: "ws://case2.L", RemoteAddr: "127.0.0.1:40000", Since: since, BytesIn: 10, BytesOut: 20},
		}},
		Clients: []Client{
			{URL: "ws://127.0.0.1:9802", Name: "ws://case2.G", Early: true, State: ClientUp, Since: since, Connects: 1,
				Session: &Peer{Name: "ws://127.0.0.1:9802", RemoteAddr: "127.0.0.1:9802", Since: since}},
			{URL: "ws://127.0.0.1:9803", Name: "ws://case2.G", State: ClientIdle, Since: since},
		},
		Proxies: []Proxy{{
			URL: "http://127.0.0.1:9931", Kind: "http", Addr: "127.0.0.1:9931",
			Peer: "ws://case2.L", Via: "server", PeerUp: true,
			Routes: []Route{{Path: "/pa", Target: "http://127.0.0.1:9941/a"}},
		}},
	}
}

func newHandler(t *testing.T, src Source, allow func(netip.Addr) bool) *Handler {
	t.Helper()
	return New(Options{Config: staticConfig(mustConfig(t, caseG)), Source: src, Metrics: NewMetrics(), Allow: allow})
}

// do serves one request from remote and returns the status and body.
func do(h http.Handler, method, path, remote string) (int, string, http.Header) {
	r := httptest.NewRequest(method, path, nil)
	r.RemoteAddr = remote
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	body, _ := io.ReadAll(w.Result().Body)
	return w.Code, string(body), w.Result().Header
}

func TestAccessList(t *testing.T) {
	allow := func(a netip.Addr) bool { return netip.MustParsePrefix("10.0.0.0/8").Contains(a) }
	h := newHandler(t, &fakeSource{s: healthyG()}, allow)
	for _, tc := range []struct {
		remote string
		want   int
	}{
		{"10.1.2.3:5000", 200},
		{"[::ffff:10.1.2.3]:5000", 200}, // a v4-mapped address is its v4 self
		{"192.168.1.1:5000", 403},
		{"[::1]:5000", 403},
		{"garbage", 403},
	} {
		for _, path := range []string{"/", "/api/state", "/metrics", "/healthz", "/nowhere"} {
			code, _, _ := do(h, "GET", path, tc.remote)
			want := tc.want
			if want == 200 && path == "/nowhere" {
				want = 404
			}
			if code != want {
				t.Errorf("GET %s from %s: %d, want %d", path, tc.remote, code, want)
			}
		}
	}
	// Refusal comes before the method check: a stranger learns nothing.
	if code, _, _ := do(h, "POST", "/", "192.168.1.1:5000"); code != 403 {
		t.Errorf("POST from a stranger: %d, want 403", code)
	}
}

func TestMethods(t *testing.T) {
	h := newHandler(t, &fakeSource{s: healthyG()}, nil)
	for _, m := range []string{"POST", "PUT", "DELETE", "PATCH", "OPTIONS"} {
		for _, path := range []string{"/", "/api/state", "/metrics", "/healthz"} {
			code, _, hdr := do(h, m, path, "127.0.0.1:1")
			if code != 405 || hdr.Get("Allow") != "GET, HEAD" {
				t.Errorf("%s %s: %d Allow %q, want 405 with Allow GET, HEAD", m, path, code, hdr.Get("Allow"))
			}
		}
	}
	// (The server, not the handler, drops a HEAD response's body.)
	for _, path := range []string{"/", "/api/state", "/metrics", "/healthz"} {
		if code, _, _ := do(h, "HEAD", path, "127.0.0.1:1"); code != 200 {
			t.Errorf("HEAD %s: %d, want 200", path, code)
		}
	}
}

func TestHealthz(t *testing.T) {
	src := &fakeSource{s: healthyG()}
	h := newHandler(t, src, nil)
	check := func(step string, want int, wantLines ...string) {
		t.Helper()
		code, body, _ := do(h, "GET", "/healthz", "127.0.0.1:1")
		if code != want {
			t.Errorf("%s: %d, want %d; body %q", step, code, want, body)
		}
		if want == 200 && body != "ok\n" {
			t.Errorf("%s: body %q, want ok", step, body)
		}
		lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n")
		if want == 503 && len(lines) != len(wantLines) {
			t.Errorf("%s: %d reasons %q, want %d", step, len(lines), lines, len(wantLines))
			return
		}
		for i, w := range wantLines {
			if !strings.Contains(lines[i], w) {
				t.Errorf("%s: reason %d is %q, want it to contain %q", step, i, lines[i], w)
			}
		}
	}
	check("all up, lazy client idle", 200)

	src.set(func(s *State) { s.Server.Peers = nil })
	check("peer gone", 503, "peer ws://case2.L is not connected (needed by http://127.0.0.1:9931)")

	src.set(func(s *State) {
		retry := since.Add(time.Second)
		s.Clients[0] = Client{URL: "ws://127.0.0.1:9802", Early: true, State: ClientBackoff,
			LastError: "dial tunnel server: connection refused", RetryAt: &retry}
	})
	check("and early client down", 503,
		"tunnel client to ws://127.0.0.1:9802 is backoff until 2026-11-25T10:00:01Z: dial tunnel server: connection refused",
		"peer ws://case2.L")

	src.set(func(s *State) { *s = healthyG() })
	check("all back", 200)

	src.set(func(s *State) {
		s.Proxies[0].Addr, s.Proxies[0].LastError = "", "listen tcp 127.0.0.1:9931: bind: address already in use"
	})
	check("listener not listening", 503,
		"listener http://127.0.0.1:9931 is not listening: listen tcp 127.0.0.1:9931: bind: address already in use")
	src.set(func(s *State) { *s = healthyG() })

	// A lazy client that has been asked for counts once it is connecting.
	src.set(func(s *State) { s.Clients[1].State = ClientConnecting })
	check("lazy client connecting", 503, "tunnel client to ws://127.0.0.1:9803 is connecting")

	src.set(func(s *State) { s.Clients[1].State = ClientUp })
	check("lazy client up", 200)

	src.set(func(s *State) { s.Clients[0].State = ClientConnecting })
	check("early client not yet up", 503, "ws://127.0.0.1:9802 is connecting")
}

func TestHealthzOnePeerManyListeners(t *testing.T) {
	s := State{
		Server: &Server{},
		Proxies: []Proxy{
			{URL: "http://a", Peer: "p", Via: "server"},
			{URL: "http://b", Peer: "p", Via: "server"},
			{URL: "http://c", Peer: "ws://x", Via: "client"}, // its client is judged instead
		},
	}
	if got := s.Problems(); len(got) != 1 {
		t.Fatalf("problems %q, want one for peer p", got)
	}
}

func TestText(t *testing.T) {
	h := newHandler(t, &fakeSource{s: healthyG()}, nil)
	code, body, hdr := do(h, "GET", "/", "127.0.0.1:1")
	if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /: %d %s", code, hdr.Get("Content-Type"))
	}
	sections := []string{"--- west object ---\n", "--- wsts object ---\n", "--- wstc object ---\n", "--- proxy object ---\n"}
	at := 0
	for _, s := range sections {
		i := strings.Index(body[at:], s)
		if i < 0 {
			t.Fatalf("section %q missing or out of order", strings.TrimSpace(s))
		}
		at += i + len(s)
	}
	for _, want := range []string{
		// The config, as the seed printed it.
		`"nm":"ws://case2.G"`, `"sp":"ws://127.0.0.1:9801"`, `"ou":"http://127.0.0.1:9941/a"`, `"en":"ws://case2.L"`,
		// Live: the connected peer, with its address and time.
		`"peers":[`, `"name":"ws://case2.L"`, `"remote_addr":"127.0.0.1:40000"`, `"since":"2026-11-25T10:00:00Z"`,
		// Live: client states.
		`"state":"up"`, `"state":"idle"`, `"connects":1`, `"remote_addr":"127.0.0.1:9802"`,
		// Live: the listener's peer.
		`"peer_up":true`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("GET / lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("GET /:\n%s", body)
	}
}

func TestJSON(t *testing.T) {
	src := &fakeSource{s: healthyG()}
	h := newHandler(t, src, nil)
	code, body, hdr := do(h, "GET", "/api/state", "127.0.0.1:1")
	if code != 200 || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /api/state: %d %s", code, hdr.Get("Content-Type"))
	}
	var got State
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("decode: %v", err)
	}
	if got.Server == nil || len(got.Server.Peers) != 1 || got.Server.Peers[0].Name != "ws://case2.L" ||
		!got.Server.Peers[0].Since.Equal(since) || got.Clients[0].Session == nil {
		t.Errorf("round trip lost data: %+v", got)
	}
	// The field names are an interface: pin some.
	var raw map[string]any
	json.Unmarshal([]byte(body), &raw)
	for _, k := range []string{"name", "control_addr", "server", "clients", "proxies"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("no top-level %q", k)
		}
	}
	for _, k := range []string{`"remote_addr"`, `"bytes_in"`, `"streams_open"`, `"peer_up"`, `"connects"`} {
		if !strings.Contains(body, k) {
			t.Errorf("no field %s", k)
		}
	}
	// A client's or listener's last_error only when it has one.
	if strings.Contains(body, `"last_error"`) {
		t.Errorf("last_error shown with no error:\n%s", body)
	}
	src.set(func(s *State) { s.Proxies[0].Addr, s.Proxies[0].LastError = "", "bind: address already in use" })
	_, body, _ = do(h, "GET", "/api/state", "127.0.0.1:1")
	if !strings.Contains(body, `"last_error": "bind: address already in use"`) {
		t.Errorf("a listener's last_error missing:\n%s", body)
	}

	// Empty lists are [], never null.
	src.set(func(s *State) { *s = State{Server: &Server{}} })
	_, body, _ = do(h, "GET", "/api/state", "127.0.0.1:1")
	for _, k := range []string{`"clients": []`, `"proxies": []`, `"peers": []`} {
		if !strings.Contains(body, k) {
			t.Errorf("empty state lacks %s", k)
		}
	}
}

// seedDump is the control port output shown in the seed's README, for
// its use case 3 G.
const seedDump = `--- west object ---
{
    "addr":"",
    "cp":":9701",
    "nm":"ws://case3.G.fiap.org",
    "port":9701
}
--- wsts object ---
{
    "addr":"127.0.0.1",
    "port":9801,
    "sp":"ws://127.0.0.1:9801"
}
--- wstc object ---
{
    "ws://case3.L2.fiap.org":{
        "ee":"no",
        "nm":"ws://case3.G.fiap.org"
    }
}
--- proxy object ---
{
    "http://127.0.0.1:9961":{
        "/by":{
            "ou":"http://127.0.0.1:9971/b"
        },
        "addr":"127.0.0.1",
        "en":"ws://case3.L2.fiap.org",
        "port":9961
    }
}
`

// TestTextIsTheSeedDump: for the seed's case 3 G sample, with nothing
// live, GET / prints what the seed's README shows, the entry its config
// check added to wstc for the en listener's peer included.
func TestTextIsTheSeedDump(t *testing.T) {
	cfg := mustConfig(t, `{
		"west": {"nm": "ws://case3.G.fiap.org", "cp": ":9701"},
		"wsts": {"sp": "ws://127.0.0.1:9801"},
		"wstc": {},
		"proxy": {"http://127.0.0.1:9961": {"en": "ws://case3.L2.fiap.org", "/by": {"ou": "http://127.0.0.1:9971/b"}}}
	}`)
	if got := Render(cfg, State{}); got != seedDump {
		t.Errorf("got\n%s\nwant\n%s", got, seedDump)
	}
}

// TestTextWithoutLiveStateIsTheConfig: with nothing live, and no en
// listener, GET / is the seed's dump of the configuration, as `west
// check` prints it.
func TestTextWithoutLiveStateIsTheConfig(t *testing.T) {
	for _, js := range []string{
		`{"west": {"nm": "x"}}`,
		`{"west": {"nm": "x", "cp": ":9701"}, "wstc": {"ws://127.0.0.1:9801": {}},
		  "proxy": {"http://127.0.0.1:9911": {"ea": "ws://127.0.0.1:9801", "/px": {"ou": "http://127.0.0.1:9921/x"}}}}`,
	} {
		cfg := mustConfig(t, js)
		if got, want := Render(cfg, State{}), cfg.Render(); got != want {
			t.Errorf("Render with no state differs from config.Render:\n%s\nwant\n%s", got, want)
		}
	}
}

func staticConfig(c *config.Config) func() *config.Config { return func() *config.Config { return c } }
