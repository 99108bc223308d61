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
