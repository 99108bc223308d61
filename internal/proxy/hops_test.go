package proxy

import (
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"
)

func TestAddHop(t *testing.T) {
	for h, want := range map[uint8]uint8{0: 1, 15: 16, 254: 255, 255: 255} {
		if got := addHop(h); got != want {
			t.Errorf("addHop(%d) = %d, want %d", h, got, want)
		}
	}
}

// TestDialMarkWaitsForDial: the far side marks a connection it dialled
// to one of this west's listeners once its dial has returned, and the
// listener may accept it before then. A connection from this host to the
// address of a dial under way waits for the dial, and is then judged by
// its mark; without the wait it took hop count 0, and a loop that dialled
// a listener by name ("localhost") went round five times the limit. A
// dial to another address on the same port makes no connection wait.
func TestDialMarkWaitsForDial(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	accept := func() (out, in net.Conn) {
		t.Helper()
		out, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { out.Close() })
		in, err = ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { in.Close() })
		return out, in
	}

	// A dial under way to another host on the listener's port (the
	// address is never connected to: only noted).
	elsewhere := &selfDialAttempts{}
	elsewhere.control("tcp", net.JoinHostPort("192.0.2.1", strconv.Itoa(port)), nil)
	defer elsewhere.end()
	_, in := accept()
	judged := make(chan uint8, 1)
	go func() { judged <- nextHops(in) }()
	select {
	case h := <-judged:
		if h != 0 {
			t.Fatalf("a client's connection: hop count %d, want 0", h)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a client's connection waits for a dial to another host on the listener's port")
	}

	attempts := &selfDialAttempts{}
	attempts.control("tcp", ln.Addr().String(), nil)
	out, in := accept()
	got := make(chan uint8)
	go func() { got <- nextHops(in) }()
	select {
	case h := <-got:
		t.Fatalf("judged with the dial under way: hop count %d", h)
	case <-time.After(50 * time.Millisecond):
	}
	key := connKey(out.LocalAddr(), out.RemoteAddr())
	mark := &dialMark{hops: 4}
	selfDialled.Store(key, mark)
	defer selfDialled.CompareAndDelete(key, mark)
	attempts.end()
	if h := <-got; h != 5 {
		t.Fatalf("hop count %d, want the dial's 4 and one", h)
	}
	// An attempt the dialer makes after its dial returned is not noted,
	// so nothing waits for it.
	attempts.control("tcp", ln.Addr().String(), nil)

	// With no dial under way, a connection is judged at once: a
	// client's, hop count 0.
	if _, in := accept(); nextHops(in) != 0 {
		t.Fatal("a client's connection after the dial: hop count not 0")
	}
}

func TestUDPNextHops(t *testing.T) {
	from := netip.MustParseAddrPort("127.0.0.1:40000")
	if h := udpNextHops(from); h != 0 {
		t.Fatalf("a client's flow: hop count %d, want 0", h)
	}
	mark := &dialMark{hops: 2}
	udpDialled.Store(from, mark)
	defer udpDialled.CompareAndDelete(from, mark)
	mapped := netip.AddrPortFrom(netip.AddrFrom16(from.Addr().As16()), from.Port())
	for _, a := range []netip.AddrPort{from, mapped} {
		if h := udpNextHops(a); h != 3 {
			t.Errorf("a flow from the far side's socket, seen as %s: hop count %d, want 3", a, h)
		}
	}
}
