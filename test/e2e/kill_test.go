package e2e

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
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
	write := func(name, js string) string { return writeConfig(t, dir, name, js) }
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

// TestFrozenTunnelServer stops the tunnel server's process (SIGSTOP): its
// kernel still acknowledges what is sent to it, but it answers nothing.
// The client must find the tunnel dead within dead_after, end the
// connection carried on it rather than leave it hanging, and be back up
// once the server runs again.
func TestFrozenTunnelServer(t *testing.T) {
	dir := t.TempDir()
	write := func(name, js string) string { return writeConfig(t, dir, name, js) }
	tun, entry, cp := testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreeAddr(t)
	echo := testutil.EchoServer(t)
	g := write("G", fmt.Sprintf(`{"west": {"nm": "frozen.G", "keepalive": "200ms", "dead_after": "1s"}, "wsts": {"sp": "ws://%s"}}`, tun))
	l := write("L", fmt.Sprintf(`{"west": {"nm": "frozen.L", "cp": %q, "keepalive": "200ms", "dead_after": "1s"},
		"proxy": {"tcp://%s": {"ea": "ws://%s", "ou": "tcp://%s"}}}`, cp, entry, tun, echo))
	gProc := startKillable(t, "-c", g)
	defer gProc.Process.Signal(syscall.SIGCONT) // before the cleanup's SIGTERM
	west(t, "-c", l)
	health := "http://" + cp + "/healthz"
	eventually(t, "GET", health, "")

	c := testutil.DialClient(t, entry)
	buf := make([]byte, 5)
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("echo before the freeze: %v", err)
	}

	if err := gProc.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// The signal takes effect a moment later: until then the server could
	// still echo what comes next.
	waitStopped(t, gProc.Process.Pid)
	frozen := time.Now()
	c.Write([]byte("frozen?"))
	_, err := c.Read(buf)
	ended := time.Since(frozen)
	t.Logf("connection through the frozen tunnel ended after %s: %v", ended.Round(time.Millisecond), err)
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) || ended > 3*time.Second {
		t.Errorf("connection through the frozen tunnel: %v after %s, want its end within about dead_after (1s)", err, ended.Round(time.Millisecond))
	}
	resp, err := http.Get(health)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Errorf("healthz with the server frozen: %d, want 503", resp.StatusCode)
	}

	gProc.Process.Signal(syscall.SIGCONT)
	thawed := time.Now()
	eventually(t, "GET", health, "")
	t.Logf("tunnel up again %s after the server resumed", time.Since(thawed).Round(time.Millisecond))
	c2 := testutil.DialClient(t, entry)
	c2.Write([]byte("again"))
	if _, err := io.ReadFull(c2, buf); err != nil || string(buf) != "again" {
		t.Fatalf("echo after the thaw: %q %v", buf, err)
	}
}

// waitStopped waits until process pid is stopped by a signal, as
// /proc/PID/stat tells (state T).
func waitStopped(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			t.Fatal(err)
		}
		// The state follows the command, which is in parentheses.
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) && b[i+2] == 'T' {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d not stopped 5 s after SIGSTOP: %s", pid, b)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestFrozenTunnelClientKeepsLiveTunnel stops a tunnel client's process
// for longer than its own dead_after but not its server's (a paused VM, a
// SIGSTOP): the server, still waiting, goes on pinging, and its pings wait
// in the client's socket. Once it runs again the client must read them
// before it judges its peer silent: it closed the live tunnel instead, and
// cut the connection carried on it.
func TestFrozenTunnelClientKeepsLiveTunnel(t *testing.T) {
	dir := t.TempDir()
	write := func(name, js string) string { return writeConfig(t, dir, name, js) }
	tun, entry, cp := testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreeAddr(t)
	echo := testutil.EchoServer(t)
	g := write("G", fmt.Sprintf(`{"west": {"nm": "thaw.G", "keepalive": "300ms", "dead_after": "30s"}, "wsts": {"sp": "ws://%s"}}`, tun))
	l := write("L", fmt.Sprintf(`{"west": {"nm": "thaw.L", "cp": %q, "keepalive": "300ms", "dead_after": "1s"},
		"proxy": {"tcp://%s": {"ea": "ws://%s", "ou": "tcp://%s"}}}`, cp, entry, tun, echo))
	west(t, "-c", g)
	lProc := startKillable(t, "-c", l)
	defer lProc.Process.Signal(syscall.SIGCONT) // before the cleanup's SIGTERM
	eventually(t, "GET", "http://"+cp+"/healthz", "")

	c := testutil.DialClient(t, entry)
	buf := make([]byte, 5)
	echoes := func(what, msg string) {
		t.Helper()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
			t.Fatalf("%s: %q, %v", what, buf, err)
		}
	}
	echoes("echo before the freeze", "hello")

	if err := lProc.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitStopped(t, lProc.Process.Pid)
	time.Sleep(2 * time.Second) // twice the client's dead_after
	lProc.Process.Signal(syscall.SIGCONT)
	echoes("echo through the tunnel after the thaw", "again")
	_, state := get(t, "http://"+cp+"/api/state")
	if !strings.Contains(state, `"connects": 1,`) {
		t.Errorf("client state after the thaw, want its first tunnel still up:\n%s", state)
	}
}
