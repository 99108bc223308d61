package sockio

import (
	"errors"
	"net"
	"os"
	"strings"
	"syscall"
)

// LimitHint says which limit to raise when err, from an accept or a
// dial, is the system's refusal of another socket; "" for any other
// error. The error alone ("too many open files") does not say where the
// limit is set.
//
// On Windows, Winsock reports these as WSAE… numbers that match none of
// the errnos here, so there is no hint.
func LimitHint(err error) string {
	switch {
	case errors.Is(err, syscall.EMFILE):
		return "west is out of file descriptors: raise its limit (LimitNOFILE= in its systemd unit, ulimit -n)"
	case errors.Is(err, syscall.ENFILE):
		return "the system is out of file descriptors: raise fs.file-max"
	case errors.Is(err, syscall.ENOBUFS), errors.Is(err, syscall.ENOMEM):
		return "the system is short of memory for sockets"
	case errors.Is(err, syscall.EADDRNOTAVAIL) && portsUsedUp(err),
		errors.Is(err, syscall.EAGAIN) && udpConnect(err):
		return "no local port left to dial from: the ephemeral ports may be used up " +
			"(widen net.ipv4.ip_local_port_range, or have connections to the target kept alive)"
	}
	return ""
}

// udpConnect tells whether err is from connect(2) on a UDP socket, which
// fails with EAGAIN only when it finds no free ephemeral port to bind.
func udpConnect(err error) bool {
	var oe *net.OpError
	var se *os.SyscallError
	return errors.As(err, &oe) && strings.HasPrefix(oe.Net, "udp") &&
		errors.As(err, &se) && se.Syscall == "connect"
}

// portsUsedUp tells, of a dial that failed with EADDRNOTAVAIL, whether
// connect(2) found no free ephemeral port towards the address dialled
// (many connections there, or in TIME_WAIT), rather than no local
// address to reach it from. The kernel says the same of both, and the
// second is common: an IPv6 address dialled where IPv6 is off (many
// containers), which no limit raised would help, and which the target,
// not this west, has to answer for. A UDP socket connected to the same
// address, which sends nothing and takes no TCP port, tells them apart:
// it fails too only when there is no local address. Where the error does
// not name what was dialled, the ports it is, as is most likely.
func portsUsedUp(err error) bool {
	var se *os.SyscallError
	if errors.As(err, &se) && se.Syscall != "connect" {
		return false // bind(2) of a local address the system lacks
	}
	var oe *net.OpError
	if !errors.As(err, &oe) {
		return true
	}
	var to net.UDPAddr
	switch a := oe.Addr.(type) {
	case *net.TCPAddr:
		to = net.UDPAddr{IP: a.IP, Port: a.Port, Zone: a.Zone}
	case *net.UDPAddr:
		// UDP's own connect(2) finds no port as EAGAIN, not
		// EADDRNOTAVAIL: this one has no local address.
		return false
	default:
		return true
	}
	if to.Port == 0 {
		to.Port = 9
	}
	probe, perr := net.DialUDP("udp", nil, &to)
	if perr != nil {
		return !errors.Is(perr, syscall.EADDRNOTAVAIL) && !errors.Is(perr, syscall.ENETUNREACH)
	}
	probe.Close()
	return true
}
