package tunnel

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
)

// sleepMachine makes the watches see the machine as suspended for as
// long as the returned function is told, in all.
func sleepMachine(t *testing.T) (sleep func(time.Duration)) {
	var slept atomic.Int64
	hook := func() time.Duration { return time.Duration(slept.Load()) }
	suspendedHook.Store(&hook)
	t.Cleanup(func() { suspendedHook.Store(nil) })
	return func(d time.Duration) { slept.Add(int64(d)) }
}

// TestSleepLongerThanDeadAfterEndsTunnel: a machine that slept longer
// than dead_after (a laptop's lid closed) has often lost its tunnels: its
// peers have given them up, and the path may have gone dark (a NAT that
// forgot the mapping), but its monotonic clock, which stood still, says
// they went silent just now. On waking the tunnel's peer is pinged at
// once, and with no answer the tunnel is closed within keepalive and its
// client redials, not dead_after later.
func TestSleepLongerThanDeadAfterEndsTunnel(t *testing.T) {
	sleep := sleepMachine(t)
	h := newHarness(t, ServerOptions{})
	relay := newStallRelay(t, h.http.Listener.Addr().String())
	var cliLog testutil.Buffer
	// A dead_after far beyond the test's patience: only the sleep can end
	// the tunnel in time.
	c := h.startClient(ClientOptions{URL: "ws://" + relay.ln.Addr().String(), Name: "laptop", Logger: logTo(&cliLog),
		MinBackoff: 10 * time.Millisecond, Mux: MuxOptions{KeepAliveInterval: 100 * time.Millisecond, KeepAliveTimeout: time.Minute}})
	waitFor(t, "the tunnel", func() bool { return c.Status().State == StateUp })
	relay.stall(true) // the path went dark while the machine slept
	sleep(time.Hour)
	waitFor(t, "a new tunnel after the sleep", func() bool { st := c.Status(); return st.State == StateUp && st.Connects == 2 })
	if !strings.Contains(cliLog.String(), "after this machine slept") {
		t.Errorf("the client's log does not say why its tunnel ended:\n%s", cliLog.String())
	}
}

// TestSleepLongerThanDeadAfterKeepsAnsweringPeer: after a sleep longer
// than this west's dead_after, a peer that answers the ping sent on
// waking has kept the tunnel (its own dead_after is longer, say), and the
// tunnel stays up, its streams with it. It was closed at once, without
// asking the peer.
func TestSleepLongerThanDeadAfterKeepsAnsweringPeer(t *testing.T) {
	sleep := sleepMachine(t)
	h := newHarness(t, ServerOptions{})
	const keepalive = 500 * time.Millisecond
	c := h.startClient(ClientOptions{Name: "laptop", MinBackoff: 10 * time.Millisecond,
		Mux: MuxOptions{KeepAliveInterval: keepalive, KeepAliveTimeout: 2 * time.Second}})
	waitFor(t, "the tunnel", func() bool { return c.Status().State == StateUp })
	sleep(time.Minute)
	// The watches see the sleep within keepalive, ping, and hear the
	// answer within the next; a tunnel closed meanwhile has redialled.
	time.Sleep(3 * keepalive)
	if st := c.Status(); st.State != StateUp || st.Connects != 1 {
		t.Fatalf("after a 1 min sleep with dead_after 2 s, the peer answering: client %s after %d tunnels (%v), want its first up",
			st.State, st.Connects, st.LastError)
	}
}

// TestShortSleepsKeepTunnel: after a sleep shorter than dead_after, the
// peer, which waited, answers the ping sent on waking, and the tunnel
// stays up; so it does after a second such sleep, the first no longer
// counting once the peer has been heard.
func TestShortSleepsKeepTunnel(t *testing.T) {
	sleep := sleepMachine(t)
	h := newHarness(t, ServerOptions{})
	c := h.startClient(ClientOptions{Name: "laptop", MinBackoff: 10 * time.Millisecond,
		Mux: MuxOptions{KeepAliveInterval: 100 * time.Millisecond, KeepAliveTimeout: 2 * time.Second}})
	waitFor(t, "the tunnel", func() bool { return c.Status().State == StateUp })
	for range 2 {
		sleep(1200 * time.Millisecond)
		time.Sleep(1200 * time.Millisecond) // the wake, its ping and the answer
	}
	time.Sleep(time.Second) // past dead_after, counting the second sleep
	if st := c.Status(); st.State != StateUp || st.Connects != 1 {
		t.Fatalf("after two 1.2 s sleeps with dead_after 2 s: client %s after %d tunnels (%v), want its first up", st.State, st.Connects, st.LastError)
	}
}
