//go:build !linux

package tunnel

import "net"

// limitUnsent does nothing where TCP_NOTSENT_LOWAT is not set.
func limitUnsent(net.Conn) {}

// ackedBytes cannot be read here.
func ackedBytes(net.Conn) (uint64, bool) { return 0, false }

// peerGone cannot be told here without reading.
func peerGone(net.Conn) bool { return false }
