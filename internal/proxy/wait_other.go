//go:build !unix

package proxy

import "syscall"

// waitReadable is a no-op where peeking at a socket is not portable: the
// copy then holds its buffer while it waits.
func waitReadable(syscall.RawConn) error { return nil }
