package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/tunnel"
	"github.com/west-tunnel/west/internal/wire"
)

func TestLocalsFind(t *testing.T) {
	var set Locals
	listen := func(network, addr string) *LocalListener {
		t.Helper()
		ln, err := net.Listen(network, addr)
		if err != nil {
			t.Fatal(err)
		}
		l := NewLocalListener(ln, &set).(*LocalListener)
		t.Cleanup(func() { l.Close() })
		return l
	}
	one := listen("tcp", "127.0.0.1:0")
	port := func(l *LocalListener) uint16 { return l.bound.Port() }
	any4 := listen("tcp4", "0.0.0.0:0")
	anyDual := listen("tcp", "0.0.0.0:0") // Go listens on both families: "[::]"
	for _, tc := range []struct {
		target string
		want   *LocalListener
	}{
		{fmt.Sprintf("127.0.0.1:%d", port(one)), one},
		{fmt.Sprintf("[::ffff:127.0.0.1]:%d", port(one)), one},
		{fmt.Sprintf("127.0.0.2:%d", port(one)), nil}, // bound to one address only
		{fmt.Sprintf("localhost:%d", port(one)), nil}, // names are dialled
		{fmt.Sprintf("127.0.0.1:%d", port(any4)), any4},
		{fmt.Sprintf("127.9.9.9:%d", port(any4)), any4},
		{fmt.Sprintf("[::1]:%d", port(any4)), nil}, // an IPv4 socket
		{fmt.Sprintf("192.0.2.1:%d", port(any4)), nil},
		{fmt.Sprintf("[::1]:%d", port(anyDual)), anyDual},
		{fmt.Sprintf("127.0.0.1:%d", port(anyDual)), anyDual},
		{"127.0.0.1", nil},
		{"", nil},
	} {
		if got, _, _ := set.Find(tc.target); got != tc.want {
			t.Errorf("Find(%q) = %v, want %v", tc.target, got, tc.want)
		}
	}
	one.Close()
	if got, _, _ := set.Find(fmt.Sprintf("127.0.0.1:%d", port(one))); got != nil {
		t.Errorf("a closed listener is still found")
	}
	var none *Locals
	if got, _, _ := none.Find("127.0.0.1:80"); got != nil {
		t.Error("a nil set finds a listener")
	}
}

// TestLocalListenerHandOver: a handed connection comes out of Accept
// beside the socket's own, with the addresses given; serve waits until
// it is closed; a listener that does not accept in time, or is closed,
// refuses it.
func TestLocalListenerHandOver(t *testing.T) {
	var set Locals
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := NewLocalListener(ln, &set).(*LocalListener)
	defer l.Close()
	from := netip.MustParseAddr("127.0.0.1")

	// Nobody accepts: refused after the timeout, the conn left open.
	ours, theirs := net.Pipe()
	defer theirs.Close()
	if err := l.serve(context.Background(), ours, from, 50*time.Millisecond, false, 0); !errors.Is(err, errLocalBusy) {
		t.Fatalf("not accepted: %v, want errLocalBusy", err)
	}

	// Accepted: Accept returns it, serve returns once it is closed.
	served := make(chan error, 1)
	go func() { served <- l.serve(context.Background(), ours, from, 5*time.Second, false, 0) }()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if c.RemoteAddr().String() != "127.0.0.1:0" || c.LocalAddr().String() != ln.Addr().String() {
		t.Errorf("addresses %s -> %s, want 127.0.0.1:0 -> %s", c.RemoteAddr(), c.LocalAddr(), ln.Addr())
	}
	go theirs.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read through the handed conn: %q, %v", buf, err)
	}
	select {
	case err := <-served:
		t.Fatalf("serve returned before the conn was closed: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	c.Close()
	if err := <-served; err != nil {
		t.Fatalf("serve: %v", err)
	}

	// The socket still accepts beside it.
	dialed, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer dialed.Close()
	c, err = l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if c.RemoteAddr().String() != dialed.LocalAddr().String() {
		t.Errorf("accepted %s, want the dialled %s", c.RemoteAddr(), dialed.LocalAddr())
	}
	c.Close()

	// The stream's context ending closes the handed conn.
	ours2, theirs2 := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { served <- l.serve(ctx, ours2, from, 5*time.Second, false, 0) }()
	c, err = l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatalf("serve: %v", err)
	}
	if _, err := theirs2.Read(buf); err == nil {
		t.Error("handed conn still open after its context ended")
	}
	c.Close()

	// Closed: refused at once, and Accept says so.
	l.Close()
	if err := l.serve(context.Background(), ours, from, 5*time.Second, false, 0); !errors.Is(err, net.ErrClosed) {
		t.Errorf("closed listener: %v, want net.ErrClosed", err)
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v", err)
	}
}

// TestRefusalKeepsTheErrorsClass: a stream handed to this west's own
// listener and refused is answered with a code of the failure's class, so
// that the first west of a chain answers as it would over one tunnel
// (504 for a timeout, 503 for a tunnel down), not 502 for all.
func TestRefusalKeepsTheErrorsClass(t *testing.T) {
	for _, tc := range []struct {
		why  error
		want wire.Code
	}{
		{&wire.RejectError{Code: wire.CodeForbidden, Reason: "dial_allow"}, wire.CodeForbidden},
		{fmt.Errorf("next hop: %w", &wire.RejectError{Code: wire.CodeTimeout}), wire.CodeTimeout},
		{errLocalBusy, wire.CodeTimeout},
		{fmt.Errorf("open stream: %w", context.DeadlineExceeded), wire.CodeTimeout},
		{fmt.Errorf("tunnel to ws://g is backoff: %w", tunnel.ErrPeerDown), wire.CodeOverloaded},
		{errors.New("connection refused"), wire.CodeDialFailed},
	} {
		if got, _ := refusal(tc.why); got != tc.want {
			t.Errorf("refusal(%v) = %v, want %v", tc.why, got, tc.want)
		}
	}
}
