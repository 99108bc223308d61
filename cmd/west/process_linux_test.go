package main

import (
	"bufio"
	"fmt"
	"net"
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

// TestOutOfDescriptorsAcceptIsLogged: a west out of file descriptors
// cannot accept; its clients wait in the backlog. Each kind of listener
// says so in the log, at warn and naming the limit to raise, rather than
// nothing (the http:// listener) or a debug line (the tunnel server and
// the control port, through net/http); and each serves the clients that
// waited once descriptors are free again, without a restart.
func TestOutOfDescriptorsAcceptIsLogged(t *testing.T) {
	tunnelAddr, proxyAddr, controlAddr := testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreeAddr(t)
	cfg := writeFile(t, "c.json", fmt.Sprintf(`{"west": {"nm": "n", "cp": "%[3]s"},
		"wsts": {"sp": "ws://%[1]s"},
		"proxy": {"http://%[2]s": {"en": "nobody", "/": {"ou": "http://127.0.0.1:9/"}}}}`,
		tunnelAddr, proxyAddr, controlAddr))
	cmd, log := startWest(t, "-c", cfg)
	waitLog(t, log, `msg=listening role=control`)
	lines := make(chan string, 1000)
	go func() {
		r := bufio.NewReader(log)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				close(lines)
				return
			}
			lines <- line
		}
	}()

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
		var seen strings.Builder
		deadline := time.After(5 * time.Second)
	wait:
		for {
			select {
			case line, ok := <-lines:
				if !ok {
					t.Fatalf("west exited:\n%s", seen.String())
				}
				seen.WriteString(line)
				if strings.Contains(line, "level=WARN") && strings.Contains(line, "role="+l.role) &&
					strings.Contains(line, "too many open files") && strings.Contains(line, "LimitNOFILE") {
					break wait
				}
			case <-deadline:
				t.Errorf("%s listener out of descriptors: no warning naming the limit in 5s; logged:\n%s", l.role, seen.String())
				break wait
			}
		}
		setNofile(t, cmd.Process.Pid, was)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		status, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || !strings.HasPrefix(status, "HTTP/1.1 ") {
			t.Errorf("%s listener, descriptors free again: %q, %v; want an answer", l.role, status, err)
		}
		c.Close()
	}
}
