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
// than dead_after (a laptop's lid closed) has lost its tunnels, since
// their peers have given them up, but its monotonic clock, which stood
// still, says they went silent just now. On waking the tunnel is closed
// at once and its client redials, not dead_after later.
func TestSleepLongerThanDeadAfterEndsTunnel(t *testing.T) {
	sleep := sleepMachine(t)
	h := newHarness(t, ServerOptions{})
	var cliLog testutil.Buffer
	// A dead_after far beyond the test's patience: only the sleep can end
	// the tunnel in time.
	c := h.startClient(ClientOptions{Name: "laptop", Logger: logTo(&cliLog), MinBackoff: 10 * time.Millisecond,
		Mux: MuxOptions{KeepAliveInterval: 100 * time.Millisecond, KeepAliveTimeout: time.Minute}})
	waitFor(t, "the tunnel", func() bool { return c.Status().State == StateUp })
	sleep(time.Hour)
	waitFor(t, "a new tunnel after the sleep", func() bool { st := c.Status(); return st.State == StateUp && st.Connects == 2 })
	if !strings.Contains(cliLog.String(), "slept longer than dead_after") {
		t.Errorf("the client's log does not say why its tunnel ended:\n%s", cliLog.String())
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
