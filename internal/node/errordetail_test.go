package node

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/west-tunnel/west/internal/testutil"
)

// TestBriefErrors runs a listener with "error_detail": "no": each error it
// answers itself, on the listener's own loop (GET) and on net/http's path
// (POST with a body), gives its status alone, naming neither the tunnel,
// the backend nor the route, while the log keeps why. A reload that sets
// "yes" brings the reasons back on the same socket.
func TestBriefErrors(t *testing.T) {
	be := backend(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String() // nothing listens: the far dial is refused
	ln.Close()

	g := startNode(t, `{"west": {"nm": "brief.G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	conf := func(detail, server string) string {
		return fmt.Sprintf(`{"west": {"nm": "brief.L"},
			"proxy": {"http://127.0.0.1:0": {"ea": "ws://%s", "error_detail": %q,
				"/refused": {"ou": "http://%s/"},
				"/guarded": {"ou": "%s/x", "ca": ["192.0.2.1"]}}}}`, server, detail, refused, be.URL)
	}
	var log testutil.Buffer
	l := startNode(t, conf("no", g.Addrs().Tunnel), Options{Logger: slog.New(slog.NewTextHandler(&log, nil))})
	base := proxyURL(t, l)

	// Each answer, and what the detailed one says that the brief one must not.
	cases := []struct {
		path   string
		status int
		reason string
	}{
		{"/refused", 502, refused},
		{"/guarded/a", 403, "/guarded"},
		{"/elsewhere", 404, "no route"},
	}
	ask := func(method, path string) (int, string) {
		t.Helper()
		var body io.Reader
		if method == http.MethodPost {
			body = strings.NewReader("a body takes net/http's path")
		}
		req, err := http.NewRequest(method, base+path, body)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%s %s: reading the body: %v", method, path, err)
		}
		return resp.StatusCode, string(b)
	}
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		for _, c := range cases {
			status, body := ask(method, c.path)
			want := fmt.Sprintf("west: %d %s\n", c.status, http.StatusText(c.status))
			if status != c.status || body != want {
				t.Errorf("brief, %s %s: %d %q, want %d %q", method, c.path, status, body, c.status, want)
			}
		}
	}
	// A 5xx is logged at warn, one a second: the first one's reason is there.
	if !strings.Contains(log.String(), refused) {
		t.Errorf("the log does not say why /refused failed:\n%s", log.String())
	}

	if err := l.Reload(mustParse(t, conf("yes", g.Addrs().Tunnel))); err != nil {
		t.Fatal(err)
	}
	if got := proxyURL(t, l); got != base {
		t.Fatalf("the reload moved the listener from %s to %s", base, got)
	}
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		for _, c := range cases {
			status, body := ask(method, c.path)
			if status != c.status || !strings.Contains(body, c.reason) {
				t.Errorf("detailed, %s %s: %d %q, want %d saying %q", method, c.path, status, body, c.status, c.reason)
			}
		}
	}

	// A tunnel server that is not there: the 503 names neither it nor
	// its last error.
	d := startNode(t, conf("no", refused), Options{})
	base = proxyURL(t, d)
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		status, body := ask(method, "/refused")
		if status != 503 || body != "west: 503 Service Unavailable\n" {
			t.Errorf("brief, tunnel down, %s: %d %q, want 503 and the status alone", method, status, body)
		}
	}
}
