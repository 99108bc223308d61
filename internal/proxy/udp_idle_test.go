package proxy

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/wire"
)

// TestUDPDatagramAtIdleTimeoutCarried: a client that sends about once per
// idle timeout, as a heartbeat does, has each datagram answered. One
// that came as its flow's idle timer fired was queued, and then dropped
// with the flow (the timer won the select, and the flow's last datagram
// was still the one before), or queued on the flow after it had decided
// to end.
func TestUDPDatagramAtIdleTimeoutCarried(t *testing.T) {
	var dials atomic.Int64
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
	lost := 0
	buf := make([]byte, 100)
	for i := range n {
		msg := fmt.Sprint(i)
		c.Write([]byte(msg))
		c.SetReadDeadline(time.Now().Add(2 * time.Second)) // lost, not late
		if m, err := c.Read(buf); err != nil || string(buf[:m]) != msg {
			lost++
		}
		// Around the idle timeout, on either side of it.
		time.Sleep(idle - 2*time.Millisecond + time.Duration(i%20)*200*time.Microsecond)
	}
	if lost > 0 {
		t.Errorf("%d of %d datagrams sent about once per idle timeout went unanswered (%d flows)", lost, n, dials.Load())
	}
}
