package node

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
)

// TestServerReachedByTwoURLs: a west whose listeners name one tunnel
// server two ways (127.0.0.1 and localhost) has two tunnel clients under
// one name. Both keep their tunnels, so both listeners serve, and the
// server's listener reaches the west through them.
func TestServerReachedByTwoURLs(t *testing.T) {
	be := backend(t)
	g := startNode(t, fmt.Sprintf(`{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"},
		"proxy": {"http://127.0.0.1:0": {"en": "L", "/": {"ou": "%s/back"}}}}`, be.URL), Options{})
	port := strings.TrimPrefix(g.Addrs().Tunnel, "127.0.0.1:")
	var log testutil.Buffer
	l := startNode(t, fmt.Sprintf(`{"west": {"nm": "L"}, "proxy": {
		"http://127.0.0.1:0": {"ea": "ws://127.0.0.1:%s", "/": {"ou": "%s/ip"}},
		"http://localhost:0": {"ea": "ws://localhost:%s", "/": {"ou": "%s/name"}}}}`, port, be.URL, port, be.URL),
		Options{Logger: slog.New(slog.NewTextHandler(&log, nil))})
	byIP := "http://" + l.Addrs().Proxies["http://127.0.0.1:0"]
	byName := "http://" + l.Addrs().Proxies["http://localhost:0"]

	// Each listener's first request brings its (lazy) tunnel up; then the
	// two are used in turn for a second, longer than a replaced tunnel
	// would take to go down.
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		for base, path := range map[string]string{byIP: "/ip/a", byName: "/name/a"} {
			if code, _, h := get(t, base+"/a"); code != 200 || h.Get("X-Backend-Path") != path {
				t.Fatalf("GET through %s: %d, backend path %q", base, code, h.Get("X-Backend-Path"))
			}
		}
	}
	n := 0
	for _, sess := range g.Server().Sessions() {
		if sess.Peer() == "L" {
			n++
		}
	}
	if n != 2 {
		t.Errorf("G holds %d tunnels from L, want both", n)
	}
	if code, _, h := get(t, proxyURL(t, g)+"/b"); code != 200 || h.Get("X-Backend-Path") != "/back/b" {
		t.Errorf("GET from G to L: %d, backend path %q", code, h.Get("X-Backend-Path"))
	}
	if strings.Contains(log.String(), "taken over") {
		t.Errorf("L's log:\n%s\nwant neither tunnel taken over", log.String())
	}
}

// TestRetiredSecondURLTakesNoNewStreams: when a reload drops one of the
// two URLs by which L reaches G, L retires that tunnel, telling G it
// drains. G sends its new streams for L on the other tunnel while the
// retiring one finishes the exchange it carries.
func TestRetiredSecondURLTakesNoNewStreams(t *testing.T) {
	be := backend(t) // /x/slow answers after 3s
	g := startNode(t, fmt.Sprintf(`{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"},
		"proxy": {"http://127.0.0.1:0": {"en": "L", "/": {"ou": "%s/x"}}}}`, be.URL), Options{})
	port := strings.TrimPrefix(g.Addrs().Tunnel, "127.0.0.1:")
	// Lazy clients, so that the test says which tunnel comes up last.
	lconf := func(hosts ...string) string {
		var clients, listeners []string
		for _, h := range hosts {
			clients = append(clients, fmt.Sprintf(`"ws://%s:%s": {"ee": "no"}`, h, port))
			listeners = append(listeners, fmt.Sprintf(`"http://%s:0": {"ea": "ws://%s:%s", "/": {"ou": "%s/"}}`, h, h, port, be.URL))
		}
		return fmt.Sprintf(`{"west": {"nm": "L", "shutdown_grace": "20s"}, "wstc": {%s}, "proxy": {%s}}`,
			strings.Join(clients, ", "), strings.Join(listeners, ", "))
	}
	l := startNode(t, lconf("127.0.0.1", "localhost"), Options{})
	for _, h := range []string{"127.0.0.1", "localhost"} {
		if code, _, _ := get(t, "http://"+l.Addrs().Proxies["http://"+h+":0"]+"/a"); code != 200 {
			t.Fatalf("GET through the %s listener: %d", h, code)
		}
	}
	if n := len(g.Server().Sessions()); n != 2 {
		t.Fatalf("G holds %d tunnels from L, want 2", n)
	}
	retiring := g.Server().Session("L") // localhost's, the newest, which G sends on
	slow := getLater(proxyURL(t, g) + "/slow")
	for deadline := time.Now().Add(5 * time.Second); retiring.Stats().StreamsOpen.Load() != 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the slow request never reached the newest tunnel")
		}
	}

	if err := l.Reload(mustParse(t, lconf("127.0.0.1"))); err != nil {
		t.Fatalf("reload: %v", err)
	}
	for deadline := time.Now().Add(5 * time.Second); !retiring.PeerDraining(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("G was not told that the tunnel drains")
		}
	}
	before := retiring.Stats().StreamsTotal.Load()
	for i := range 5 {
		if code, _, _ := get(t, fmt.Sprintf("%s/n%d", proxyURL(t, g), i)); code != 200 {
			t.Errorf("GET %d from G during the retirement: %d", i, code)
		}
	}
	if n := retiring.Stats().StreamsTotal.Load() - before; n != 0 {
		t.Errorf("G opened %d streams on the retiring tunnel", n)
	}
	if r := <-slow; r.err != nil || r.code != 200 {
		t.Errorf("the exchange on the retiring tunnel: %d, %v", r.code, r.err)
	}
}
