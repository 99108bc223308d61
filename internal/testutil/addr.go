package testutil

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// freePorts are the ports FreeAddr has handed out in this process.
var freePorts struct {
	sync.Mutex
	given map[int]bool
}

// FreeAddr returns a loopback TCP address that was free a moment ago, for
// a west started as a process, which must be told its ports in its config.
//
// The port is not one the kernel gives to port-0 listeners and outgoing
// connections (its ephemeral range), where other tests running at the same
// time could take it before the west binds it, and it is never handed out
// twice in one process. It is under 30000 too, clear of Kubernetes' node
// ports, which kube-proxy may redirect on loopback.
func FreeAddr(t testing.TB) string {
	t.Helper()
	lo, hi := 10000, min(ephemeralLow(), 30000)-1
	if hi-lo < 1000 {
		lo, hi = 0, 0 // no room below the ephemeral range: take the kernel's
	}
	freePorts.Lock()
	defer freePorts.Unlock()
	if freePorts.given == nil {
		freePorts.given = map[int]bool{}
	}
	for range 1000 {
		port := 0
		if hi > lo {
			port = lo + rand.IntN(hi-lo+1)
			if freePorts.given[port] {
				continue
			}
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue // in use
		}
		port = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if !freePorts.given[port] {
			freePorts.given[port] = true
			return ln.Addr().String()
		}
	}
	t.Fatal("no free loopback port in 1000 tries")
	return ""
}

// ephemeralLow is the first port of the kernel's ephemeral range.
func ephemeralLow() int {
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				return n
			}
		}
	}
	return 32768 // Linux's default; elsewhere a guess
}

// DialClient connects to addr as a client whose reads and writes give up
// after 10 s, closed when the test ends if not before.
func DialClient(t testing.TB, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c.(*net.TCPConn)
}
