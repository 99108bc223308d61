//go:build linux

package node

import (
	"fmt"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// A udp:// listener on every address answers a client that broadcast its
// datagram, as discovery protocols do, from its own address on the
// network the broadcast came in by: the kernel refuses to send from a
// broadcast address, so a reply from "the address asked" is lost. On
// loopback, 127.255.255.255 is the broadcast address of 127.0.0.0/8.
func TestUDPWildcardListenerAnswersBroadcast(t *testing.T) {
	echo := udpEcho(t)
	g := startNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	for i, host := range []string{"0.0.0.0", ""} {
		port := wildcardUDPListener(t, g, i, host, echo)
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		rc, err := c.(*net.UDPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var serr error
		rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_BROADCAST, 1)
		})
		if serr != nil {
			t.Fatal(serr)
		}
		p, _ := strconv.Atoi(port)
		to := &net.UDPAddr{IP: net.IPv4(127, 255, 255, 255), Port: p}
		buf := make([]byte, 100)
		var got string
		for try := 0; try < 10 && got == ""; try++ {
			if _, err := c.WriteTo([]byte("anyone there"), to); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if n, _, err := c.ReadFrom(buf); err == nil {
				got = string(buf[:n])
			}
		}
		if got != "echo anyone there" {
			t.Errorf("listener on %q, client broadcasting to %s: got %q, want the echo", host, to, got)
		}
	}
}

// A client that sends from one port to two addresses of a listener on
// every address, as ntpd does from port 123 to each of its servers, gets
// each answer from the address it sent that datagram to: the first
// address it used must not answer for the second.
func TestUDPWildcardListenerOneClientPortTwoAddresses(t *testing.T) {
	echo := udpEcho(t)
	g := startNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	for i, host := range []string{"0.0.0.0", ""} {
		port := wildcardUDPListener(t, g, i, host, echo)
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for _, to := range []string{"127.0.0.1", "127.0.0.2"} {
			dst, err := net.ResolveUDPAddr("udp4", net.JoinHostPort(to, port))
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 100)
			var got string
			var from net.Addr
			for try := 0; try < 10 && got == ""; try++ {
				c.WriteTo([]byte("where from"), dst)
				c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
				if n, a, err := c.ReadFrom(buf); err == nil {
					got, from = string(buf[:n]), a
				}
			}
			if got != "echo where from" || from.String() != dst.String() {
				t.Errorf("listener on %q, one client port sending to %s: got %q from %v, want the echo from %s", host, to, got, from, dst)
			}
		}
	}
}

// wildcardUDPListener starts west Li with a udp:// listener on every
// address (host "0.0.0.0" or "") that sends up to g, to echo, and returns
// the listener's port.
func wildcardUDPListener(t *testing.T, g *Node, i int, host, echo string) string {
	t.Helper()
	_, port, _ := net.SplitHostPort(freeUDPAddr(t))
	startNode(t, fmt.Sprintf(`{"west": {"nm": "L%d"}, "proxy": {"udp://%s": {"ea": "ws://%s", "ou": "udp://%s"}}}`,
		i, net.JoinHostPort(host, port), g.Addrs().Tunnel, echo), Options{})
	return port
}
