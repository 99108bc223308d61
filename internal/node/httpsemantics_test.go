package node

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
)

// A stream of server-sent events, or a long poll, whose backend sends its
// head at once and its first event later: the client gets the head at
// once, as through net/http and the reverse proxy (which flush the head
// of a body of unknown length), not only with the first event. A browser's
// EventSource opens on the head; a client with a header timeout gives up.
func TestStreamHeadBeforeFirstEvent(t *testing.T) {
	release := make(chan struct{})
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		select {
		case <-release:
			io.WriteString(w, "data: first\n\n")
		case <-r.Context().Done():
		}
	}))
	defer be.Close()
	forHops(t, func(t *testing.T, hops int) {
		entry := through(t, hops, "http", be.URL+"/", "")
		c := testutil.DialClient(t, entry)
		io.WriteString(c, "GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
		// The backend holds its first event until the head has come:
		// the head must come without it.
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("the head of an event stream whose first event is not out yet: %v", err)
		}
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("got %s %q", resp.Status, resp.Header.Get("Content-Type"))
		}
		release <- struct{}{}
		event, err := bufio.NewReader(resp.Body).ReadString('\n')
		if err != nil || event != "data: first\n" {
			t.Fatalf("the first event: %q, %v", event, err)
		}
	})
}

// A client that sends "Expect: 100-continue" waits for 100 before its
// body. A backend that answers at once without reading the body (417, or
// a 401 or 413) must have its answer reach the client, which is not going
// to send the body it was never asked for; and a backend that reads the
// body has the 100 reach the client, then the answer.
func TestExpectContinue(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/refuse" {
			w.WriteHeader(http.StatusExpectationFailed)
			return
		}
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, "got "+string(b))
	}))
	defer be.Close()
	forHops(t, func(t *testing.T, hops int) {
		entry := through(t, hops, "http", be.URL+"/", "")
		t.Run("answered early", func(t *testing.T) {
			c := testutil.DialClient(t, entry)
			io.WriteString(c, "POST /refuse HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			for err == nil && resp.StatusCode < 200 {
				// A proxy tired of waiting may say 100 itself; the
				// client still sends nothing, and the 417 must come.
				resp, err = http.ReadResponse(br, nil)
			}
			if err != nil {
				t.Fatalf("a client waiting for 100 got no answer: %v", err)
			}
			if resp.StatusCode != http.StatusExpectationFailed {
				t.Fatalf("got %s, want the backend's 417", resp.Status)
			}
		})
		t.Run("continued", func(t *testing.T) {
			c := testutil.DialClient(t, entry)
			io.WriteString(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
			br := bufio.NewReader(c)
			line, err := br.ReadString('\n')
			if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100 ") {
				t.Fatalf("waiting for 100: %q, %v", line, err)
			}
			if blank, _ := br.ReadString('\n'); blank != "\r\n" {
				t.Fatalf("the 100's head goes on: %q", blank)
			}
			io.WriteString(c, "hello")
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || string(body) != "got hello" {
				t.Fatalf("got %s %q", resp.Status, body)
			}
		})
	})
}

// TestOneContinuePerRequest: a client that sent "Expect: 100-continue"
// gets one 100 Continue before it sends its body, not two. The backend
// here sends exactly one. net/http's Transport lets the body go as the
// backend's 100 comes, and only then reports it to the reverse proxy, so
// the listener's server had sent its own 100 for the body's first read
// when the backend's followed it, in about one request in twenty.
func TestOneContinuePerRequest(t *testing.T) {
	backend := testutil.ServeTCP(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
			body, _ := io.ReadAll(req.Body)
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\ngot %s", 4+len(body), body)
		}
	})
	entry := through(t, 1, "http", "http://"+backend+"/", "")
	for i := range 100 {
		c := testutil.DialClient(t, entry)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusContinue {
			t.Fatalf("request %d: waiting for 100: %v %v", i, resp, err)
		}
		io.WriteString(c, "hello")
		resp, err = http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || string(body) != "got hello" {
			t.Fatalf("request %d: after its 100, the client read %s %q; want one 100, then 200 %q", i, resp.Status, body, "got hello")
		}
		c.Close()
	}
}

// HTTP/1.0 has no 1xx answers, and a server must not send one to an
// HTTP/1.0 client (RFC 9110, 15.2): such a client reads a 103 Early Hints
// or a 100 Continue as the whole answer, with the real one as its body.
func TestHTTP10ClientGetsNo1xx(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hints" {
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
		}
		b, _ := io.ReadAll(r.Body) // a Go backend sends 100 when an Expect is read
		io.WriteString(w, "page"+string(b))
	}))
	defer be.Close()
	forHops(t, func(t *testing.T, hops int) {
		entry := through(t, hops, "http", be.URL+"/", "")
		for _, tc := range []struct{ name, raw, want string }{
			{"early hints", "GET /hints HTTP/1.0\r\nHost: x\r\n\r\n", "page"},
			{"expect", "POST /echo HTTP/1.0\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n!!", "page!!"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				c := testutil.DialClient(t, entry)
				io.WriteString(c, tc.raw)
				all, err := io.ReadAll(c)
				if err != nil {
					t.Fatal(err)
				}
				resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(string(all))), nil)
				if err != nil {
					t.Fatalf("%v: %q", err, all)
				}
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != 200 || string(body) != tc.want {
					t.Errorf("an HTTP/1.0 client read %s with body %q; all it got: %q", resp.Status, body, all)
				}
			})
		}
	})
}
