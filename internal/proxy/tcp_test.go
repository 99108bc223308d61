package proxy

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/wire"
)

// refusingDialer counts the streams asked of it and refuses each.
type refusingDialer struct{ calls atomic.Int64 }

func (d *refusingDialer) Dial(context.Context, wire.Header) (net.Conn, error) {
	d.calls.Add(1)
	return nil, errors.New("refused by the test")
}

// TestTCPShutdownWhileAccepting: clients keep connecting while the
// listener shuts down. Shutdown returns once every connection it let in
// has ended; none is served after it, and Serve ends with net.ErrClosed.
// (A connection accepted as Shutdown began used to be counted while
// Shutdown already waited for the count to reach zero: a race the
// detector reports, and a connection served after Shutdown returned.)
func TestTCPShutdownWhileAccepting(t *testing.T) {
	for range 40 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		d := &refusingDialer{}
		srv := NewTCP(TCPOptions{Target: "127.0.0.1:1", Dialer: d})
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()

		stop := make(chan struct{})
		var clients sync.WaitGroup
		for range 4 {
			clients.Add(1)
			go func() {
				defer clients.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
						c.Close()
					}
				}
			}()
		}
		for d.calls.Load() < 3 {
			time.Sleep(100 * time.Microsecond)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = srv.Shutdown(ctx)
		cancel()
		after := d.calls.Load()
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		select {
		case err := <-served:
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("Serve returned %v, want net.ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Serve still accepting after Shutdown")
		}
		time.Sleep(time.Millisecond)
		close(stop)
		clients.Wait()
		if got := d.calls.Load(); got != after {
			t.Fatalf("%d connections served after Shutdown returned", got-after)
		}
		srv.Close()
	}
}

// TestTCPServeAfterClose: Serve on a closed listener's server returns at
// once, as http.Server's does, and closes the listener it was given.
func TestTCPServeAfterClose(t *testing.T) {
	srv := NewTCP(TCPOptions{Target: "127.0.0.1:1", Dialer: &refusingDialer{}})
	srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Serve after Close returned %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		ln.Close()
		<-served
		t.Fatal("Serve after Close accepted connections")
	}
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Fatal("the listener handed to Serve after Close still accepts")
	}
}

// TestUDPServePacketAfterClose: ServePacket called after Close returns at
// once and closes pc, as TCP.Serve does. It read on forever, and a node
// stopped just after it started (its listeners served from goroutines)
// never returned from Run.
func TestUDPServePacketAfterClose(t *testing.T) {
	srv := NewUDP(UDPOptions{Target: "127.0.0.1:1", Dialer: &refusingDialer{}})
	srv.Close()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.ServePacket(pc) }()
	select {
	case err := <-served:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("ServePacket after Close returned %v, want net.ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		pc.Close()
		<-served
		t.Fatal("ServePacket after Close still reading datagrams 2s later (pc never closed)")
	}
}
