// Package e2e runs the west binary as an operator would: the seed's sample
// configs, unchanged, as separate processes on their fixed loopback ports.
package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
)

var westBin string

func TestMain(m *testing.M) {
	// The wests these tests start must not tell a systemd that runs the
	// tests that they are ready or stopping.
	os.Unsetenv("NOTIFY_SOCKET")
	dir, err := os.MkdirTemp("", "west-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	westBin = filepath.Join(dir, "west")
	build := exec.Command("go", "build", "-o", westBin, "../../cmd/west")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build west:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// west starts the binary with args and stops it (SIGTERM) when the test
// ends, checking that it exits cleanly.
func west(t *testing.T, args ...string) {
	t.Helper()
	startWest(t, exec.Command(westBin, args...))
}

// startWest starts cmd, a west, and returns a function that stops it with
// SIGTERM and checks that it exits cleanly (the test's end calls it too),
// and its output so far.
func startWest(t *testing.T, cmd *exec.Cmd) (stop func(), out *testutil.Buffer) {
	t.Helper()
	args := cmd.Args[1:]
	out = new(testutil.Buffer)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case err := <-exited:
				if err != nil {
					t.Errorf("west %s exited with %v", strings.Join(args, " "), err)
				}
			case <-time.After(15 * time.Second):
				cmd.Process.Kill()
				<-exited
				t.Errorf("west %s did not stop on SIGTERM", strings.Join(args, " "))
			}
		})
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("west %s output:\n%s", strings.Join(args, " "), out.String())
		}
	})
	return stop, out
}

// backend serves HTTP on a fixed address and reports what it received.
func backend(t *testing.T, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("backend on %s: %v", addr, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.RequestURI(), body)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// eventually retries a request until it gets 200 (tunnels come up in any
// order) and returns the body.
func eventually(t *testing.T, method, url, body string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var last string
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return string(b)
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, b)
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s %s never answered 200; last: %s", method, url, last)
	return ""
}

func sample(name string) string { return filepath.Join("testdata", "config-sample-"+name+".json") }

func checkThrough(t *testing.T, url, wantPrefix string) {
	t.Helper()
	if got := eventually(t, "GET", url+"?q=1", ""); got != "GET "+wantPrefix+"?q=1 " {
		t.Errorf("GET %s: %q", url, got)
	}
	if got := eventually(t, "POST", url, "posted"); got != "POST "+wantPrefix+" posted" {
		t.Errorf("POST %s: %q", url, got)
	}
}

func TestSeedCase1(t *testing.T) {
	backend(t, "127.0.0.1:9921")
	west(t, "-c", sample("case1-G"))
	west(t, "-c", sample("case1-L"))
	checkThrough(t, "http://127.0.0.1:9911/px/y", "/x/y")
}

func TestSeedCase2(t *testing.T) {
	backend(t, "127.0.0.1:9941")
	west(t, "-c", sample("case2-G"))
	west(t, "-c", sample("case2-L"))
	checkThrough(t, "http://127.0.0.1:9931/pa", "/a")
}

func TestSeedCase3(t *testing.T) {
	backend(t, "127.0.0.1:9971")
	west(t, "-c", sample("case3-G"))
	west(t, "-c", sample("case3-L"))
	west(t, "-c", sample("case3-L2"))
	checkThrough(t, "http://127.0.0.1:9951/bx", "/b")
}

// TestCase4AnyOrder: the seed gives no sample for case 4, so the test
// writes one in its shape: G <- L <- L2, started last to first.
func TestCase4AnyOrder(t *testing.T) {
	dir := t.TempDir()
	write := func(name, js string) string { return writeConfig(t, dir, name, js) }
	g := write("G", `{"west": {"nm": "ws://case4.G", "cp": ":9701"}, "wsts": {"sp": "ws://127.0.0.1:9801"},
		"proxy": {"http://127.0.0.1:9981": {"en": "ws://case4.L", "/baz": {"ou": "http://127.0.0.1:9982/ba"}}}}`)
	l := write("L", `{"west": {"nm": "ws://case4.L", "cp": ":9702"}, "wsts": {"sp": "ws://127.0.0.1:9802"},
		"wstc": {"ws://127.0.0.1:9801": {}},
		"proxy": {"http://127.0.0.1:9982": {"en": "ws://case4.L2", "/ba": {"ou": "http://127.0.0.1:9983/a"}}}}`)
	l2 := write("L2", `{"west": {"nm": "ws://case4.L2", "cp": ":9703"}, "wstc": {"ws://127.0.0.1:9802": {}}}`)
	backend(t, "127.0.0.1:9983")
	west(t, "-c", l2)
	time.Sleep(300 * time.Millisecond) // L2 finds no server and backs off
	west(t, "-c", l)
	time.Sleep(300 * time.Millisecond) // L finds no G and backs off
	west(t, "-c", g)
	checkThrough(t, "http://127.0.0.1:9981/baz/q", "/a/q")
}

func TestBadConfigExitsWithPath(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "bad.json")
	os.WriteFile(p, []byte(`{"west": {"nm": "x"}, "proxy": {"http://127.0.0.1:1": {"ea": "ws://a", "en": "b", "/p": {"ou": "http://b/"}}}}`), 0o644)
	out, err := exec.Command(westBin, "-c", p).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Fatalf("exit %v, want status 2; output %s", err, out)
	}
	if !strings.Contains(string(out), `proxy["http://127.0.0.1:1"]`) {
		t.Fatalf("error does not name the JSON path: %s", out)
	}
}

func TestCheckPrintsNormalizedForm(t *testing.T) {
	out, err := exec.Command(westBin, "check", "-c", sample("case1-L")).CombinedOutput()
	if err != nil {
		t.Fatalf("check: %v\n%s", err, out)
	}
	for _, want := range []string{"--- west object ---", "--- wstc object ---", `"ws://127.0.0.1:9801"`, `"ee":"yes"`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
}

func TestVersion(t *testing.T) {
	out, err := exec.Command(westBin, "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "west ") {
		t.Fatalf("--version: %v %q", err, out)
	}
}

// writeConfig writes js to dir/name.json and returns its path.
func writeConfig(t *testing.T, dir, name, js string) string {
	t.Helper()
	p := filepath.Join(dir, name+".json")
	if err := os.WriteFile(p, []byte(js), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
