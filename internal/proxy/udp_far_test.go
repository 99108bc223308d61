package proxy

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
	"github.com/west-tunnel/west/internal/wire"
)

// serveUDP starts a udp:// listener on loopback with opts and returns
// its address.
func serveUDP(t *testing.T, opts UDPOptions) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewUDP(opts)
	served := make(chan struct{})
	go func() { srv.ServePacket(pc); close(served) }()
	t.Cleanup(func() { srv.Close(); <-served })
	return pc.LocalAddr().String()
}

// countingDialer counts the streams d opens.
func countingDialer(d Dialer, n *atomic.Int64) Dialer {
	return DialerFunc(func(ctx context.Context, h wire.Header) (net.Conn, error) {
		n.Add(1)
		return d.Dial(ctx, h)
	})
}

// echoUDPOn answers every datagram to addr with "echo " and the datagram.
func echoUDPOn(t *testing.T, addr string) {
	t.Helper()
	answerUDPOn(t, addr, func(d []byte) []byte { return append([]byte("echo "), d...) })
}

// answerUDPOn answers every datagram to addr with what answer makes of it.
func answerUDPOn(t *testing.T, addr string, answer func(d []byte) []byte) {
	t.Helper()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, wire.MaxDatagram)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(answer(buf[:n]), from)
		}
	}()
}

// TestUDPTargetRefusedKeepsFlow: a datagram the target refuses (nothing
// listens on its port: ICMP port unreachable, which a connected UDP
// socket reports as ECONNREFUSED on its next read) is logged on the far
// side, and the flow stays, as the client's own socket would: once the
// target listens, the client's next datagram is answered on the same
// stream. The far side ended the flow at the first refusal, saying
// nothing: an ou with a wrong port left no trace in the log, and a client
// that kept sending to a target down for a moment cost a tunnel stream,
// and its queued datagrams, each time.
func TestUDPTargetRefusedKeepsFlow(t *testing.T) {
	free, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := free.LocalAddr().String()
	free.Close()
	var log testutil.Buffer
	client := tunnelPairTo(t, &Far{Logger: slog.New(slog.NewTextHandler(&log, nil))})
	var dials atomic.Int64
	entry := serveUDP(t, UDPOptions{Target: target, Dialer: countingDialer(client, &dials)})
	c, err := net.Dial("udp", entry)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("anyone there"))
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(log.String(), "connection refused") {
		if time.Now().After(deadline) {
			t.Fatalf("a datagram the target refused was not logged on the far side; log:\n%s", log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // for a flow that ends to have ended
	echoUDPOn(t, target)
	buf := make([]byte, 100)
	var got string
	for try := 0; try < 20 && got == ""; try++ {
		c.Write([]byte("now"))
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if n, err := c.Read(buf); err == nil {
			got = string(buf[:n])
		}
	}
	if got != "echo now" {
		t.Fatalf("once the target listens: got %q, want %q", got, "echo now")
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("%d streams for one client; want its flow kept through the refusal, on one", n)
	}
}

// TestUDPDatagramTooLargeForTargetLogged: a datagram the far side's
// socket cannot send (65 520 bytes came to a listener on IPv6, more
// than an IPv4 datagram holds) is logged on the far side, and the flow
// carries the client's next datagram. It was dropped without a word.
func TestUDPDatagramTooLargeForTargetLogged(t *testing.T) {
	free, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := free.LocalAddr().String()
	free.Close()
	echoUDPOn(t, target)
	var log testutil.Buffer
	client := tunnelPairTo(t, &Far{Logger: slog.New(slog.NewTextHandler(&log, nil))})
	pc, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	srv := NewUDP(UDPOptions{Target: target, Dialer: client})
	served := make(chan struct{})
	go func() { srv.ServePacket(pc); close(served) }()
	defer func() { srv.Close(); <-served }()
	c, err := net.Dial("udp6", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(make([]byte, 65520)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(log.String(), "message too long") {
		if time.Now().After(deadline) {
			t.Fatalf("a datagram too large for the target's socket was not logged on the far side; log:\n%s", log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	buf := make([]byte, 100)
	var got string
	for try := 0; try < 20 && got == ""; try++ {
		c.Write([]byte("small"))
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if n, err := c.Read(buf); err == nil {
			got = string(buf[:n])
		}
	}
	if got != "echo small" {
		t.Fatalf("after a datagram too large: got %q, want the echo of the next", got)
	}
}

// TestUDPReplyTooLargeForClientLogged: a reply the listener's socket
// cannot send to its client (65 520 bytes from a target on IPv6, more
// than an IPv4 datagram holds, for a client on IPv4) is logged on the
// listener's side, naming the listener and the client, and the flow
// carries the client's next datagram on the same stream. It was dropped
// without a word, so a client that got no answer left no trace in
// either west's log.
func TestUDPReplyTooLargeForClientLogged(t *testing.T) {
	tp, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	target := tp.LocalAddr().String()
	tp.Close()
	answerUDPOn(t, target, func(d []byte) []byte {
		if string(d) == "big" {
			return make([]byte, 65520)
		}
		return append([]byte("echo "), d...)
	})
	var log testutil.Buffer
	var dials atomic.Int64
	entry := serveUDP(t, UDPOptions{Name: "udp://reply-test", Target: target,
		Dialer: countingDialer(tunnelPair(t), &dials), Logger: slog.New(slog.NewTextHandler(&log, nil))})
	c, err := net.Dial("udp4", entry)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("big"))
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(log.String(), "message too long") {
		if time.Now().After(deadline) {
			t.Fatalf("a reply too large for the client's socket was not logged on the listener's side; log:\n%s", log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, want := range []string{"listener=udp://reply-test", "client=" + c.LocalAddr().String()} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("the lost reply's line does not name %s; log:\n%s", want, log.String())
		}
	}
	buf := make([]byte, 100)
	var got string
	for try := 0; try < 20 && got == ""; try++ {
		c.Write([]byte("small"))
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if n, err := c.Read(buf); err == nil {
			got = string(buf[:n])
		}
	}
	if got != "echo small" {
		t.Fatalf("after a reply too large: got %q, want the echo of the next datagram", got)
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("%d streams for one client; want its flow kept through the lost reply, on one", n)
	}
}
