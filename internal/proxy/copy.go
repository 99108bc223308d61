package proxy

import (
	"io"
	"net"
	"sync"
	"syscall"

	"github.com/west-tunnel/west/internal/tunnel"
)

// copyBufSize is the size of the buffers that carry bytes from a socket
// into a stream: one full multiplexer frame, so a full read leaves as one
// frame rather than a full one and a sliver.
const copyBufSize = tunnel.MaxPayload

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// copyConn copies src to dst until src's end-of-stream or an error, as
// io.Copy does, but without pinning a buffer to an idle connection: a
// tunnel stream is drained by its own WriteTo, and a socket is read into a
// pooled buffer only once it is readable (readPooled). Ten thousand idle
// TCP connections then cost goroutines, not ten thousand buffers.
func copyConn(dst io.Writer, src net.Conn) (int64, error) {
	// Beneath the limit's wrapper may be a stream handed to a listener,
	// which must not be read through a buffer.
	inner := innermost(src)
	if p, ok := inner.(*pendingStream); ok {
		var err error
		if inner, err = p.accept(); err != nil {
			return 0, err
		}
	}
	if st, ok := inner.(*tunnel.Stream); ok {
		return st.WriteTo(dst)
	}
	var rc syscall.RawConn
	if canReadPooled {
		rc = rawConn(src)
	}
	observe, _ := src.(readObserver)
	var bp *[]byte
	defer func() {
		if bp != nil {
			copyBufs.Put(bp)
		}
	}()
	var total int64
	for {
		var n int
		var rerr error
		if rc != nil {
			n, rerr = readPooled(rc, &bp)
			if n > 0 && observe != nil {
				observe.observeRead(n)
			}
		} else {
			if bp == nil {
				bp = copyBufs.Get().(*[]byte)
			}
			n, rerr = src.Read(*bp)
		}
		if n > 0 {
			nw, werr := dst.Write((*bp)[:n])
			total += int64(nw)
			if werr == nil && nw != n {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				// A tunnel stream's multiplexer may still be sending from
				// the buffer after a failed write: it is not reused.
				bp = nil
				return total, werr
			}
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

// readObserver is told of bytes read past it, straight from its socket.
type readObserver interface {
	observeRead(n int)
}

// rawConn digs the socket out of the wrappers this package puts around
// connections, or returns nil.
func rawConn(c net.Conn) syscall.RawConn {
	for {
		switch t := c.(type) {
		case trackedConn:
			c = t.Conn
		case *limitConn:
			c = t.Conn
		case syscall.Conn:
			rc, err := t.SyscallConn()
			if err != nil {
				return nil
			}
			return rc
		default:
			return nil
		}
	}
}
