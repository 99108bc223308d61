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

// TestUDPQueuesAreBoundedInBytes: while the tunnel holds its streams back,
// clients sending large datagrams from many ports fill their flows'
// queues only up to the listener's byte bound, and what was queued is
// let go once the flows end.
func TestUDPQueuesAreBoundedInBytes(t *testing.T) {
	release := make(chan struct{})
	held := DialerFunc(func(ctx context.Context, _ wire.Header) (net.Conn, error) {
		select {
		case <-release:
			return nil, errors.New("the tunnel is down")
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	srv := NewUDP(UDPOptions{Target: "127.0.0.1:1", Dialer: held})
	srv.maxQueued = 1 << 20
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { srv.ServePacket(pc); close(served) }()
	defer func() { srv.Close(); <-served }()

	const size, perClient = 60_000, 16
	var sent int64
	for range 4 {
		c, err := net.Dial("udp", pc.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for range perClient {
			if _, err := c.Write(make([]byte, size)); err != nil {
				t.Fatal(err)
			}
			sent += size
			// Paced, so that the socket's buffer does not drop them first.
			deadline := time.Now().Add(200 * time.Millisecond)
			for srv.queued.Load() < min(sent, srv.maxQueued-size) && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
		}
	}
	if q := srv.queued.Load(); q > srv.maxQueued || q < srv.maxQueued-size {
		t.Errorf("%d KiB queued of %d KiB sent; want the bound, %d KiB", q>>10, sent>>10, srv.maxQueued>>10)
	}
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for srv.queued.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes still counted as queued after every flow ended", srv.queued.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
