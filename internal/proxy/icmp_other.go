//go:build !windows

package proxy

import "syscall"

var icmpErrnosOS []syscall.Errno
