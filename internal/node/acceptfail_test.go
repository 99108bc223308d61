package node

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/config"
)

// failFirstAccept is a listener whose first Accept fails with err, as
// accept(2) does when the system is short of memory for a socket.
type failFirstAccept struct {
	net.Listener
	err    error
	failed atomic.Bool
}

func (l *failFirstAccept) Accept() (net.Conn, error) {
	if l.failed.CompareAndSwap(false, true) {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", l.err)}
	}
	return l.Listener.Accept()
}

// TestAcceptShortOfMemoryKeepsServing: accept(2) fails with ENOBUFS or
// ENOMEM when the system is short of socket memory, a state that passes,
// as EMFILE's does; net/http and the http:// listener's loop retry only
// what net.Error calls temporary, which these are not, and ended their
// listener and so the whole west. Every listener goes on serving.
func TestAcceptShortOfMemoryKeepsServing(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.ENOBUFS, syscall.ENOMEM} {
		t.Run(errno.Error(), func(t *testing.T) {
			var pre prebound
			tunnelAddr, proxyAddr, controlAddr := pre.addr(t), pre.addr(t), pre.addr(t)
			cfg, err := config.Parse([]byte(fmt.Sprintf(`{"west": {"nm": "n", "cp": "%[3]s"},
				"wsts": {"sp": "ws://%[1]s"},
				"proxy": {"http://%[2]s": {"en": "nobody", "/": {"ou": "http://127.0.0.1:9/"}}}}`,
				tunnelAddr, proxyAddr, controlAddr)))
			if err != nil {
				t.Fatal(err)
			}
			n, err := New(cfg, Options{Logger: testLogger(t), Listen: func(network, addr string) (net.Listener, error) {
				ln, err := pre.listen(network, addr)
				if err != nil {
					return nil, err
				}
				return &failFirstAccept{Listener: ln, err: errno}, nil
			}})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- n.Run(ctx) }()
			stopped := false
			defer func() {
				cancel()
				select {
				case <-done:
				case <-time.After(15 * time.Second):
					if !stopped {
						t.Errorf("node did not stop")
					}
				}
			}()
			client := &http.Client{Timeout: 5 * time.Second}
			for _, addr := range []string{controlAddr, proxyAddr, tunnelAddr} {
				resp, err := client.Get("http://" + addr + "/healthz")
				if err != nil {
					t.Errorf("%s after a failed accept: %v", addr, err)
					continue
				}
				resp.Body.Close()
			}
			select {
			case err := <-done:
				stopped = true
				t.Fatalf("node stopped after a failed accept: %v", err)
			default:
			}
		})
	}
}
