package tunnel

import (
	"crypto/tls"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// unsentLimit is the most bytes the kernel may hold unsent on a tunnel's
// connection, set by limitUnsent. With 64 KiB, and with 128 KiB, one
// download at 20 ms RTT still ran at the path's speed; with 256 KiB (a
// frame) it fell to two thirds of it in two runs of five.
const unsentLimit = 64 << 10

// limitUnsent caps the bytes the kernel holds unsent on the tunnel's TCP
// connection (TCP_NOTSENT_LOWAT). Without a cap the kernel takes up to its
// send buffer (megabytes) from the send loop, and a frame of any stream
// waits behind all of it; with one, frames wait in the send queue, where
// each stream's share is bounded (see sendQueue). The cap does not bound
// what is in flight, so throughput stays the path's. It is best effort: a
// connection that is not TCP, or a kernel without the option, keeps the
// kernel's default.
func limitUnsent(c net.Conn) {
	if raw := rawSocket(c); raw != nil {
		raw.Control(func(fd uintptr) {
			unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, unsentLimit)
		})
	}
}

// ackedBytes returns how many bytes the peer's TCP has acknowledged on c
// (tcpi_bytes_acked), or false where that cannot be read. While a write
// waits, a count that grows is a slow link's, and one that stands still a
// peer that has stopped reading (see Session.watch).
func ackedBytes(c net.Conn) (n uint64, ok bool) {
	if raw := rawSocket(c); raw != nil {
		raw.Control(func(fd uintptr) {
			if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
				n, ok = info.Bytes_acked, true
			}
		})
	}
	return n, ok
}

// rawSocket returns the socket under a tunnel's connection, or nil.
func rawSocket(c net.Conn) syscall.RawConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// peerGone reports whether c's peer has closed its end already: the
// kernel holds its FIN (CLOSE_WAIT), or has had its RST (CLOSE). The
// state counts, not what is left to read, since a TLS client sends its
// close_notify ahead of its FIN, and a tunnel client never half-closes.
// It does not wait, so a peer that is merely quiet is not gone.
func peerGone(c net.Conn) bool {
	raw := rawSocket(c)
	if raw == nil {
		return false
	}
	gone := false
	raw.Control(func(fd uintptr) {
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		gone = err == nil && (info.State == unix.BPF_TCP_CLOSE_WAIT || info.State == unix.BPF_TCP_CLOSE)
	})
	return gone
}
