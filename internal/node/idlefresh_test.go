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

// TestMaxConnsNewClientNotReclaimed: at max_conns, a client accepted but
// whose first request has not arrived yet (a burst of clients, a TLS
// handshake, a distant client) has not been kept alive: it does not give
// way to the next client.
func TestMaxConnsNewClientNotReclaimed(t *testing.T) {
	be := backend(t)
	g := startNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	l := startNode(t, fmt.Sprintf(`{"west": {"nm": "L"}, "proxy": {
		"http://127.0.0.1:0": {"ea": "ws://%s", "max_conns": 2, "/": {"ou": "%s/x"}}}}`, g.Addrs().Tunnel, be.URL), Options{})
	addr := proxyURL(t, l)[len("http://"):]
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
