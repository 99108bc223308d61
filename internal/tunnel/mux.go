package tunnel

import (
	"errors"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-yamux/v5"
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
	// unacknowledged; it caps one stream's throughput at window/RTT. Each
	// stream starts at 256 KiB and grows towards it only while its reader
	// keeps up, so only busy streams use it. Zero means 16 MiB; less than
	// 256 KiB means 256 KiB.
	StreamWindow int
	// SessionWindow bounds how far the windows of all streams of a session
	// may grow beyond their first 256 KiB together; a stream that finds
	// it spent keeps the window it has. Zero means 64 MiB.
	SessionWindow int
	// MaxStreams is how many streams the peer may have open towards us at
	// once; beyond it new streams are refused as overloaded, so a flood of
	// opens cannot exhaust memory. Zero means no limit.
	MaxStreams int
}

// minStreamWindow is the window every yamux stream starts with; the
// protocol allows none smaller.
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
	if o.SessionWindow <= 0 {
		o.SessionWindow = 64 << 20
	}
	return o
}

// MaxPayload is the most bytes one multiplexer frame carries: a write of
// up to MaxPayload bytes with the window open leaves as one frame.
const MaxPayload = 64 << 10

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
		// yamux pings after KeepAliveInterval without receiving anything
		// and closes the session if the answer takes longer than
		// ConnectionWriteTimeout, so silence for KeepAliveTimeout in all
		// is fatal. The same timeout bounds one write to the WebSocket,
		// which only a dead or unreading peer makes that slow.
		EnableKeepAlive:        true,
		KeepAliveInterval:      o.KeepAliveInterval,
		ConnectionWriteTimeout: o.KeepAliveTimeout - o.KeepAliveInterval,
		// The RTT steers window growth; it is measured at the start and
		// then as often as yamux measures by default.
		MeasureRTTInterval: 30 * time.Second,
		// Session.serve refuses streams beyond MaxStreams with a reason;
		// yamux's own limit would reset them without one.
		MaxIncomingStreams:      math.MaxUint32,
		InitialStreamWindowSize: uint32(min(int64(o.StreamWindow), math.MaxUint32)),
		MaxStreamWindowSize:     uint32(min(int64(o.StreamWindow), math.MaxUint32)),
		LogOutput:               muxLog{log},
		// The WebSocket reader buffers already; a second buffer would
		// copy every byte once more.
		ReadBufSize:    0,
		MaxMessageSize: maxFrame,
	}
}

// windowBudget returns yamux's memory manager for one session: the first
// window of each stream is always granted (yamux closes the session when
// that fails), growth beyond it only while the session's streams together
// have grown by less than limit.
func windowBudget(limit int) func() (yamux.MemoryManager, error) {
	b := &budget{limit: limit}
	return func() (yamux.MemoryManager, error) { return &streamBudget{b: b}, nil }
}

type budget struct {
	mu    sync.Mutex
	limit int
	used  int
}

// streamBudget is one stream's share of its session's budget.
type streamBudget struct {
	b     *budget
	grown int // bytes of growth granted to this stream
}

var errWindowBudget = errors.New("session window budget spent")

// firstWindow is the priority yamux reserves a new stream's first window
// at; window growth comes lower.
const firstWindow = 255

func (s *streamBudget) ReserveMemory(size int, prio uint8) error {
	if prio >= firstWindow {
		return nil
	}
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	if s.b.used+size > s.b.limit {
		return errWindowBudget
	}
	s.b.used += size
	s.grown += size
	return nil
}

func (s *streamBudget) ReleaseMemory(size int) {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	s.release(size)
}

// Done returns the stream's growth to the session when the stream ends.
// yamux may call it twice; the second finds nothing left.
func (s *streamBudget) Done() {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	s.release(s.grown)
}

// release gives back up to size bytes of the stream's growth; s.b.mu is
// held.
func (s *streamBudget) release(size int) {
	size = min(size, s.grown)
	s.grown -= size
	s.b.used -= size
}

// muxLog passes yamux's log lines on to the session's logger at Info: most
// say why a session ended ("[ERR] yamux: keepalive failed: ..."), which
// the session's own "down" line does not.
type muxLog struct{ log *slog.Logger }

func (m muxLog) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	// Drop the date and time yamux's log.Logger puts first.
	if i := strings.Index(msg, "["); i >= 0 {
		msg = msg[i:]
	}
	m.log.Info("multiplexer: " + msg)
	return len(p), nil
}
