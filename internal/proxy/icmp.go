package proxy

import (
	"errors"
	"syscall"
)

// icmpReported reports whether err, from a read of a connected UDP
// socket, is the network's answer to a datagram sent before (an ICMP
// error the kernel keeps for the socket's next call, and then forgets),
// rather than a failure of the socket: reading on waits for the next
// datagram.
func icmpReported(err error) bool {
	for _, e := range icmpErrnos {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// icmpErrnos are what the ICMP errors a connected UDP socket reports
// become: port, host and network unreachable, fragmentation needed.
var icmpErrnos = append([]syscall.Errno{
	syscall.ECONNREFUSED, syscall.EHOSTUNREACH, syscall.ENETUNREACH,
	syscall.EHOSTDOWN, syscall.EMSGSIZE,
}, icmpErrnosOS...)
