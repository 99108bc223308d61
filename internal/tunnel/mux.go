package tunnel

import (
	"context"
	"log/slog"
	"math"
	"strings"
	"time"

	"github.com/libp2p/go-yamux/v5"

	"github.com/west-tunnel/west/internal/lograte"
)

// MuxOptions tunes the multiplexer of every session. The zero value means
// the defaults given on each field.
type MuxOptions struct {
	// KeepAliveInterval is how long a session may receive nothing before
	// it pings the peer. Zero means a third of KeepAliveTimeout, or 5s.
	KeepAliveInterval time.Duration
	// KeepAliveTimeout is how long a session may receive nothing at all
	// before it is declared dead and closed: the ping sent after
	// KeepAliveInterval of silence has the rest to be answered. Zero means
	// three times KeepAliveInterval; a value not above KeepAliveInterval
	// is raised to twice it.
	KeepAliveTimeout time.Duration
	// StreamWindow is the most bytes one stream may have in flight
	// unacknowledged, and so the most unread data it may hold: it caps one
	// stream's throughput at window/RTT. Each stream has its own window and
	// no session-wide limit stops the others, so a stream whose reader
	// stalls cannot hold up the rest of its tunnel; a tunnel holds at most
	// MaxStreams windows. Zero means 16 MiB; less than 256 KiB means
	// 256 KiB.
	StreamWindow int
	// MaxStreams is how many streams the peer may have open towards us at
	// once; beyond it new streams are refused as overloaded, so a flood of
	// opens cannot exhaust memory. Zero means no limit.
	MaxStreams int
	// NoHops makes the session behave as a west that predates stream
	// header version 2 (wire.VersionHops): it neither announces HopsHeader
	// nor answers it, refuses that version as a bad header, and sends
	// version 1, without a hop count. It is for tests of compatibility
	// with older wests; false is the protocol as documented.
	NoHops bool
}

// minStreamWindow is the smallest window yamux allows.
const minStreamWindow = 256 << 10

func (o MuxOptions) withDefaults() MuxOptions {
	if o.KeepAliveInterval <= 0 {
		o.KeepAliveInterval = 5 * time.Second
		if o.KeepAliveTimeout > 0 {
			o.KeepAliveInterval = o.KeepAliveTimeout / 3
		}
	}
	if o.KeepAliveTimeout <= 0 {
		o.KeepAliveTimeout = 3 * o.KeepAliveInterval
	}
	if o.KeepAliveTimeout <= o.KeepAliveInterval {
		o.KeepAliveTimeout = 2 * o.KeepAliveInterval
	}
	if o.StreamWindow <= 0 {
		o.StreamWindow = 16 << 20
	}
	o.StreamWindow = max(o.StreamWindow, minStreamWindow)
	return o
}

// MaxPayload is the most bytes one multiplexer frame carries: a write of
// up to MaxPayload bytes with the window open leaves as one frame. Each
// frame costs a hand-off to the send loop and a WebSocket message. With
// about 256 KiB, downloads and uploads through one hop ran at 0.90 to 0.99
// of the speed of two plain TCP relays measured in the same run; with
// 64 KiB, at 0.70 to 0.86. A frame and its header make exactly 256 KiB:
// yamux copies frames into pooled buffers sized in powers of two, so
// 12 bytes more would take buffers of 512 KiB.
const MaxPayload = 256<<10 - frameHeader

// frameHeader is the size of a yamux frame header.
const frameHeader = 12

// maxFrame is the largest frame, header included. Each frame travels as
// one WebSocket message, so the WebSocket buffers and read limit follow
// from it.
const maxFrame = frameHeader + MaxPayload

func (o MuxOptions) yamuxConfig(log *slog.Logger) *yamux.Config {
	o = o.withDefaults()
	return &yamux.Config{
		// Session.serve hands every stream on at once; a generous
		// backlog keeps a burst of opens from being reset unannounced.
		AcceptBacklog: 1024,
		PingBacklog:   32,
		// Session.watch keeps the tunnel alive instead: yamux's keepalive
		// closed a session whose one ping went unanswered, even while
		// data kept arriving, and on a slow link the answer waits behind
		// the peer's frames (seconds each). Here the timeout bounds only
		// how long a Ping waits for its answer before the next may go;
		// wsConn ignores the write deadlines yamux derives from it, which
		// cut a frame that a slow link takes long to send.
		EnableKeepAlive:        false,
		KeepAliveInterval:      o.KeepAliveInterval,
		ConnectionWriteTimeout: o.KeepAliveInterval,
		// yamux requires a positive interval; with every window granted
		// whole (below), nothing depends on the round trip it measures.
		MeasureRTTInterval: 30 * time.Second,
		// Session.serve refuses streams beyond MaxStreams with a reason;
		// yamux's own limit would reset them without one.
		MaxIncomingStreams: math.MaxUint32,
		// Each stream gets its whole window at once. yamux would start
		// at 256 KiB and grow the window with the measured round trip,
		// but one download at 20 ms RTT then reached 0.70 of a direct
		// one (0.84 from 4 MiB, 0.94 from 8 MiB, 0.99 from 16 MiB).
		InitialStreamWindowSize: uint32(min(int64(o.StreamWindow), math.MaxUint32)),
		MaxStreamWindowSize:     uint32(min(int64(o.StreamWindow), math.MaxUint32)),
		LogOutput:               &muxLog{log: log},
		// The WebSocket reader buffers already; a second buffer would
		// copy every byte once more.
		ReadBufSize:    0,
		MaxMessageSize: maxFrame,
	}
}

// muxLog passes yamux's log lines on to the session's logger at Info: most
// say why a session ended ("[ERR] yamux: keepalive failed: ..."), which
// the session's own "down" line does not. Those that only repeat the close
// message the peer sent go at Debug: the down line gives its reason.
//
// Its warnings come once per frame or stream ("[WARN] yamux: dropped ping
// reply", "... forcing stream reset"), as often as a peer likes to cause
// them, so at most one a second passes, with how many did not since.
type muxLog struct {
	log  *slog.Logger
	warn lograte.Limit
}

func (m *muxLog) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	// Drop the date and time yamux's log.Logger puts first.
	if i := strings.Index(msg, "["); i >= 0 {
		msg = msg[i:]
	}
	level := slog.LevelInfo
	if strings.Contains(msg, "websocket: close ") {
		level = slog.LevelDebug
	}
	var attrs []any
	if strings.HasPrefix(msg, "[WARN]") {
		ok, skipped := m.warn.Allow()
		if !ok {
			return len(p), nil
		}
		if skipped > 0 {
			attrs = append(attrs, "not_logged_since", skipped)
		}
	}
	m.log.Log(context.Background(), level, "multiplexer: "+msg, attrs...)
	return len(p), nil
}
