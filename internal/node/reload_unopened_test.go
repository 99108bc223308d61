package node

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/west-tunnel/west/internal/config"
	"github.com/west-tunnel/west/internal/control"
	"github.com/west-tunnel/west/internal/tunnel"
)

// TestReloadUnopenedListenerShowsAndIsRetried: listeners a reload could
// not open (their ports in use) make /healthz 503, one reason each naming
// the listener and the error, and show that error as last_error, with no
// addr, in /api/state and GET /. The next reload of the same file opens
// them once their ports are free: they serve, and health is back to 200.
func TestReloadUnopenedListenerShowsAndIsRetried(t *testing.T) {
	be := backend(t)
	echo := udpEcho(t)
	g, _ := runNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	srv := "ws://" + g.Addrs().Tunnel

	busyTCP, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busyTCP.Close()
	busyUDP, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busyUDP.Close()
	httpAddr, udpAddr := busyTCP.Addr().String(), busyUDP.LocalAddr().String()
	// What west meets opening them, in this system's words.
	_, tcpErr := net.Listen("tcp", httpAddr)
	_, udpErr := net.ListenPacket("udp", udpAddr)
	if tcpErr == nil || udpErr == nil {
		t.Fatalf("a second listen on the busy ports succeeded: tcp %v, udp %v", tcpErr, udpErr)
	}

	file := filepath.Join(t.TempDir(), "west.json")
	write := func(js string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(js), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	base := fmt.Sprintf(`{"west": {"nm": "L", "cp": "127.0.0.1:0"}, "wstc": {%q: {}}`, srv)
	write(base + "}")
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	l, err := New(cfg, Options{Logger: testLogger(t), ConfigPath: file})
	if err != nil {
		t.Fatal(err)
	}
	runStarted(t, l)
	waitClient(t, l, srv, tunnel.StateUp)
	cp := "http://" + l.Addrs().Control
	if code, body := getStatus(t, cp+"/healthz"); code != 200 {
		t.Fatalf("/healthz before the reload: %d %q", code, body)
	}

	reload := func() (int, string) {
		t.Helper()
		resp, err := http.Post(cp+"/api/reload", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	proxies := func() map[string]control.Proxy {
		t.Helper()
		_, body := getStatus(t, cp+"/api/state")
		var s control.State
		if err := json.Unmarshal([]byte(body), &s); err != nil {
			t.Fatalf("/api/state: %v\n%s", err, body)
		}
		m := make(map[string]control.Proxy)
		for _, p := range s.Proxies {
			m[p.URL] = p
		}
		return m
	}
	httpURL, udpURL := "http://"+httpAddr, "udp://"+udpAddr

	write(base + fmt.Sprintf(`, "proxy": {
		%q: {"ea": %q, "/a": {"ou": "%s/x"}},
		%q: {"ea": %q, "ou": "udp://%s"}}}`, httpURL, srv, be.URL, udpURL, srv, echo))
	if code, body := reload(); code != 500 || !strings.Contains(body, httpAddr) || !strings.Contains(body, udpAddr) {
		t.Fatalf("reload with both ports in use: %d %q, want 500 naming both", code, body)
	}
	code, body := getStatus(t, cp+"/healthz")
	want := fmt.Sprintf("listener %s is not listening: %v\nlistener %s is not listening: %v\n", httpURL, tcpErr, udpURL, udpErr)
	if code != 503 || body != want {
		t.Errorf("/healthz with two listeners not listening: %d %q, want 503 %q", code, body, want)
	}
	ps := proxies()
	for url, err := range map[string]error{httpURL: tcpErr, udpURL: udpErr} {
		if p := ps[url]; p.LastError != err.Error() || p.Addr != "" {
			t.Errorf("/api/state, %s: last_error %q, addr %q; want %q and no addr", url, p.LastError, p.Addr, err)
		}
	}
	if _, text := getStatus(t, cp+"/"); !strings.Contains(text, fmt.Sprintf(`"last_error":%q`, tcpErr.Error())) {
		t.Errorf("GET / does not show the listener's error %q:\n%s", tcpErr, text)
	}

	// The ports freed, the same file reloaded opens both.
	busyTCP.Close()
	busyUDP.Close()
	if code, body := reload(); code != 200 {
		t.Fatalf("reload with the ports free: %d %q", code, body)
	}
	if code, body := getStatus(t, cp+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz once the listeners are open: %d %q, want 200 ok", code, body)
	}
	ps = proxies()
	for url, addr := range map[string]string{httpURL: httpAddr, udpURL: udpAddr} {
		if p := ps[url]; p.LastError != "" || p.Addr != addr {
			t.Errorf("/api/state, %s once open: last_error %q, addr %q; want none and %s", url, p.LastError, p.Addr, addr)
		}
	}
	if _, text := getStatus(t, cp+"/"); strings.Contains(text, "last_error") {
		t.Errorf("GET / still shows an error:\n%s", text)
	}
	if code, _, h := get(t, httpURL+"/a/b"); code != 200 || h.Get("X-Backend-Path") != "/x/b" {
		t.Errorf("through the reopened http listener: %d, backend path %q", code, h.Get("X-Backend-Path"))
	}
	c, err := net.Dial("udp", udpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := askUDP(c); got != "echo hi" {
		t.Errorf("through the reopened udp listener: %q", got)
	}
}
