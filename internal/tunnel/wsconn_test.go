package tunnel

import (
	"bytes"
	"encoding/binary"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// muxFrame is a yamux frame of type typ on stream id carrying payload.
func muxFrame(typ byte, id uint32, payload []byte) []byte {
	return yamuxFrame(typ, 0, id, uint32(len(payload)), payload)
}

// yamuxFrame is a yamux frame: a header with the flags and length given
// (a window update's length is its increment), then payload.
func yamuxFrame(typ byte, flags uint16, id, length uint32, payload []byte) []byte {
	f := make([]byte, frameHeader, frameHeader+len(payload))
	f[1] = typ
	binary.BigEndian.PutUint16(f[2:4], flags)
	binary.BigEndian.PutUint32(f[4:8], id)
	binary.BigEndian.PutUint32(f[8:12], length)
	return append(f, payload...)
}

// The yamux frame types and flags the raw tests send.
const (
	frameData, frameWindowUpdate, framePing = 0, 1, 2
	flagSYN                                 = 1
)

// TestFramesShareMessagesWhileMoreWaits writes frames as the send loop
// would, with the queue's account of the data behind each, and reads the
// messages that arrive: a frame with nothing behind it is a message of
// its own, frames with data behind them share one, up to the queue's
// batch limit.
func TestFramesShareMessagesWhileMoreWaits(t *testing.T) {
	client, server := wsPair(t)
	q := newSendQueue()
	// The queue's limit follows the rate it measures writing; make it
	// that of a fast link, whatever loopback does meanwhile.
	linkRate := func(bytes int64) { q.wroteBytes, q.wroteTime = bytes, 40*time.Millisecond }
	linkRate(1 << 40)
	w := client.(*wsConn)
	w.sent = q
	r := server.(*wsConn).ws

	// As a Write of the multiplexer would: the payload is handed over,
	// and waits until the send loop writes its frame.
	hand := func(payloads ...[]byte) {
		for _, p := range payloads {
			q.waiting.Add(int64(len(p)))
		}
	}
	send := func(frames ...[]byte) {
		t.Helper()
		for _, f := range frames {
			if _, err := w.Write(f); err != nil {
				t.Fatalf("write frame: %v", err)
			}
		}
	}
	expect := func(want ...[]byte) {
		t.Helper()
		for i, f := range want {
			typ, m, err := r.NextReader()
			if err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
			got, err := io.ReadAll(m)
			if err != nil || typ != websocket.BinaryMessage {
				t.Fatalf("message %d: type %d, %v", i, typ, err)
			}
			if !bytes.Equal(got, f) {
				t.Fatalf("message %d: got %d bytes, want %d", i, len(got), len(f))
			}
		}
	}
	sized := func(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }
	small := func(b byte) []byte { return sized(b, 100) }

	// Alone: one frame, one message.
	a := small('a')
	hand(a)
	send(muxFrame(0, 1, a))
	expect(muxFrame(0, 1, a))

	// Three handed over before the send loop gets to them share a
	// message, and a window update (no data) between them joins it.
	b, c, d := small('b'), small('c'), small('d')
	hand(b, c, d)
	send(muxFrame(0, 1, b), muxFrame(0, 3, c), muxFrame(1, 5, nil), muxFrame(0, 1, d))
	expect(slices.Concat(muxFrame(0, 1, b), muxFrame(0, 3, c), muxFrame(1, 5, nil), muxFrame(0, 1, d)))

	// With nothing behind it, a window update goes alone too.
	send(muxFrame(1, 5, nil))
	expect(muxFrame(1, 5, nil))

	// A message gathers at most maxBatch bytes.
	e, f, g := sized('e', 30<<10), sized('f', 30<<10), sized('g', 30<<10)
	hand(e, f, g)
	send(muxFrame(0, 1, e), muxFrame(0, 1, f), muxFrame(0, 1, g))
	expect(slices.Concat(muxFrame(0, 1, e), muxFrame(0, 1, f)), muxFrame(0, 1, g))

	// A frame that fills a message alone (bulk data) goes alone, and the
	// frames before it go first.
	h, i, j := small('h'), sized('i', maxBatch), small('j')
	hand(h, i, j)
	send(muxFrame(0, 1, h), muxFrame(0, 3, i), muxFrame(0, 1, j))
	expect(muxFrame(0, 1, h), muxFrame(0, 3, i), muxFrame(0, 1, j))

	// On a slow link a stream may queue less, and a message gathers a
	// quarter of that, so that a frame in it does not wait long for the
	// frames after it.
	linkRate(1 << 10)
	k, l, m := sized('k', 1<<10), sized('l', 1<<10), sized('m', 3<<10)
	hand(k, l, m)
	send(muxFrame(0, 1, k), muxFrame(0, 3, l), muxFrame(0, 1, m))
	expect(slices.Concat(muxFrame(0, 1, k), muxFrame(0, 3, l)), muxFrame(0, 1, m))

	if n := q.waiting.Load(); n != 0 {
		t.Errorf("queue still counts %d bytes waiting, want 0", n)
	}
}
