package node

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
)

// TestReloadRetiredClientSendsLastBytes: a tunnel client a reload
// replaced retires once the streams it carries have ended; over a slow
// link the last bytes of those streams still wait in the tunnel's send
// queue then, and must reach the peer before the tunnel closes.
func TestReloadRetiredClientSendsLastBytes(t *testing.T) {
	const size = 1 << 20
	backend := sendingBackend(t, size)
	// A listener on G for each name L takes in turn.
	var pre prebound
	var entries []string
	var listeners []string
	for i := range 4 {
		entries = append(entries, pre.addr(t))
		listeners = append(listeners, fmt.Sprintf(`"tcp://%s": {"en": "L%d", "ou": "tcp://%s"}`, entries[i], i, backend))
	}
	g, _ := runNode(t, fmt.Sprintf(`{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"}, "proxy": {%s}}`,
		strings.Join(listeners, ", ")), Options{Listen: pre.listen})
	relay := testutil.StartRelay(t, g.Addrs().Tunnel)
	srv := "ws://" + relay.Addr()
	// Each reload renames the client, which retires once the stream in
	// flight on its tunnel has ended.
	conf := func(round int) string {
		return fmt.Sprintf(`{"west": {"nm": "L", "shutdown_grace": "30s"}, "wstc": {%q: {"nm": "L%d"}}}`, srv, round)
	}
	l, _ := runNode(t, conf(0), Options{})
	waitUp(t, g, "L0")
	relay.Rate(256 << 10)
	// The loss depends on when the retiring client looks at its streams:
	// a few rounds make it near certain.
	for round := 1; round <= 3; round++ {
		res := fetchAllFrom(entries[round-1])
		time.Sleep(300 * time.Millisecond)
		if err := l.Reload(mustParse(t, conf(round))); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-res:
			if want := fmt.Sprintf("%d bytes, <nil>", size); got != want {
				t.Fatalf("round %d: what the retired tunnel carried: %s, want %s", round, got, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("no answer")
		}
		waitUp(t, g, fmt.Sprintf("L%d", round))
	}
}

// TestStopWhileClientRetiresSendsLastBytes: as
// TestReloadRetiredClientSendsLastBytes, with L stopped while its old
// client still retires: the stop waited for the send queues of the
// tunnels up, but not for a retiring client's, which closed with the node
// and lost what its queue held.
func TestStopWhileClientRetiresSendsLastBytes(t *testing.T) {
	const size = 1 << 20
	backend := sendingBackend(t, size)
	var pre prebound
	entry := pre.addr(t)
	g, _ := runNode(t, fmt.Sprintf(`{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"}, "proxy": {"tcp://%s": {"en": "L0", "ou": "tcp://%s"}}}`,
		entry, backend), Options{Listen: pre.listen})
	relay := testutil.StartRelay(t, g.Addrs().Tunnel)
	conf := func(name string) string {
		return fmt.Sprintf(`{"west": {"nm": "L", "shutdown_grace": "30s"}, "wstc": {"ws://%s": {"nm": %q}}}`, relay.Addr(), name)
	}
	l, stopL := runNode(t, conf("L0"), Options{})
	waitUp(t, g, "L0")
	relay.Rate(256 << 10)
	res := fetchAllFrom(entry)
	time.Sleep(300 * time.Millisecond)
	if err := l.Reload(mustParse(t, conf("L1"))); err != nil {
		t.Fatal(err)
	}
	waitUp(t, g, "L1")
	stopL()
	if got, want := <-res, fmt.Sprintf("%d bytes, <nil>", size); got != want {
		t.Fatalf("what the retiring tunnel carried: %s, want %s", got, want)
	}
}

// sendingBackend is a TCP server that sends size bytes on each connection
// and closes it.
func sendingBackend(t *testing.T, size int) string {
	t.Helper()
	body := strings.Repeat("x", size)
	return connTarget(t, func(c *net.TCPConn) { io.WriteString(c, body) })
}

// fetchAllFrom connects to addr, half-closes, and reads to the end; the
// channel gets "N bytes, ERR".
func fetchAllFrom(addr string) <-chan string {
	res := make(chan string, 1)
	go func() {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			res <- err.Error()
			return
		}
		defer c.Close()
		c.(*net.TCPConn).CloseWrite()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		n, err := io.Copy(io.Discard, c)
		res <- fmt.Sprintf("%d bytes, %v", n, err)
	}()
	return res
}
