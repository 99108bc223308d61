package sockio

import (
	"errors"
	"net"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestLimitHintIPv6Off dials an IPv6 address where IPv6 is off, as in
// many containers: connect(2) fails with EADDRNOTAVAIL, as it does when
// the ephemeral ports are used up, but no limit is at fault, and
// LimitHint must not name one (nor the far side answer 503 for it).
func TestLimitHintIPv6Off(t *testing.T) {
	var dialErr error
	var hint string
	inNewNetns(t, func() string {
		for _, f := range []string{"all", "lo", "default"} {
			if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+f+"/disable_ipv6", []byte("1"), 0); err != nil {
				return "cannot turn IPv6 off in the namespace: " + err.Error()
			}
		}
		c, err := net.Dial("tcp", "[::1]:9")
		if err == nil {
			c.Close()
		}
		dialErr, hint = err, LimitHint(err)
		return ""
	})
	if !errors.Is(dialErr, syscall.EADDRNOTAVAIL) {
		t.Skipf("a dial of [::1] with IPv6 off: %v, not EADDRNOTAVAIL", dialErr)
	}
	if hint != "" {
		t.Errorf("LimitHint(%v) = %q, want none: the host has no IPv6 address, its ports are not used up", dialErr, hint)
	}
}

// TestLimitHintUDPPortsUsedUp dials UDP until the ephemeral ports, two of
// them in a namespace of its own, are used up: the kernel says so with
// EAGAIN, not TCP's EADDRNOTAVAIL, and LimitHint must name the ports.
func TestLimitHintUDPPortsUsedUp(t *testing.T) {
	var dialErr error
	var hint string
	inNewNetns(t, func() string {
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_local_port_range", []byte("40000 40001"), 0); err != nil {
			return "cannot set the namespace's port range: " + err.Error()
		}
		if err := linkUp("lo"); err != nil {
			return "cannot bring the namespace's loopback up: " + err.Error()
		}
		for range 3 {
			c, err := net.Dial("udp4", "127.0.0.1:9")
			if err != nil {
				dialErr, hint = err, LimitHint(err)
				return ""
			}
			defer c.Close()
		}
		return ""
	})
	if !errors.Is(dialErr, syscall.EAGAIN) {
		t.Fatalf("the third UDP dial with two ephemeral ports: %v, want EAGAIN", dialErr)
	}
	if !strings.Contains(hint, "ip_local_port_range") {
		t.Errorf("LimitHint(%v) = %q, want the ports named", dialErr, hint)
	}
}

// inNewNetns runs f on a thread of its own in a new network namespace,
// which ends with it. Making one needs root: without, the test skips, or
// fails where WEST_REQUIRE_NETNS says it must run. f returns why the
// test cannot go on in the namespace, or "".
func inNewNetns(t *testing.T, f func() (skip string)) {
	t.Helper()
	done := make(chan string, 1)
	go func() {
		// The thread enters the namespace and is never unlocked: it
		// ends with the goroutine, namespace and all.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			done <- "cannot make a network namespace: " + err.Error()
			return
		}
		done <- f()
	}()
	if skip := <-done; skip != "" {
		if os.Getenv("WEST_REQUIRE_NETNS") != "" {
			t.Fatalf("WEST_REQUIRE_NETNS is set, but %s", skip)
		}
		t.Skip(skip)
	}
}

// linkUp brings the named interface of the thread's namespace up.
func linkUp(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}
