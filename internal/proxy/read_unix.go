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
	var n int
	var rerr error
	err := rc.Read(func(fd uintptr) bool {
		if *bp == nil {
			*bp = copyBufs.Get().(*[]byte)
		}
		for {
			n, rerr = readFD(fd, **bp)
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
	switch {
	case err != nil:
		return 0, err
	case rerr != nil:
		return 0, rerr
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

const canReadPooled = true
