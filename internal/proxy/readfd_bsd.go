//go:build darwin || freebsd || netbsd || openbsd || dragonfly

package proxy

import "syscall"

// readFD reads the socket once.
func readFD(fd uintptr, p []byte) (int, error) { return syscall.Read(int(fd), p) }
