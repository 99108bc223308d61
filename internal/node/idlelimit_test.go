package node

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// TestMaxConnsIdleKeptAliveYield: on an http:// listener at max_conns,
// connections idle between requests do not keep a new client waiting
// until the 120 s idle timeout: the one idle longest is closed for it, as
// nginx reuses its idle keep-alive connections when out of them.
func TestMaxConnsIdleKeptAliveYield(t *testing.T) {
	addr := maxConns2Listener(t)
	get := func(c net.Conn, br *bufio.Reader) error {
		c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := io.WriteString(c, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	// Two clients take both slots and stay idle, kept alive: the one idle
	// longest on net/http's side, after a request with a body.
	var idle []net.Conn
	for i := range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if i == 0 {
			io.WriteString(c, "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("POST: %v", err)
			}
			io.Copy(io.Discard, resp.Body)
		} else if err := get(c, bufio.NewReader(c)); err != nil {
			t.Fatalf("idle client %d: %v", i, err)
		}
		idle = append(idle, c)
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := get(c, bufio.NewReader(c)); err != nil {
		t.Fatalf("new client with max_conns held by idle kept-alive connections: %v after %v", err, time.Since(start))
	}
	t.Logf("new client served after %v", time.Since(start))
	// The one idle longest gave way; the other is still served.
	idle[0].SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := idle[0].Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("client idle longest: read %v, want EOF", err)
	}
	if err := get(idle[1], bufio.NewReader(idle[1])); err != nil {
		t.Errorf("the other idle client: %v", err)
	}
	// Busy connections are not cut: with both slots streaming a
	// response, a new client is served once one of them turns idle.
	busy := []net.Conn{idle[1], c}
	for _, b := range busy {
		io.WriteString(b, "GET /chunks HTTP/1.1\r\nHost: x\r\n\r\n")
	}
	time.Sleep(50 * time.Millisecond)
	d, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	done := make(chan error, 1)
	go func() { done <- get(d, bufio.NewReader(d)) }()
	for i, b := range busy {
		b.SetDeadline(time.Now().Add(3 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(b), nil)
		if err != nil {
			t.Fatalf("busy client %d: %v", i, err)
		}
		if body, err := io.ReadAll(resp.Body); err != nil || len(body) != 24 {
			t.Errorf("busy client %d: %q, %v", i, body, err)
		}
	}
	if err := <-done; err != nil {
		t.Errorf("client beyond busy ones: %v", err)
	}
}

// TestMaxConnsNewClientNotReclaimed: at max_conns, a client accepted but
// whose first request has not arrived yet (a burst of clients, a TLS
// handshake, a distant client) has not been kept alive: it does not give
// way to the next client.
func TestMaxConnsNewClientNotReclaimed(t *testing.T) {
	addr := maxConns2Listener(t)
	get := func(delay time.Duration) error {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		time.Sleep(delay)
		if _, err := io.WriteString(c, "GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	// Two clients take both slots and send their request 100 ms after
	// connecting; a third comes meanwhile.
	errs := make(chan error, 3)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := get(100 * time.Millisecond); err != nil {
				errs <- fmt.Errorf("client %d, slow to send: %v", i, err)
			}
		}()
	}
	time.Sleep(30 * time.Millisecond)
	if err := get(0); err != nil {
		t.Errorf("third client: %v", err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// A burst of clients, each sending at once, all served in turn.
	var failed sync.Map
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := get(0); err != nil {
				failed.Store(i, err)
			}
		}()
	}
	wg.Wait()
	failed.Range(func(k, v any) bool {
		t.Errorf("burst client %v: %v", k, v)
		return true
	})
}

// maxConns2Listener is the address of an http:// listener with max_conns 2
// that sends up a tunnel to a backend.
func maxConns2Listener(t *testing.T) string {
	t.Helper()
	be := backend(t)
	g := startNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	l := startNode(t, fmt.Sprintf(`{"west": {"nm": "L"}, "proxy": {
		"http://127.0.0.1:0": {"ea": "ws://%s", "max_conns": 2, "/": {"ou": "%s/x"}}}}`, g.Addrs().Tunnel, be.URL), Options{})
	return proxyURL(t, l)[len("http://"):]
}
