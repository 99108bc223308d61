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
