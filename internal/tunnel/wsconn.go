package tunnel

import (
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/west-tunnel/west/internal/monotime"
)

// wsWriteBufferSize is the WebSocket write buffer of a tunnel: one
// multiplexer frame and its WebSocket header fit, so each frame leaves in
// one message, one (masked, on the client) buffer and one write.
const wsWriteBufferSize = maxFrame + 64

// wsReadBufferSize is the WebSocket read buffer of a tunnel, which it
// keeps for life. Smaller than a full frame on purpose: the multiplexer
// reads a frame's payload in one call, and a read at least the buffer's
// size goes straight from the socket into the caller's memory, not
// through the buffer and a copy.
const wsReadBufferSize = 64 << 10

// wsWriteBuffers lends tunnels their WebSocket write buffers for one
// message at a time: an idle tunnel, or one that only receives, then holds
// none, where each would otherwise keep its own frame-sized buffer for life.
var wsWriteBuffers = &sync.Pool{}

// wsConn is a net.Conn over a WebSocket for the multiplexer. yamux writes
// each frame, header and payload, in one Write from its send loop, and
// reads from its receive loop only: one goroutine each way, as
// gorilla/websocket requires. Read runs the messages together, so how
// frames are split into messages does not matter to the reader.
//
// A frame goes out at once, as one message in one write, unless the send
// queue holds more data behind it: then the message stays open and the
// next frames join it, up to the queue's batchLimit, so that under many
// streams one write to the socket carries many frames where each cost
// its own. A frame that alone reaches the limit (bulk data) goes alone.
// wsConn sets no per-call timers; per message, the only allocations are
// gorilla's small handles.
type wsConn struct {
	ws   *websocket.Conn
	r    io.Reader  // the message being read, nil between messages
	sent *sendQueue // told of each frame written, and how fast; may be nil

	w  io.WriteCloser // the message being written, nil between messages
	wn int            // bytes in it so far

	peerClose atomic.Pointer[websocket.CloseError] // once the peer's close message came
	// closeSent is set once our close message has gone out; Close then
	// leaves the socket to the reader for a moment (see Close).
	closeSent atomic.Bool

	// heard is when bytes last arrived (a monotime reading), for
	// Session.watch.
	heard atomic.Int64
}

func (c *wsConn) Read(b []byte) (int, error) {
	for {
		if c.r == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				if c.endLinger(err) {
					return 0, io.EOF
				}
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				c.ws.Close()
				return 0, fmt.Errorf("%w: a text message on the tunnel, where only binary ones belong", errHandshake)
			}
			c.r = r
		}
		n, err := c.r.Read(b)
		if n > 0 {
			c.heard.Store(monotime.Now())
		}
		if err == io.EOF {
			c.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		// A close message may also come between the fragments of a
		// message the peer left open (Write's batching) and end it.
		if err != nil && c.endLinger(err) {
			err = io.EOF
		}
		return n, err
	}
}

// endLinger takes the error that ends reading: it keeps the peer's close
// message, if err is one (gorilla reports a connection lost without one
// as code 1006, which no peer may send), and, once our own close message
// has gone, closes the socket Close left open and reports true: reading
// then ended as planned, however it ended (the linger's deadline
// included), and yamux is told of a plain end of stream rather than log
// an error.
func (c *wsConn) endLinger(err error) bool {
	if ce, ok := err.(*websocket.CloseError); ok && ce.Code != websocket.CloseAbnormalClosure {
		c.peerClose.Store(ce)
	}
	if !c.closeSent.Load() {
		return false
	}
	c.ws.Close()
	return true
}

func (c *wsConn) Write(b []byte) (int, error) {
	if c.sent == nil {
		return c.write(b, false, 0)
	}
	c.sent.writing.Add(1)
	more := c.sent.sent(b)
	if !more {
		// Let ready goroutines run first: under load they are streams
		// about to hand over frames, which then join this message and
		// its write. With nothing ready this costs well under a
		// microsecond.
		runtime.Gosched()
		more = c.sent.more()
	}
	start := time.Now()
	n, err := c.write(b, more, c.sent.batchLimit())
	end := time.Now()
	c.sent.wrote(n, end.Sub(start))
	c.sent.lastWrite.Store(monotime.At(end))
	c.sent.writing.Add(-1)
	return n, err
}

// write sends frame b, leaving the message open if more frames follow
// and the message has room for them under limit.
func (c *wsConn) write(b []byte, more bool, limit int) (int, error) {
	if c.w != nil && c.wn+len(b) > limit {
		if err := c.endMessage(); err != nil {
			return 0, err
		}
	}
	if c.w == nil && (!more || len(b) >= limit) {
		if err := c.ws.WriteMessage(websocket.BinaryMessage, b); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	if c.w == nil {
		w, err := c.ws.NextWriter(websocket.BinaryMessage)
		if err != nil {
			return 0, err
		}
		c.w, c.wn = w, 0
	}
	if _, err := c.w.Write(b); err != nil {
		return 0, err
	}
	c.wn += len(b)
	if !more {
		if err := c.endMessage(); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}

// endMessage sends the open message.
func (c *wsConn) endMessage() error {
	w := c.w
	c.w = nil
	return w.Close()
}

// maxCloseReason is what a close message holds after its 2-byte code.
const maxCloseReason = 123

// sendClose tells the peer why the tunnel ends, in a close message. It
// waits briefly for a frame being written to finish, and not at all for an
// answer: the caller closes the connection next.
func (c *wsConn) sendClose(code int, reason string) {
	if len(reason) > maxCloseReason {
		reason = strings.ToValidUTF8(reason[:maxCloseReason], "")
	}
	if c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(closeLinger)) == nil {
		c.closeSent.Store(true)
	}
}

// closeLinger bounds how long a close message may take to write, and how
// long after it the socket stays open for the peer's answer.
const closeLinger = 250 * time.Millisecond

// peerClosed returns the peer's close message, or nil if none came.
func (c *wsConn) peerClosed() *websocket.CloseError { return c.peerClose.Load() }

// Close closes the connection. Without our close message sent, at once,
// with no WebSocket close handshake: the peer may be dead, and a live one
// learns of the close from the socket. After it, the socket stays open
// until the reader (yamux's receive loop, which Close's caller waits for)
// has read the peer's answering close message, or the end of the stream,
// or closeLinger has passed. Closed at once, it would reset the frames
// the peer had sent meanwhile, unread; a peer writing one then failed
// before it read our close message, and never learned why the tunnel
// ended.
func (c *wsConn) Close() error {
	if !c.closeSent.Load() {
		return c.ws.Close()
	}
	c.ws.SetReadDeadline(time.Now().Add(closeLinger))
	time.AfterFunc(2*closeLinger, func() { c.ws.Close() }) // if no reader is left
	return nil
}
func (c *wsConn) LocalAddr() net.Addr               { return c.ws.LocalAddr() }
func (c *wsConn) RemoteAddr() net.Addr              { return c.ws.RemoteAddr() }
func (c *wsConn) SetReadDeadline(t time.Time) error { return c.ws.SetReadDeadline(t) }

// SetWriteDeadline does nothing: its only caller, yamux, bounds every
// frame's write by a fixed time, which a live but slow link can exceed.
// A dead peer is found by Session.watch, whose Close ends a write stuck
// on it.
func (c *wsConn) SetWriteDeadline(time.Time) error { return nil }

func (c *wsConn) SetDeadline(t time.Time) error { return c.ws.SetReadDeadline(t) }
