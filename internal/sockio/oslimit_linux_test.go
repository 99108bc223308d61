package sockio

import (
	"errors"
	"net"
	"os"
	"runtime"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestLimitHintIPv6Off dials an IPv6 address where IPv6 is off, as in
// many containers: connect(2) fails with EADDRNOTAVAIL, as it does when
// the ephemeral ports are used up, but no limit is at fault, and
// LimitHint must not name one (nor the far side answer 503 for it). It
// needs a network namespace of its own, so root; with
// WEST_REQUIRE_NETNS set it fails rather than skip without one.
func TestLimitHintIPv6Off(t *testing.T) {
	type outcome struct {
		dialErr error
		hint    string
		skip    string
	}
	done := make(chan outcome, 1)
	go func() {
		// The thread enters a namespace of its own and is never
		// unlocked: it ends with the goroutine, namespace and all.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			done <- outcome{skip: "cannot make a network namespace: " + err.Error()}
			return
		}
		for _, f := range []string{"all", "lo", "default"} {
			if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+f+"/disable_ipv6", []byte("1"), 0); err != nil {
				done <- outcome{skip: "cannot turn IPv6 off in the namespace: " + err.Error()}
				return
			}
		}
		c, err := net.Dial("tcp", "[::1]:9")
		if err == nil {
			c.Close()
		}
		done <- outcome{dialErr: err, hint: LimitHint(err)}
	}()
	o := <-done
	if o.skip != "" {
		if os.Getenv("WEST_REQUIRE_NETNS") != "" {
			t.Fatalf("WEST_REQUIRE_NETNS is set, but %s", o.skip)
		}
		t.Skip(o.skip)
	}
	if !errors.Is(o.dialErr, syscall.EADDRNOTAVAIL) {
		t.Skipf("a dial of [::1] with IPv6 off: %v, not EADDRNOTAVAIL", o.dialErr)
	}
	if o.hint != "" {
		t.Errorf("LimitHint(%v) = %q, want none: the host has no IPv6 address, its ports are not used up", o.dialErr, o.hint)
	}
}
