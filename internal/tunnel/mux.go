package tunnel

import (
	"time"

	"github.com/xtaci/smux"
)

// MuxOptions tunes the multiplexer of every session. The zero value means
// the defaults given on each field.
type MuxOptions struct {
	// KeepAliveInterval is how often each end sends a keepalive frame.
	// Zero means 5s.
	KeepAliveInterval time.Duration
	// KeepAliveTimeout is how long a session may receive nothing at all
	// before it is declared dead and closed. Zero means 15s.
	KeepAliveTimeout time.Duration
	// StreamWindow is the most bytes one stream may have in flight
	// unacknowledged; it caps one stream's throughput at window/RTT.
	// smux acknowledges after half the window is read, so at 20 ms a 4 MiB
	// window held one stream to about 150 MB/s; only unread data fills it.
	// Zero means 16 MiB.
	StreamWindow int
	// SessionWindow bounds the bytes buffered for all streams of a session;
	// when it is full the whole tunnel waits, so it is kept well above
	// StreamWindow. Zero means 64 MiB.
	SessionWindow int
	// MaxStreams is how many streams the peer may have open towards us at
	// once; beyond it new streams are refused as overloaded, so a flood of
	// opens cannot exhaust memory. Zero means no limit.
	MaxStreams int
}

func (o MuxOptions) withDefaults() MuxOptions {
	if o.KeepAliveInterval <= 0 {
		o.KeepAliveInterval = 5 * time.Second
	}
	if o.KeepAliveTimeout <= 0 {
		o.KeepAliveTimeout = 3 * o.KeepAliveInterval
	}
	if o.KeepAliveTimeout < o.KeepAliveInterval {
		o.KeepAliveTimeout = o.KeepAliveInterval
	}
	if o.StreamWindow <= 0 {
		o.StreamWindow = 16 << 20
	}
	if o.SessionWindow <= 0 {
		o.SessionWindow = 64 << 20
	}
	if o.SessionWindow < o.StreamWindow {
		o.SessionWindow = o.StreamWindow
	}
	return o
}

// maxFrame is smux's largest frame; each frame travels as one WebSocket
// message, so the WebSocket read limit follows from it.
const maxFrame = 65535

func (o MuxOptions) smuxConfig() *smux.Config {
	o = o.withDefaults()
	return &smux.Config{
		Version:           2,
		KeepAliveInterval: o.KeepAliveInterval,
		KeepAliveTimeout:  o.KeepAliveTimeout,
		MaxFrameSize:      maxFrame,
		MaxReceiveBuffer:  o.SessionWindow,
		MaxStreamBuffer:   o.StreamWindow,
	}
}
