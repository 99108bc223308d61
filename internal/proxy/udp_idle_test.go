package proxy

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/tunnel"
	"github.com/west-tunnel/west/internal/wire"
)

// TestUDPDatagramAtIdleTimeoutCarried: a client that sends about once per
// idle timeout, as a heartbeat does, has each datagram carried to the far
// side. One that came as its flow's idle timer fired was queued, and then
// dropped with the flow (the timer won the select, and the flow's last
// datagram was still the one before), or queued on the flow after it had
// decided to end. Carried, not answered: an answer that takes longer than
// the idle timeout (a loaded machine) comes to a flow that has ended.
func TestUDPDatagramAtIdleTimeoutCarried(t *testing.T) {
	var dials atomic.Int64
	var mu sync.Mutex
	carried := make(map[string]bool)
	echo := DialerFunc(func(context.Context, wire.Header) (net.Conn, error) {
		dials.Add(1)
		a, b := net.Pipe()
		go func() {
			defer b.Close()
			buf := make([]byte, wire.MaxDatagram)
			for {
				d, err := wire.ReadDatagram(b, buf)
				if err != nil {
					return
				}
				mu.Lock()
				carried[string(d)] = true
				mu.Unlock()
				if _, err := b.Write(wire.AppendDatagram(nil, d)); err != nil {
					return
				}
			}
		}()
		return a, nil
	})
	const idle = 20 * time.Millisecond
	srv := NewUDP(UDPOptions{Target: "127.0.0.1:1", Dialer: echo, IdleTimeout: idle})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { srv.ServePacket(pc); close(served) }()
	defer func() { srv.Close(); <-served }()
	c, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 100
	buf := make([]byte, 100)
	for i := range n {
		c.Write([]byte(fmt.Sprint(i)))
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		c.Read(buf) // the answer, if it comes in time, paces the client
		// Around the idle timeout, on either side of it.
		time.Sleep(idle - 2*time.Millisecond + time.Duration(i%20)*200*time.Microsecond)
	}
	lost := 0
	mu.Lock()
	for i := range n {
		if !carried[fmt.Sprint(i)] {
			lost++
		}
	}
	mu.Unlock()
	if lost > 0 {
		t.Errorf("%d of %d datagrams sent about once per idle timeout never reached the far side (%d flows)", lost, n, dials.Load())
	}
}

// bodyWaitConn is a UDP flow's stream that tells waiting once it is read
// past the first frame's length: the reader has a buffer out for the body.
type bodyWaitConn struct {
	net.Conn
	read    int // bytes read so far; one reader
	once    sync.Once
	waiting chan<- struct{}
}

func (c *bodyWaitConn) Read(b []byte) (int, error) {
	if c.read >= 2 {
		c.once.Do(func() { c.waiting <- struct{}{} })
	}
	n, err := c.Conn.Read(b)
	c.read += n
	return n, err
}

// TestUDPFrameStalledAfterLengthHoldsLittle: a far side that sends a
// reply frame's length (65 535) and then nothing more leaves each flow
// waiting for the body with a small buffer, not a copy buffer of 256 KiB.
// It counts the live heap of flows so stalled, everything of them (the
// flow, its queue, the streams at both ends of the tunnel) included.
func TestUDPFrameStalledAfterLengthHoldsLittle(t *testing.T) {
	stall := tunnel.StreamHandlerFunc(func(ctx context.Context, req *tunnel.Request) {
		st, err := req.Accept()
		if err != nil {
			return
		}
		defer st.Close()
		// The client's datagram first, read with a small buffer: the
		// flow's copy of it is done with by the time its reply begins.
		buf := make([]byte, 64)
		if _, err := wire.ReadDatagram(st, buf); err != nil {
			return
		}
		st.Write([]byte{0xff, 0xff})
		for {
			if _, err := st.Read(buf); err != nil {
				return // the flow ended
			}
		}
	})
	client := tunnelPairTo(t, stall)
	const flows = 32
	waiting := make(chan struct{}, flows)
	dialer := DialerFunc(func(ctx context.Context, h wire.Header) (net.Conn, error) {
		c, err := client.Dial(ctx, h)
		if err != nil {
			return nil, err
		}
		return &bodyWaitConn{Conn: c, waiting: waiting}, nil
	})
	entry := serveUDP(t, UDPOptions{Target: "127.0.0.1:1", Dialer: dialer})
	clients := make([]net.Conn, flows)
	for i := range clients {
		c, err := net.Dial("udp", entry)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients[i] = c
	}
	before := liveHeap()
	for _, c := range clients {
		c.Write([]byte("hello"))
	}
	for range flows {
		select {
		case <-waiting:
		case <-time.After(10 * time.Second):
			t.Fatal("flows did not come to wait for a body")
		}
	}
	perFlow := (int64(liveHeap()) - int64(before)) / flows
	t.Logf("%d flows waiting for a body: %d bytes of live heap each", flows, perFlow)
	if perFlow > 64<<10 {
		t.Errorf("a flow waiting for a frame's body holds %d KiB; want a small buffer, not a copy buffer", perFlow>>10)
	}
}

// liveHeap returns the bytes of the heap's live objects, pools emptied.
func liveHeap() uint64 {
	// A sync.Pool's items outlive one collection, in its victim cache.
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestUDPDatagramsAroundSmallBufferIntact: datagrams that fit the small
// buffer a stream's reader waits with, and those that move on from it to
// a larger one, come back whole and in order of their bytes, both ways
// through a real tunnel.
func TestUDPDatagramsAroundSmallBufferIntact(t *testing.T) {
	target, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := target.LocalAddr().String()
	target.Close()
	echoUDPOn(t, addr)
	c := dialUDP(t, serveUDP(t, UDPOptions{Target: addr, Dialer: tunnelPair(t)}))
	for _, size := range []int{0, 1, smallDatagram - 1, smallDatagram, smallDatagram + 1, 60000} {
		d := make([]byte, size)
		for i := range d {
			d[i] = byte(i*7 + i>>8)
		}
		want := "echo " + string(d)
		if got := askUDP(c, d); got != want {
			t.Fatalf("a datagram of %d bytes came back as %d bytes, or changed", size, len(got)-len("echo "))
		}
	}
}
