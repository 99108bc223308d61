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
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/west-tunnel/west/internal/testutil"
)

// TestReloadNarrowedHTTPCAEndsExchanges: a reload that narrows the ca of
// an http:// listener's route ends the exchanges still running that the
// route's new ca refuses, as a tcp:// listener's connections are: a
// WebSocket through it, a streamed response the loop serves (a GET) and
// one net/http serves (a POST). A ca changed but still admitting the
// client ends none, nor does a route mapped elsewhere; another route of
// the listener keeps its WebSocket, and a kept-alive idle connection
// gets 403 on its next request.
func TestReloadNarrowedHTTPCAEndsExchanges(t *testing.T) {
	quit := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/ws/", wsEcho)
	mux.HandleFunc("/keep/", wsEcho)
	mux.HandleFunc("/ws/plain", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "plain") })
	// A line at once, a line each time more has one, and the response
	// open until the client or the test goes.
	more := map[string]chan struct{}{http.MethodGet: make(chan struct{}), http.MethodPost: make(chan struct{})}
	mux.HandleFunc("/stream/", func(w http.ResponseWriter, r *http.Request) {
		for {
			fmt.Fprintf(w, "line for %s %s\n", r.Method, r.URL.Path)
			w.(http.Flusher).Flush()
			select {
			case <-more[r.Method]:
			case <-r.Context().Done():
				return
			case <-quit:
				return
			}
		}
	})
	be := httptest.NewServer(mux)
	t.Cleanup(be.Close)
	t.Cleanup(func() { close(quit) }) // before be.Close, which waits for the handlers

	g, _ := runNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	var pre prebound
	addr := pre.addr(t)
	lconf := func(ca, keepOU string) string {
		return fmt.Sprintf(`{"west": {"nm": "L"}, "proxy": {"http://%s": {"ea": "ws://%s",
			"/ws": {"ou": "%s/ws", "ca": [%s]},
			"/stream": {"ou": "%s/stream", "ca": [%s]},
			"/keep": {"ou": "%s%s", "ca": ["127.0.0.1"]}}}}`,
			addr, g.Addrs().Tunnel, be.URL, ca, be.URL, ca, be.URL, keepOU)
	}
	var logs testutil.Buffer
	l, _ := runNode(t, lconf(`"127.0.0.1"`, "/keep"), Options{Listen: pre.listen, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	waitUp(t, g, "L")

	dialWS := func(path string) *websocket.Conn {
		d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
		c, _, err := d.Dial("ws://"+addr+path, nil)
		if err != nil {
			t.Fatalf("WebSocket to %s: %v", path, err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// ask sends one message and reads its echo, or says how it failed.
	ask := func(c *websocket.Conn, msg string) string {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			return "write: " + err.Error()
		}
		_, got, err := c.ReadMessage()
		if err != nil {
			return "read: " + describe(err)
		}
		return string(got)
	}
	// stream starts a streamed response and returns its lines as read.
	stream := func(method, path string) *bufio.Reader {
		req, err := http.NewRequest(method, "http://"+addr+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if method == http.MethodPost {
			// A body the backend never reads: net/http, not the loop,
			// serves the request.
			req.Body = io.NopCloser(strings.NewReader("body"))
		}
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		if resp.StatusCode != 200 {
			t.Fatalf("%s %s: %s", method, path, resp.Status)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return bufio.NewReader(resp.Body)
	}
	line := func(r *bufio.Reader) string {
		done := make(chan string, 1)
		go func() {
			s, err := r.ReadString('\n')
			if err != nil {
				s = "read: " + describe(err)
			}
			done <- s
		}()
		select {
		case s := <-done:
			return s
		case <-time.After(5 * time.Second):
			return "no line within 5s"
		}
	}

	ws, keep := dialWS("/ws/chat"), dialWS("/keep/chat")
	get, post := stream("GET", "/stream/get"), stream("POST", "/stream/post")
	for _, c := range []struct {
		what, got, want string
	}{
		{"ws", ask(ws, "one"), "echo one"},
		{"keep", ask(keep, "one"), "echo one"},
		{"GET stream", line(get), "line for GET /stream/get\n"},
		{"POST stream", line(post), "line for POST /stream/post\n"},
	} {
		if c.got != c.want {
			t.Fatalf("before the reloads, %s: %q, want %q", c.what, c.got, c.want)
		}
	}
	// A kept-alive connection, idle at the reload.
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idleR := bufio.NewReader(idle)
	plain := func() int {
		idle.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(idle, "GET /ws/plain HTTP/1.1\r\nHost: west\r\n\r\n"); err != nil {
			t.Fatalf("request on the idle connection: %v", err)
		}
		resp, err := http.ReadResponse(idleR, nil)
		if err != nil {
			t.Fatalf("response on the idle connection: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := plain(); code != 200 {
		t.Fatalf("GET /ws/plain: %d", code)
	}

	// A ca changed, but still admitting 127.0.0.1, and /keep mapped
	// elsewhere, which is no matter of access: nothing ends.
	if err := l.Reload(mustParse(t, lconf(`"127.0.0.0/8", "192.0.2.0/24"`, "/keep/moved"))); err != nil {
		t.Fatalf("reload widening ca: %v", err)
	}
	more[http.MethodGet] <- struct{}{}
	more[http.MethodPost] <- struct{}{}
	for _, c := range []struct {
		what, got, want string
	}{
		{"ws", ask(ws, "two"), "echo two"},
		{"keep", ask(keep, "two"), "echo two"},
		{"GET stream", line(get), "line for GET /stream/get\n"},
		{"POST stream", line(post), "line for POST /stream/post\n"},
	} {
		if c.got != c.want {
			t.Errorf("after a reload whose ca still admits the client, %s: %q, want %q", c.what, c.got, c.want)
		}
	}

	// A ca that leaves 127.0.0.1 out: the exchanges of /ws and /stream
	// end, those of /keep go on.
	if err := l.Reload(mustParse(t, lconf(`"192.0.2.0/24"`, "/keep/moved"))); err != nil {
		t.Fatalf("reload narrowing ca: %v", err)
	}
	if got := ask(ws, "three"); !ended(got) {
		t.Errorf("a WebSocket the narrowed ca refuses: %q, want it closed", got)
	}
	if got := line(get); !ended(got) {
		t.Errorf("a streamed GET the narrowed ca refuses: %q, want it ended", got)
	}
	if got := line(post); !ended(got) {
		t.Errorf("a streamed POST the narrowed ca refuses: %q, want it ended", got)
	}
	if got := ask(keep, "three"); got != "echo three" {
		t.Errorf("a WebSocket on a route whose ca did not change: %q, want its echo", got)
	}
	if code := plain(); code != http.StatusForbidden {
		t.Errorf("the next request of an idle connection the narrowed ca refuses: %d, want 403", code)
	}
	if got := strings.Count(logs.String(), "exchanges=3"); got != 1 {
		t.Errorf("%d log lines counting 3 exchanges ended, want 1:\n%s", got, logs.String())
	}
}

// ended reports whether got, from ask or line, says the exchange was
// ended rather than timed out.
func ended(got string) bool {
	return (strings.HasPrefix(got, "read: ") || strings.HasPrefix(got, "write: ")) && !strings.Contains(got, "timeout: ")
}

// describe is err's text, marked when it is a timeout rather than an end.
func describe(err error) string {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout: " + err.Error()
	}
	return err.Error()
}
