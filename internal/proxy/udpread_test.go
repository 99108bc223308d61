package proxy

import (
	"log/slog"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
)

// failingPacketConn fails its reads until failUntil, as recvfrom does when
// the system is short of memory, counting them.
type failingPacketConn struct {
	net.PacketConn
	failUntil time.Time
	failed    atomic.Int64
}

func (c *failingPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	if time.Now().Before(c.failUntil) {
		c.failed.Add(1)
		return 0, nil, &net.OpError{Op: "read", Net: "udp", Err: os.NewSyscallError("recvfrom", syscall.ENOMEM)}
	}
	return c.PacketConn.ReadFrom(b)
}

// TestUDPReadFailuresWait: a read that fails is retried after a wait, and
// logged at most once a second. It was retried at once and logged each
// time: a socket whose reads kept failing spun a core and flooded the log.
func TestUDPReadFailuresWait(t *testing.T) {
	var log testutil.Buffer
	srv := NewUDP(UDPOptions{Target: "127.0.0.1:1", Dialer: &refusingDialer{},
		Logger: slog.New(slog.NewTextHandler(&log, nil))})
	inner, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc := &failingPacketConn{PacketConn: inner, failUntil: time.Now().Add(500 * time.Millisecond)}
	served := make(chan struct{})
	go func() { srv.ServePacket(pc); close(served) }()
	time.Sleep(700 * time.Millisecond)
	srv.Close()
	<-served
	if n := pc.failed.Load(); n > 20 {
		t.Errorf("%d failed reads in 500ms; want a wait between them", n)
	}
	if n := strings.Count(log.String(), "udp read failed"); n > 1 {
		t.Errorf("%d lines of failed reads in 500ms; want one a second at most", n)
	}
}
