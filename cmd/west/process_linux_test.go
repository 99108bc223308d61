package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
	"golang.org/x/sys/unix"
)

// setNofile sets the soft RLIMIT_NOFILE of process pid, leaving its hard
// limit, and returns the soft one it had.
func setNofile(t *testing.T, pid int, soft uint64) uint64 {
	t.Helper()
	var old unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &old); err != nil {
		t.Fatal(err)
	}
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: soft, Max: old.Max}, nil); err != nil {
		t.Fatal(err)
	}
	return old.Cur
}

// logLines passes r's lines on, and closes once r ends.
func logLines(r *bufio.Reader) <-chan string {
	lines := make(chan string, 1000)
	go func() {
		defer close(lines)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			lines <- line
		}
	}()
	return lines
}

// waitLine reads lines until one matches re, for up to 5s, and says what
// it read when none did.
func waitLine(t *testing.T, lines <-chan string, re, what string) {
	t.Helper()
	rx := regexp.MustCompile(re)
	var seen strings.Builder
	deadline := time.After(5 * time.Second)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("%s: west exited:\n%s", what, seen.String())
			}
			seen.WriteString(line)
			if rx.MatchString(line) {
				return
			}
		case <-deadline:
			t.Errorf("%s: no log line matching %q in 5s; logged:\n%s", what, re, seen.String())
			return
		}
	}
}

// TestOutOfDescriptorsAcceptIsLogged: a west whose limit is lowered
// below the descriptors it has open cannot accept, not even on the
// descriptor each listener keeps in reserve to turn clients away
// (internal/node's TestOutOfDescriptorsTurnsClientsAway); its clients
// wait in the backlog. Each kind of listener says so in the log, at warn
// and naming the limit to raise, rather than nothing (the http://
// listener) or a debug line (the tunnel server and the control port,
// through net/http); and each serves the clients that waited once
// descriptors are free again, without a restart.
func TestOutOfDescriptorsAcceptIsLogged(t *testing.T) {
	tunnelAddr, proxyAddr, controlAddr := testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreeAddr(t)
	cfg := writeFile(t, "c.json", fmt.Sprintf(`{"west": {"nm": "n", "cp": "%[3]s"},
		"wsts": {"sp": "ws://%[1]s"},
		"proxy": {"http://%[2]s": {"en": "nobody", "/": {"ou": "http://127.0.0.1:9/"}}}}`,
		tunnelAddr, proxyAddr, controlAddr))
	cmd, log := startWest(t, "-c", cfg)
	waitLog(t, log, `msg=listening role=control`)
	lines := logLines(log)

	for _, l := range []struct{ role, addr string }{
		{"control", controlAddr}, {"proxy", proxyAddr}, {"tunnel", tunnelAddr},
	} {
		// Below the descriptors west has open: no new one can be made.
		was := setNofile(t, cmd.Process.Pid, 3)
		c, err := net.Dial("tcp", l.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// Any answer will do: the control port's, a proxy's 503 (en
		// "nobody" is not connected), the tunnel server's 400.
		fmt.Fprint(c, "GET /healthz HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
		waitLine(t, lines, `level=WARN .*role=`+l.role+`.*too many open files.*LimitNOFILE`, l.role+" listener out of descriptors")
		setNofile(t, cmd.Process.Pid, was)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		status, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || !strings.HasPrefix(status, "HTTP/1.1 ") {
			t.Errorf("%s listener, descriptors free again: %q, %v; want an answer", l.role, status, err)
		}
		c.Close()
	}
}

// TestOutOfDescriptorsFarDialIs503: a far west that cannot open a socket
// to the target is at a limit, as one at max_streams: the client gets 503
// (try later), not 502 as from a target that refused, and the far west
// warns naming the limit to raise. Once descriptors are free, requests
// pass again.
func TestOutOfDescriptorsFarDialIs503(t *testing.T) {
	// Each answer ends its connection, so that each request is a new dial.
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		io.WriteString(w, "ok")
	}))
	defer backend.Close()
	// The node dials its own tunnel server, so one process is both sides.
	tunnel := testutil.FreeAddr(t)
	cfg := writeFile(t, "c.json", fmt.Sprintf(`{"west": {"nm": "n"},
		"wsts": {"sp": "ws://%[1]s"},
		"proxy": {"http://127.0.0.1:0": {"ea": "ws://%[1]s", "/": {"ou": "%[2]s"}}}}`, tunnel, backend.URL))
	cmd, log := startWest(t, "-c", cfg)
	addr := waitLog(t, log, `msg=listening role=proxy .* addr=(\S+)`)[1]
	waitLog(t, log, `msg="tunnel up"`)
	lines := logLines(log)

	// One connection, kept alive: the listener needs no new descriptor.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	get := func() int {
		t.Helper()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(); code != 200 {
		t.Fatalf("before: %d", code)
	}
	was := setNofile(t, cmd.Process.Pid, 3)
	if code := get(); code != http.StatusServiceUnavailable {
		t.Errorf("far side out of descriptors: %d, want 503", code)
	}
	waitLine(t, lines, `level=WARN msg="dial failed" .*LimitNOFILE.*too many open files`, "far side out of descriptors")
	setNofile(t, cmd.Process.Pid, was)
	if code := get(); code != 200 {
		t.Errorf("descriptors free again: %d, want 200", code)
	}
}
