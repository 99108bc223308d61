//go:build !linux

package proxy

import "net"

// askDestination does nothing where IP_PKTINFO is not read: replies to a
// listener on every address leave from the address the kernel picks.
func askDestination(*net.UDPConn) bool { return false }

const destinationBufSize = 0

func replyFrom([]byte) []byte { return nil }
