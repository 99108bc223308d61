package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
)

// TestReloadOnSIGHUP: a west re-reads its file on SIGHUP; a new route
// works without a restart, and a broken file is refused while the running
// configuration keeps serving.
func TestReloadOnSIGHUP(t *testing.T) {
	beAddr, listen, tunnel := testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreeAddr(t)
	backend(t, beAddr)
	dir := t.TempDir()
	file := filepath.Join(dir, "west.json")
	// One west that is its own tunnel client, so one process shows it all.
	conf := func(path string) string {
		return fmt.Sprintf(`{"west": {"nm": "self"}, "wsts": {"sp": "ws://%s"}, "wstc": {"ws://%s": {}},
			"proxy": {"http://%s": {"en": "self", %q: {"ou": "http://%s/b"}}}}`, tunnel, tunnel, listen, path, beAddr)
	}
	write := func(js string) {
		if err := os.WriteFile(file, []byte(js), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(conf("/one"))
	logFile := filepath.Join(dir, "west.log")
	cmd := exec.Command(westBin, "-c", file, "-O", logFile)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if t.Failed() {
			out, _ := os.ReadFile(logFile)
			t.Logf("west log:\n%.4000s", out)
		}
	}()
	if got := eventually(t, "GET", "http://"+listen+"/one/x", ""); got != "GET /b/x " {
		t.Fatalf("before reload: %q", got)
	}

	write(conf("/two"))
	cmd.Process.Signal(syscall.SIGHUP)
	if got := eventually(t, "GET", "http://"+listen+"/two/y", ""); got != "GET /b/y " {
		t.Fatalf("after SIGHUP: %q", got)
	}
	if code, _ := get(t, "http://"+listen+"/one/x"); code != 404 {
		t.Errorf("old route after reload: %d, want 404", code)
	}

	write(`{"west": {"nm": "self"}, "proxy": {"http://` + listen + `": {"en": "self"}}}`)
	cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _ := os.ReadFile(logFile)
		if strings.Contains(string(out), "reload rejected") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no log line about the rejected reload")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, body := get(t, "http://"+listen+"/two/z"); code != 200 {
		t.Errorf("after a rejected reload: %d %q", code, body)
	}
}
