package proxy

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/acl"
	"github.com/west-tunnel/west/internal/testutil"
	"github.com/west-tunnel/west/internal/wire"
)

// serveUDP starts a udp:// listener on loopback with opts and returns
// its address.
func serveUDP(t *testing.T, opts UDPOptions) string {
	t.Helper()
	return listenUDP(t, NewUDP(opts))
}

// listenUDP serves srv on a socket on loopback until the test ends, and
// returns its address.
func listenUDP(t *testing.T, srv *UDP) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
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

// askUDP sends d on c until an answer comes, within 300 ms of a try and
// 20 tries, and returns it, or "" if none came: a datagram may be lost
// while a flow starts or ends.
func askUDP(c net.Conn, d []byte) string {
	buf := make([]byte, 1<<16)
	for range 20 {
		c.Write(d)
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if n, err := c.Read(buf); err == nil {
			return string(buf[:n])
		}
	}
	return ""
}

// dialUDP is a client of the UDP listener at entry, closed with the test.
func dialUDP(t *testing.T, entry string) net.Conn {
	t.Helper()
	c, err := net.Dial("udp", entry)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
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
	got := askUDP(c, []byte("now"))
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
	var drops dropTally
	client := tunnelPairTo(t, &Far{Logger: slog.New(slog.NewTextHandler(&log, nil)),
		OnDatagramDropped: func(why DropReason) { drops.add(why, 1) }})
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
	got := askUDP(c, []byte("small"))
	if got != "echo small" {
		t.Fatalf("after a datagram too large: got %q, want the echo of the next", got)
	}
	if n := drops.count(DropSendFailed); n != 1 {
		t.Errorf("the far side counted %d datagrams it could not send (%v); want the one too large", n, drops.String())
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
	var drops dropTally
	entry := serveUDP(t, UDPOptions{Name: "udp://reply-test", Target: target,
		Dialer: countingDialer(tunnelPair(t), &dials), Logger: slog.New(slog.NewTextHandler(&log, nil)),
		OnDropped: drops.add})
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
	got := askUDP(c, []byte("small"))
	if got != "echo small" {
		t.Fatalf("after a reply too large: got %q, want the echo of the next datagram", got)
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("%d streams for one client; want its flow kept through the lost reply, on one", n)
	}
	if n := drops.count(DropReplyFailed); n != 1 {
		t.Errorf("the listener counted %d replies it could not send (%v); want the one too large", n, drops.String())
	}
}

// TestUDPTargetRefusedByPolicyHoldsRoute: once the far side's dial_allow
// refuses the route's target, the listener logs it and, for its hold,
// drops new clients' datagrams without opening a stream, the client's
// own and another's alike; after the hold it tries again, and a policy
// widened meanwhile lets the flow through. Each datagram after a refusal
// cost a stream that the far side refused again.
func TestUDPTargetRefusedByPolicyHoldsRoute(t *testing.T) {
	free, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := free.LocalAddr().String()
	free.Close()
	echoUDPOn(t, target)
	elsewhere, err := acl.ParseTargets([]string{"192.0.2.1:53"})
	if err != nil {
		t.Fatal(err)
	}
	far := &Far{Targets: elsewhere}
	var log testutil.Buffer
	var dials atomic.Int64
	srv := NewUDP(UDPOptions{Name: "udp://held", Target: target, Dialer: countingDialer(tunnelPairTo(t, far), &dials),
		Logger: slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	// Long enough for the datagrams below to come within it on a loaded
	// machine; short, as the test waits it out.
	srv.refusedHold = 2 * time.Second
	entry := listenUDP(t, srv)
	a, b := dialUDP(t, entry), dialUDP(t, entry)
	a.Write([]byte("one"))
	deadline := time.Now().Add(5 * time.Second)
	// The refusal is logged before the refused flow leaves the map: a
	// datagram that came between the two would join the flow as it ends,
	// dropped with it rather than by the hold, and never logged as
	// such. Both must have happened.
	gone := func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return len(srv.flows) == 0
	}
	for !strings.Contains(log.String(), "dial policy refuses the target") || !gone() {
		if time.Now().After(deadline) {
			t.Fatalf("the far side's refusal was not logged on the listener's side, or its flow stayed; log:\n%s", log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}

	const more = 5
	for range more {
		a.Write([]byte("again"))
	}
	b.Write([]byte("another client"))
	for strings.Count(log.String(), "no flow starts until retry") < more+1 && dials.Load() == 1 {
		if time.Now().After(deadline) {
			t.Fatalf("datagrams sent during the hold were neither dropped nor carried; log:\n%s", log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("%d streams for a target the far side refused; want 1, then none until the hold ends", n)
	}
	if n := strings.Count(log.String(), "dial policy refuses the target"); n != 1 {
		t.Errorf("the refusal logged %d times; want once", n)
	}

	allowed, err := acl.ParseTargets([]string{target})
	if err != nil {
		t.Fatal(err)
	}
	far.SetTargets(allowed)
	buf := make([]byte, 100)
	var got string
	for deadline := time.Now().Add(10 * time.Second); got == "" && time.Now().Before(deadline); {
		a.Write([]byte("after"))
		a.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if n, err := a.Read(buf); err == nil {
			got = string(buf[:n])
		}
	}
	if got != "echo after" {
		t.Fatalf("after the hold, with the target allowed: got %q, want %q", got, "echo after")
	}
	if n := dials.Load(); n != 2 {
		t.Errorf("%d streams in all; want the refused one and one after the hold", n)
	}
}
