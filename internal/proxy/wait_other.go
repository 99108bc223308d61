//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package proxy

import "syscall"

// waitReadable is a no-op where peeking at a socket is not portable: the
// copy then holds its buffer while it waits.
func waitReadable(syscall.RawConn) error { return nil }
