//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package proxy

import (
	"errors"
	"syscall"
)

// readPooled is not available where reading a raw socket is not portable;
// the copy then reads through the connection and holds its buffer while
// it waits.
func readPooled(syscall.RawConn, **[]byte) (int, error) {
	return 0, errors.ErrUnsupported
}

func readSocket(syscall.RawConn, **[]byte, int) (int, error) {
	return 0, errors.ErrUnsupported
}

const canReadPooled = false
