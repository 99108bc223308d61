//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package proxy

import (
	"io"
	"syscall"
)

// readPooled reads from the socket into a buffer taken from copyBufs only
// once the socket has something to give, in one system call per read. *bp
// is the buffer held from the last read, or nil; while the socket has
// nothing, the buffer goes back to the pool and the runtime's poller
// waits, so an idle connection holds no buffer.
func readPooled(rc syscall.RawConn, bp **[]byte) (int, error) {
	n, err := readSocket(rc, bp, 0)
	if err == nil && n == 0 {
		return 0, io.EOF
	}
	return n, err
}

// readSocket is readPooled reading into (**bp)[off:], and taking a read
// of nothing for what it is: from a datagram socket, an empty datagram.
func readSocket(rc syscall.RawConn, bp **[]byte, off int) (int, error) {
	var n int
	var rerr error
	err := rc.Read(func(fd uintptr) bool {
		if *bp == nil {
			*bp = copyBufs.Get().(*[]byte)
		}
		for {
			n, rerr = readFD(fd, (**bp)[off:])
			if rerr != syscall.EINTR {
				break
			}
		}
		if rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK {
			copyBufs.Put(*bp)
			*bp = nil
			return false
		}
		return true
	})
	if err != nil {
		return 0, err
	}
	return n, rerr
}

const canReadPooled = true
