package sockio

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
)

// TestLimitHint feeds LimitHint errors shaped as net returns them, and as
// west's callers wrap them further, and checks which limit each names.
func TestLimitHint(t *testing.T) {
	dialErr := func(errno syscall.Errno) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", errno)}
	}
	acceptErr := func(errno syscall.Errno) error {
		return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", errno)}
	}
	for _, tc := range []struct {
		name string
		err  error
		want string // a piece of the hint; "" for none
	}{
		{"accept, process out of descriptors", acceptErr(syscall.EMFILE), "LimitNOFILE"},
		{"dial, system out of descriptors", dialErr(syscall.ENFILE), "fs.file-max"},
		{"dial, no socket buffers", dialErr(syscall.ENOBUFS), "memory for sockets"},
		{"accept, no memory", acceptErr(syscall.ENOMEM), "memory for sockets"},
		{"dial, no ephemeral port", dialErr(syscall.EADDRNOTAVAIL), "ip_local_port_range"},
		{"tunnel client's dial, wrapped", fmt.Errorf("dial tunnel server ws://g:9801: %w", dialErr(syscall.EADDRNOTAVAIL)), "ip_local_port_range"},
		// This host has an address to reach loopback from: the ports
		// are what ran out.
		{"dial of loopback, no ephemeral port", &net.OpError{Op: "dial", Net: "tcp", Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9},
			Err: os.NewSyscallError("connect", syscall.EADDRNOTAVAIL)}, "ip_local_port_range"},
		// UDP's connect(2) finds no port as EAGAIN: its EADDRNOTAVAIL is
		// a missing local address.
		{"UDP dial, no local address", &net.OpError{Op: "dial", Net: "udp", Addr: &net.UDPAddr{IP: net.ParseIP("2001:db8::1"), Port: 53},
			Err: os.NewSyscallError("connect", syscall.EADDRNOTAVAIL)}, ""},
		{"UDP dial, no ephemeral port", &net.OpError{Op: "dial", Net: "udp4", Addr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53},
			Err: os.NewSyscallError("connect", syscall.EAGAIN)}, "ip_local_port_range"},
		{"TCP read, would block", &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.EAGAIN)}, ""},
		{"dial from a local address the system lacks", bindErr(t), ""},
		{"dial, refused", dialErr(syscall.ECONNREFUSED), ""},
		{"plain error", errors.New("cannot assign requested address"), ""},
		{"nil", nil, ""},
	} {
		got := LimitHint(tc.err)
		switch {
		case tc.want == "" && got != "":
			t.Errorf("%s: LimitHint(%v) = %q, want none", tc.name, tc.err, got)
		case !strings.Contains(got, tc.want):
			t.Errorf("%s: LimitHint(%v) = %q, want one naming %q", tc.name, tc.err, got, tc.want)
		}
	}
}

// bindErr is the error of a dial from a local address no interface has
// (TEST-NET-1): bind(2) refuses it with EADDRNOTAVAIL, as connect(2)
// does when it finds no ephemeral port.
func bindErr(t *testing.T) error {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1)}}
	c, err := d.Dial("tcp", "127.0.0.1:9")
	if err == nil {
		c.Close()
		t.Fatal("a dial from 192.0.2.1 went through: this host has the address")
	}
	if !errors.Is(err, syscall.EADDRNOTAVAIL) {
		t.Skipf("a dial from 192.0.2.1: %v, not EADDRNOTAVAIL", err)
	}
	return err
}
