package e2e

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
)

// startKillable starts the binary like west does, but returns the process
// so the test can kill -9 it; if it is still running when the test ends it
// is stopped with SIGTERM.
func startKillable(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(westBin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Errorf("west did not stop on SIGTERM")
		}
		if t.Failed() {
			t.Logf("west %v output:\n%s", args, out.String())
		}
	})
	return cmd
}

// bigBackend serves /x/big?n=N: N pattern bytes with a Content-Length.
func bigBackend(t *testing.T, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("backend on %s: %v", addr, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n int64
		fmt.Sscan(r.URL.Query().Get("n"), &n)
		w.Header().Set("Content-Length", fmt.Sprint(n))
		io.CopyN(w, &testutil.Pattern{}, n)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// TestKill9TunnelServerMidTransfer kills the tunnel server with SIGKILL
// while a large body crosses it, then starts it again on the same port:
// the transfer in flight must fail visibly, requests meanwhile get a prompt
// 503, and requests succeed again once the client has reconnected.
func TestKill9TunnelServerMidTransfer(t *testing.T) {
	dir := t.TempDir()
	write := func(name, js string) string {
		p := filepath.Join(dir, name+".json")
		if err := os.WriteFile(p, []byte(js), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	g := write("G", `{"west": {"nm": "kill.G"}, "wsts": {"sp": "ws://127.0.0.1:9861"}}`)
	l := write("L", `{"west": {"nm": "kill.L"},
		"proxy": {"http://127.0.0.1:9862": {"ea": "ws://127.0.0.1:9861", "/px": {"ou": "http://127.0.0.1:9863/x"}}}}`)
	bigBackend(t, "127.0.0.1:9863")
	gProc := startKillable(t, "-c", g)
	west(t, "-c", l)
	const base = "http://127.0.0.1:9862/px/big"
	eventually(t, "GET", base+"?n=10", "")

	const size = 256 << 20
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{}}
	defer c.Transport.(*http.Transport).CloseIdleConnections()
	resp, err := c.Get(fmt.Sprintf("%s?n=%d", base, size))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("start of the large download: %v %v", resp, err)
	}
	h := sha256.New()
	if _, err := io.CopyN(h, resp.Body, 1<<20); err != nil {
		t.Fatalf("first MiB: %v", err)
	}
	killed := time.Now()
	gProc.Process.Kill()
	n, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	n += 1 << 20
	t.Logf("download in flight at kill -9: %d of %d bytes, %v, ended %s after the kill", n, size, err, time.Since(killed).Round(time.Millisecond))
	switch {
	case err == nil && n == size && string(h.Sum(nil)) != testutil.PatternSum(size):
		t.Fatalf("download completed with corrupt bytes")
	case err == nil && n != size:
		t.Fatalf("short body (%d of %d) without an error", n, size)
	}

	// While G is gone: a prompt 503.
	start := time.Now()
	resp, err = c.Get(base + "?n=10")
	if err != nil {
		t.Fatalf("while the server is down: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || time.Since(start) > 4*time.Second {
		t.Errorf("while the server is down: %d after %s, want a prompt 503", resp.StatusCode, time.Since(start))
	}

	// G again, on the same port.
	restarted := time.Now()
	startKillable(t, "-c", g)
	eventually(t, "GET", base+"?n=10", "")
	t.Logf("first success %s after the restart", time.Since(restarted).Round(time.Millisecond))
	for i := range 20 {
		size := int64(100_000 * i)
		resp, err := c.Get(fmt.Sprintf("%s?n=%d", base, size))
		if err != nil {
			t.Fatalf("request %d after the restart: %v", i, err)
		}
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || err != nil || n != size || string(h.Sum(nil)) != testutil.PatternSum(size) {
			t.Fatalf("request %d after the restart: status %d, %d of %d bytes, %v", i, resp.StatusCode, n, size, err)
		}
	}
}
