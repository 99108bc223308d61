//go:build unix

package node

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// outOfFilesEnv makes TestOutOfDescriptorsTurnsClientsAway, in the test
// binary run again as a child, the west that runs out of descriptors:
// its limit is its own, and would be every test's in one process.
const outOfFilesEnv = "WEST_TEST_OUT_OF_FILES"

// TestOutOfDescriptorsTurnsClientsAway: a west out of file descriptors
// could not accept, and left its clients waiting in the backlog,
// unanswered, until one freed. Now each listener turns them away at once
// on a descriptor it keeps in reserve: those that speak HTTP with a 503,
// a tcp:// listener by closing the connection. It says so in its log, and
// serves as before once descriptors are free again.
func TestOutOfDescriptorsTurnsClientsAway(t *testing.T) {
	if os.Getenv(outOfFilesEnv) != "" {
		runOutOfFiles(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), outOfFilesEnv+"=1")
	cmd.Stderr = os.Stderr
	tell, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1000)
	go func() {
		defer close(lines)
		r := bufio.NewReader(out)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			lines <- line
		}
	}()
	var seen strings.Builder // the child's output, for failures
	// await reads the child's lines until one holds mark, and returns
	// the rest of it.
	await := func(mark string) string {
		t.Helper()
		timeout := time.After(20 * time.Second)
		for {
			select {
			case line, ok := <-lines:
				if !ok {
					t.Fatalf("the child ended before %q:\n%s", mark, seen.String())
				}
				seen.WriteString(line)
				if _, rest, ok := strings.Cut(line, mark); ok {
					return strings.TrimSpace(rest)
				}
			case <-timeout:
				t.Fatalf("no %q from the child in 20s:\n%s", mark, seen.String())
			}
		}
	}
	defer func() {
		tell.Close() // the child stops at the end of its input
		stuck := time.AfterFunc(30*time.Second, func() { cmd.Process.Kill() })
		defer stuck.Stop()
		for line := range lines {
			seen.WriteString(line)
		}
		if err := cmd.Wait(); err != nil {
			t.Errorf("child: %v\n%s", err, seen.String())
		}
	}()

	addrs := map[string]string{}
	for _, role := range []string{"http", "tcp", "tunnel", "control"} {
		addrs[role] = await("addr " + role + " ")
	}
	io.WriteString(tell, "fill\n")
	t.Logf("child filled its descriptors: %s", await("filled "))

	// The line a listener logs once it has turned a client away, its
	// spare reserved again: another listener accepting while the spare
	// is free could take it, and serve its client as usual.
	turnedAway := map[string]string{"http": "role=proxy name=http://", "tcp": "role=proxy name=tcp://",
		"tunnel": "role=tunnel", "control": "role=control"}
	for _, role := range []string{"http", "tunnel", "control"} {
		c, err := net.Dial("tcp", addrs[role])
		if err != nil {
			t.Fatal(err)
		}
		// Not a timing test: without the reserve, no answer came before
		// descriptors were free again, which here is never.
		c.SetDeadline(time.Now().Add(3 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Errorf("%s listener out of descriptors: %v, want a 503 at once", role, err)
			c.Close()
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		c.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !resp.Close || resp.Header.Get("Retry-After") != "1" ||
			!strings.Contains(string(body), "out of file descriptors") {
			t.Errorf("%s listener out of descriptors: %s %v %q, want a 503 saying so, closing, to retry in 1s",
				role, resp.Status, resp.Header, body)
		}
		await(`level=WARN msg="accept failed; clients are turned away until it succeeds" ` + turnedAway[role])
	}
	c, err := net.Dial("tcp", addrs["tcp"])
	if err != nil {
		t.Fatal(err)
	}
	// Sending nothing, so that nothing sent after the listener looked
	// has its closed socket answer with a reset.
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n > 0 || !errors.Is(err, io.EOF) {
		t.Errorf("tcp:// listener out of descriptors: read %d bytes, %v; want the connection closed at once", n, err)
	}
	c.Close()
	await(`level=WARN msg="accept failed; clients are turned away until it succeeds" ` + turnedAway["tcp"])

	io.WriteString(tell, "free\n")
	await("freed")
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + addrs["http"] + "/")
	if err != nil {
		t.Fatalf("http:// listener, descriptors free again: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ok" {
		t.Errorf("http:// listener, descriptors free again: %s %q", resp.Status, body)
	}
	// And the listener says it has recovered, with how many failed.
	if rest := await(`level=INFO msg="accepting again" ` + turnedAway["http"]); !regexp.MustCompile(`failed=[1-9]`).MatchString(rest) {
		t.Errorf("http:// listener's line on accepting again: %q, want the count of accepts that failed", rest)
	}
	c, err = net.Dial("tcp", addrs["tcp"])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if got, err := io.ReadAll(c); !strings.HasPrefix(string(got), "HTTP/1.1 200 ") || !strings.HasSuffix(string(got), "ok") {
		t.Errorf("tcp:// listener, descriptors free again: %q, %v", got, err)
	}
}

// runOutOfFiles is the child's part: a west with an http:// and a tcp://
// listener, a tunnel server and a control port, which prints their
// addresses and its log, and fills its descriptors on "fill" and frees
// them on "free" from its input, until it ends.
func runOutOfFiles(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer be.Close()
	var pre prebound
	tunnel := pre.addr(t)
	opts := Options{Listen: pre.listen, Logger: slog.New(slog.NewTextHandler(os.Stdout, nil))}
	n := startNode(t, fmt.Sprintf(`{"west": {"nm": "n", "cp": "127.0.0.1:0"}, "wsts": {"sp": "ws://%[1]s"},
		"proxy": {"http://127.0.0.1:0": {"ea": "ws://%[1]s", "/": {"ou": "%[2]s/"}},
			"tcp://127.0.0.1:0": {"ea": "ws://%[1]s", "ou": "tcp://%[3]s"}}}`, tunnel, be.URL, be.Listener.Addr()), opts)
	waitUp(t, n, "n")
	a := n.Addrs()
	fmt.Printf("addr http %s\naddr tcp %s\naddr tunnel %s\naddr control %s\n",
		a.Proxies["http://127.0.0.1:0"], a.Proxies["tcp://127.0.0.1:0"], a.Tunnel, a.Control)

	var fillers []int
	defer func() {
		for _, fd := range fillers {
			syscall.Close(fd)
		}
	}()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch in.Text() {
		case "fill":
			// A limit of the child's own, low enough to fill at once.
			var lim syscall.Rlimit
			if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
				t.Fatal(err)
			}
			lim.Cur = min(lim.Cur, 1024)
			if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
				t.Fatal(err)
			}
			for {
				fd, err := syscall.Open("/dev/null", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
				if err != nil {
					if !errors.Is(err, syscall.EMFILE) {
						t.Fatalf("filling descriptors: %v", err)
					}
					break
				}
				fillers = append(fillers, fd)
			}
			fmt.Printf("filled %d more\n", len(fillers))
		case "free":
			for _, fd := range fillers {
				syscall.Close(fd)
			}
			fillers = nil
			fmt.Println("freed")
		}
	}
}

