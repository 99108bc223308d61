package sockio

import (
	"errors"
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
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		// Mostly connect(2) finding no free ephemeral port towards the
		// address dialled (many connections there, or in TIME_WAIT);
		// rarely a source address that went away, hence "may".
		return "no local port left to dial from: the ephemeral ports may be used up " +
			"(widen net.ipv4.ip_local_port_range, or have connections to the target kept alive)"
	}
	return ""
}
