package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
)

// runMainEnv makes the test binary run main() instead of the tests, so
// that a test can start west as a real process and signal it.
const runMainEnv = "WEST_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		return
	}
	// The tests' wests, in this process or started from it, must not
	// tell a systemd that runs the tests that it is ready or stopping.
	os.Unsetenv("NOTIFY_SOCKET")
	os.Exit(m.Run())
}

// startWest runs west with args as a child process and returns it with a
// reader of its log (stdout).
func startWest(t *testing.T, args ...string) (*exec.Cmd, *bufio.Reader) {
	t.Helper()
	return startWestCmd(t, exec.Command(os.Args[0], args...))
}

// startWestCmd starts cmd, which runs west, as startWest does.
func startWestCmd(t *testing.T, cmd *exec.Cmd) (*exec.Cmd, *bufio.Reader) {
	t.Helper()
	cmd.Env = append(os.Environ(), runMainEnv+"=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() }) // the test waits for it
	return cmd, bufio.NewReader(out)
}

// waitLog reads log lines until one matches re, and returns its groups.
func waitLog(t *testing.T, r *bufio.Reader, re string) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	var seen strings.Builder
	for {
		line, err := r.ReadString('\n')
		seen.WriteString(line)
		if m := rx.FindStringSubmatch(line); m != nil {
			return m
		}
		if err != nil {
			t.Fatalf("no log line matching %q:\n%s", re, seen.String())
		}
	}
}

// TestSecondSignalStopsAtOnce: a first SIGINT drains for up to
// shutdown_grace; a second one must end west at once, as an operator who
// presses Ctrl-C again expects, rather than be swallowed for the rest of
// the grace.
func TestSecondSignalStopsAtOnce(t *testing.T) {
	testSecondSignalStops(t, func(args ...string) *exec.Cmd { return exec.Command(os.Args[0], args...) })
}

// testSecondSignalStops runs TestSecondSignalStopsAtOnce on west as
// command makes it.
func testSecondSignalStops(t *testing.T, command func(args ...string) *exec.Cmd) {
	// A backend that accepts and holds its connections, so that a TCP
	// stream through west stays in flight.
	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	go func() {
		for {
			c, err := backend.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	// The node dials its own tunnel server, so one process carries the stream.
	tunnel := testutil.FreeAddr(t)
	cfg := writeFile(t, "c.json", fmt.Sprintf(`{"west": {"nm": "n", "shutdown_grace": "10m"},
		"wsts": {"sp": "ws://%[1]s"},
		"proxy": {"tcp://127.0.0.1:0": {"ea": "ws://%[1]s", "ou": "tcp://%[2]s"}}}`, tunnel, backend.Addr()))
	cmd, log := startWestCmd(t, command("-c", cfg))
	addr := waitLog(t, log, `msg=listening role=proxy .* addr=(\S+)`)[1]
	waitLog(t, log, `msg="tunnel up"`)
	go io.Copy(io.Discard, log)

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("held")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // let the stream reach the backend

	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		t.Fatalf("west exited on the first SIGINT with a connection in flight (%v); want it to drain", err)
	case <-time.After(500 * time.Millisecond):
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		t.Fatal("west still draining 20s after a second SIGINT; want it to stop at once")
	}
}

// TestREADMEErrorExamples: the error lines the README shows are the ones
// west prints for such files.
func TestREADMEErrorExamples(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ config, want string }{
		{`{"west": {"nm": "n"}, "wsts": {"sp": "ws://127.0.0.1:0"},
			"proxy": {"http://127.0.0.1:9931": {"en": "x", "ea": "ws://127.0.0.1:9801", "/": {"ou": "http://127.0.0.1:1/"}}}}`,
			`west: config bad.json: proxy["http://127.0.0.1:9931"]: want exactly one of "en" or "ea", got both`},
		{`{"west": {"nm": "n"}, "wstc": {"ws://127.0.0.1:9801": {"early": "yes"}}}`,
			`west: config bad.json: wstc["ws://127.0.0.1:9801"].early: unknown key; want "nm", "ee", `},
		{"{\n    \"west\": {\n        \"nm\": \"n\",\n        \"cp\": \":9701\",\n    }\n}",
			`west: config bad.json: line 5, column 5: invalid JSON: invalid character '}' looking for beginning of object key string`},
	} {
		// The README runs west on bad.json; here the file has a longer path.
		path := writeFile(t, "bad.json", tc.config)
		code, _, stderr := runArgs(t, t.Context(), "-c", path)
		if want := strings.Replace(tc.want, "bad.json", path, 1); code != exitConfig || !strings.Contains(stderr, want) {
			t.Errorf("exit %d, stderr %q; want %d and %q", code, stderr, exitConfig, want)
		}
		if !strings.Contains(string(readme), tc.want) {
			t.Errorf("README does not show %q", tc.want)
		}
	}
}
