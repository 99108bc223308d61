//go:build !linux

package tunnel

import "net"

// limitUnsent does nothing where TCP_NOTSENT_LOWAT is not set.
func limitUnsent(net.Conn) {}
