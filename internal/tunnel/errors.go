package tunnel

import "errors"

// ErrPeerDown means no tunnel to the wanted peer is up: callers answer 503.
var ErrPeerDown = errors.New("peer not connected")

// errHandshake wraps every reason a tunnel handshake was refused.
var errHandshake = errors.New("tunnel handshake refused")
