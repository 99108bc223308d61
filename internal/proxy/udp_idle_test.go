package proxy

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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