// emfileListener is a real listening socket whose Accept fails, until it
// is closed, as accept(2) does in a process out of descriptors; the
// accept on the spare of sockio.ShedListener, which reads the socket
// itself, succeeds.
type emfileListener struct {
	*net.TCPListener
	closed atomic.Bool
}

func (l *emfileListener) Accept() (net.Conn, error) {
	err := error(os.NewSyscallError("accept4", syscall.EMFILE))
	if l.closed.Load() {
		err = net.ErrClosed
	}
	return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: err}
}

func (l *emfileListener) Close() error {
	l.closed.Store(true)
	return l.TCPListener.Close()
}

// TestOutOfDescriptorsAnswerIsBrief: an http:// listener with
// "error_detail": "no" turns a client away out of descriptors with the
// status alone, as it gives its other error answers, and not why, which
// would tell a client outside the operator's trust that its flood took
// the last descriptor; a reload that changes error_detail, and keeps the
// socket, changes the answer with it.
func TestOutOfDescriptorsAnswerIsBrief(t *testing.T) {
	conf := func(detail string) string {
		return fmt.Sprintf(`{"west": {"nm": "n"}, "proxy": {"http://127.0.0.1:0": {"ea": "ws://127.0.0.1:9",
			"error_detail": %q, "/": {"ou": "http://127.0.0.1:1/"}}}}`, detail)
	}
	n := startNode(t, conf("no"), Options{Listen: func(network, addr string) (net.Listener, error) {
		ln, err := net.Listen(network, addr)
		if err != nil {
			return nil, err
		}
		return &emfileListener{TCPListener: ln.(*net.TCPListener)}, nil
	}})
	addr := n.Addrs().Proxies["http://127.0.0.1:0"]
	turnedAway := func() string {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// The servers wait up to a second between accepts that fail.
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("out of descriptors: %v, want a 503", err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("out of descriptors: %s %q, want a 503", resp.Status, body)
		}
		return string(body)
	}
	if got, want := turnedAway(), "west: 503 Service Unavailable\n"; got != want {
		t.Errorf(`error_detail "no": %q, want %q`, got, want)
	}
	if err := n.Reload(mustParse(t, conf("yes"))); err != nil {
		t.Fatal(err)
	}
	if n.Addrs().Proxies["http://127.0.0.1:0"] != addr {
		t.Fatal("the reload opened the listener anew")
	}
	if got := turnedAway(); !strings.Contains(got, "out of file descriptors") {
		t.Errorf(`error_detail "yes": %q, want why`, got)
	}
}
