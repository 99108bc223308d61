package proxy

import (
	"encoding/binary"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// askDestination makes pc, a socket bound to every address, tell with
// each datagram the address it was sent to (IP_PKTINFO, IPV6_PKTINFO),
// and reports whether it will. A dual-stack socket tells IPv4 ones as
// IPv4-mapped IPv6 addresses, and, asked for IP_PKTINFO too, the local
// address they came in by: for a broadcast, the only one to reply from.
func askDestination(pc *net.UDPConn) bool {
	la, ok := pc.LocalAddr().(*net.UDPAddr)
	if !ok || !la.IP.IsUnspecified() {
		return false
	}
	raw, err := pc.SyscallConn()
	if err != nil {
		return false
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		if la.IP.To4() != nil {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
			// Best effort: without it, a broadcast goes unanswered.
			unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
		}
	})
	return err == nil && serr == nil
}

// destinationBufSize holds the control messages askDestination asks for.
var destinationBufSize = unix.CmsgSpace(unix.SizeofInet6Pktinfo) + unix.CmsgSpace(unix.SizeofInet4Pktinfo)

// replyFrom returns the control message that sends a reply from the
// address a datagram that came with oob was sent to (for IPv4, the
// local address it came in by, which a broadcast has too), or nil when
// oob does not say or the address was a multicast group. An IPv4
// datagram to a dual-stack socket comes with both messages; the IPv4
// one wins, since a broadcast address cannot be replied from.
func replyFrom(oob []byte) []byte {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var from6 []byte
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO && len(m.Data) >= unix.SizeofInet4Pktinfo:
			// struct in_pktinfo: ifindex, the local address it came in
			// by (spec_dst), the header's destination.
			var info unix.Inet4Pktinfo
			copy(info.Spec_dst[:], m.Data[4:8])
			if netip.AddrFrom4(info.Spec_dst).IsUnspecified() {
				return nil
			}
			return unix.PktInfo4(&info)
		case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_PKTINFO && len(m.Data) >= unix.SizeofInet6Pktinfo:
			// struct in6_pktinfo: the header's destination, ifindex.
			var info unix.Inet6Pktinfo
			copy(info.Addr[:], m.Data[:16])
			dst := netip.AddrFrom16(info.Addr)
			if dst.IsMulticast() || dst.Unmap().IsMulticast() {
				continue
			}
			if dst.IsLinkLocalUnicast() {
				// Only the interface it came in by names the address.
				info.Ifindex = binary.NativeEndian.Uint32(m.Data[16:20])
			}
			from6 = unix.PktInfo6(&info)
		}
	}
	return from6
}
