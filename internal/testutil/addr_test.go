package testutil

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestFreeAddrNotEphemeral: FreeAddr's ports are never handed out twice in
// one process, and lie outside the kernel's ephemeral range, where any
// port-0 listener or outgoing connection on the machine (other test
// packages run at the same time) could take one before the west that is
// told it binds it.
func TestFreeAddrNotEphemeral(t *testing.T) {
	lo, hi := 32768, 60999
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			lo, _ = strconv.Atoi(f[0])
			hi, _ = strconv.Atoi(f[1])
		}
	}
	seen := map[string]bool{}
	for range 2000 {
		addr := FreeAddr(t)
		if seen[addr] {
			t.Fatalf("%s handed out twice in %d calls", addr, len(seen)+1)
		}
		seen[addr] = true
		_, p, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		if port, _ := strconv.Atoi(p); port >= lo && port <= hi && hi-lo < 50000 {
			t.Fatalf("%s is in the ephemeral range %d-%d", addr, lo, hi)
		}
	}
}
