package sockio

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Conn is a TCP connection whose Read, Write and WriteVec are raw system
// calls. Everything else is the net.TCPConn's own.
type Conn struct {
	*net.TCPConn
	raw syscall.RawConn
	r   readOp
	w   writeOp
}

// enabled is false when the environment sets WEST_SOCKIO=off: Wrap then
// returns its argument and Read makes an ordinary system call, so that
// both ways can be measured on one machine (westbench -pair-env).
var enabled = os.Getenv("WEST_SOCKIO") != "off"

// Wrap returns c as a *Conn when it is a TCP connection, and c otherwise.
func Wrap(c net.Conn) net.Conn {
	if !enabled {
		return c
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	sc := &Conn{TCPConn: tc, raw: raw}
	sc.r.try = sc.r.read // bound once, so that a read allocates nothing
	sc.w.try = sc.w.write
	return sc
}

// readOp is one read at a time, with its buffer and outcome kept where the
// function handed to the poller can reach them.
type readOp struct {
	mu    sync.Mutex
	buf   []byte
	n     int
	errno syscall.Errno
	try   func(fd uintptr) bool
}

// read tries once; false leaves the poller to wait until fd is readable.
func (op *readOp) read(fd uintptr) bool {
	op.n, op.errno = Read(fd, op.buf)
	return op.errno != unix.EAGAIN
}

// Read reads into p, as net.TCPConn.Read does.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		// Nothing to read, but a closed connection says so, as the net
		// package's does: a caller whose buffer is full must not take
		// the read for one that goes on.
		if err := c.raw.Control(noControl); err != nil {
			return 0, c.opError("read", err)
		}
		return 0, nil
	}
	op := &c.r
	op.mu.Lock()
	defer op.mu.Unlock()
	op.buf = p
	err := c.raw.Read(op.try)
	op.buf = nil
	switch {
	case err != nil:
		return 0, c.opError("read", err)
	case op.errno != 0:
		return 0, c.opError("read", os.NewSyscallError("read", op.errno))
	case op.n == 0:
		return 0, io.EOF
	}
	return op.n, nil
}

// writeOp is one write at a time: the buffers left to write and what has
// gone so far.
type writeOp struct {
	mu    sync.Mutex
	one   [1][]byte // Write's buffer, as bufs
	iov   []unix.Iovec
	bufs  [][]byte // what is left, the first possibly in part
	n     int64
	errno syscall.Errno
	try   func(fd uintptr) bool
}

// write writes until everything is gone, an error, or a full socket, which
// returns false for the poller to wait until fd is writable.
func (op *writeOp) write(fd uintptr) bool {
	if len(op.bufs) == 0 {
		// A write of nothing still goes to the kernel, as the net
		// package's does, so that one after CloseWrite fails with EPIPE.
		_, op.errno = write(fd, nil)
		return op.errno != unix.EAGAIN
	}
	for len(op.bufs) > 0 {
		var n int
		var errno syscall.Errno
		if len(op.bufs) == 1 || raceEnabled {
			n, errno = write(fd, op.bufs[0])
		} else {
			n, errno = op.writev(fd)
		}
		switch errno {
		case 0:
		case unix.EAGAIN:
			return false
		default:
			op.errno = errno
			return true
		}
		op.n += int64(n)
		for n > 0 {
			if n < len(op.bufs[0]) {
				op.bufs[0] = op.bufs[0][n:]
				break
			}
			n -= len(op.bufs[0])
			op.bufs = op.bufs[1:]
		}
		for len(op.bufs) > 0 && len(op.bufs[0]) == 0 {
			op.bufs = op.bufs[1:]
		}
	}
	return true
}

func (op *writeOp) writev(fd uintptr) (int, syscall.Errno) {
	op.iov = op.iov[:0]
	for _, b := range op.bufs {
		if len(op.iov) == maxIovecs {
			break
		}
		if len(b) > 0 {
			v := unix.Iovec{Base: &b[0]}
			v.SetLen(len(b))
			op.iov = append(op.iov, v)
		}
	}
	return raw(unix.SYS_WRITEV, fd, unsafe.Pointer(&op.iov[0]), len(op.iov))
}

// maxIovecs is the most buffers one writev takes (the kernel's IOV_MAX).
const maxIovecs = 1024

// Write writes p, as net.TCPConn.Write does.
func (c *Conn) Write(p []byte) (int, error) {
	op := &c.w
	op.mu.Lock()
	defer op.mu.Unlock()
	op.one[0] = p
	n, err := c.writeLocked(op.one[:])
	op.one[0] = nil
	return int(n), err
}

// WriteVec writes the buffers in order, in one system call when the
// socket takes them all. The elements of bufs may be changed.
func (c *Conn) WriteVec(bufs [][]byte) (int64, error) {
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	return c.writeLocked(bufs)
}

func (c *Conn) writeLocked(bufs [][]byte) (int64, error) {
	op := &c.w
	op.bufs, op.n, op.errno = bufs, 0, 0
	for len(op.bufs) > 0 && len(op.bufs[0]) == 0 {
		op.bufs = op.bufs[1:]
	}
	err := c.raw.Write(op.try)
	op.bufs = nil
	clear(op.iov) // holds no buffer past the call
	op.iov = op.iov[:0]
	switch {
	case err != nil:
		return op.n, c.opError("write", err)
	case op.errno != 0:
		return op.n, c.opError("write", os.NewSyscallError("write", op.errno))
	}
	return op.n, nil
}

// noControl is the function Read hands to the poller to learn only
// whether the socket is still open.
func noControl(uintptr) {}

// opError names the operation the caller asked for, where the poller's
// errors would say "raw-read" or "raw-write".
func (c *Conn) opError(op string, err error) error {
	if oe, ok := err.(*net.OpError); ok {
		err = oe.Err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// Read reads from the socket fd once. A socket with nothing to read gives
// EAGAIN, the end of the stream 0 and no error.
func Read(fd uintptr, p []byte) (int, syscall.Errno) {
	if len(p) == 0 {
		return 0, 0
	}
	if enabled && !raceEnabled {
		return raw(unix.SYS_READ, fd, unsafe.Pointer(&p[0]), len(p))
	}
	for {
		n, errno := ordinary(syscall.Read(int(fd), p))
		if errno != unix.EINTR {
			return n, errno
		}
	}
}

func write(fd uintptr, p []byte) (int, syscall.Errno) {
	if !raceEnabled {
		return raw(unix.SYS_WRITE, fd, unsafe.Pointer(unsafe.SliceData(p)), len(p))
	}
	for {
		n, errno := ordinary(syscall.Write(int(fd), p))
		if errno != unix.EINTR {
			return n, errno
		}
	}
}

// raw makes the system call trap(fd, buf, n) without telling the runtime,
// again when a signal interrupts it; an error comes with 0 bytes.
func raw(trap, fd uintptr, buf unsafe.Pointer, n int) (int, syscall.Errno) {
	for {
		r, _, errno := unix.RawSyscall(trap, fd, uintptr(buf), uintptr(n))
		switch errno {
		case 0:
			return int(r), 0
		case unix.EINTR:
		default:
			return 0, errno
		}
	}
}

// ordinary puts an ordinary system call's result in raw's terms.
func ordinary(n int, err error) (int, syscall.Errno) {
	if err == nil {
		return n, 0
	}
	errno, ok := err.(syscall.Errno)
	if !ok {
		errno = syscall.EIO
	}
	return 0, errno
}
