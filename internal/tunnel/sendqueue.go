package tunnel

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-yamux/v5"

	"github.com/west-tunnel/west/internal/monotime"
)

// yamux copies each frame into one send queue shared by every stream, and
// lets a writer go on until 64 frames wait there: a download alone could
// queue 16 MiB, and any other stream's frames then waited behind all of
// it (two seconds at 8 MiB/s). So each stream may have only about
// queueDelay of the link's time waiting, measured from how fast the
// WebSocket takes frames, and its frames are no larger than that: on a
// slow link, small frames and a short wait behind each busy stream; on a
// fast one, full frames and a queue deep enough that the writer and the
// send loop seldom wait for each other (on loopback, a queue of one frame
// cost the sending west a fifth more CPU per GiB than yamux's own 64).
const (
	queueDelay = 5 * time.Millisecond
	minQueue   = 16 << 10        // the least a stream may queue, and its smallest frame
	maxQueue   = 32 * MaxPayload // the most a stream may queue
	// rateWindow is about how much writing time the rate is measured over.
	rateWindow = 50 * time.Millisecond
)

// maxBatch is the most bytes of frames one WebSocket message gathers
// (wsConn). A frame in a message waits for the frames that join it after
// it, so on a slow link a message gathers a quarter of what a stream may
// queue, about queueDelay/4 of the link's time: batching saves system
// calls, which matter where the link is fast.
const maxBatch = 64 << 10

// sendQueue follows, per stream, the bytes waiting in the session's send
// queue: streams add what they hand to yamux, and the WebSocket takes off
// each data frame as the send loop writes it, and measures how fast it
// writes.
type sendQueue struct {
	mu      sync.Mutex
	streams map[uint32]*queued

	// waiting is how many data bytes, of all streams, the multiplexer
	// holds to send: added once its Write returns, taken off as the frame
	// is written. Above zero, another data frame surely waits in its
	// queue, so the WebSocket may leave the message open for it (wsConn).
	// Below zero (a frame written before its Write returned) nothing is
	// known, and the message ends.
	waiting atomic.Int64
	// writing counts frames the WebSocket is writing now: one taken off
	// waiting may not have reached the connection yet. lastWrite is when
	// the last frame, data or control, was written (a monotime reading).
	writing   atomic.Int32
	lastWrite atomic.Int64

	// limit is how many bytes a stream may have queued, and its largest
	// frame when below MaxPayload.
	limit atomic.Int64
	// Bytes written and the time the writes took, halved as the time
	// passes rateWindow; only the send loop touches them.
	wroteBytes int64
	wroteTime  time.Duration
}

func newSendQueue() *sendQueue {
	q := &sendQueue{streams: make(map[uint32]*queued)}
	q.limit.Store(MaxPayload)
	return q
}

// queued is one stream's share of the send queue.
type queued struct {
	bytes atomic.Int64
	// drained is signalled when bytes falls to half the limit, so that a
	// writer at the limit wakes once per several frames, not for each. It
	// holds at most one signal: a writer that checks and then waits misses
	// none.
	drained chan struct{}
}

func (q *sendQueue) add(id uint32) *queued {
	sq := &queued{drained: make(chan struct{}, 1)}
	q.mu.Lock()
	q.streams[id] = sq
	q.mu.Unlock()
	return sq
}

func (q *sendQueue) remove(id uint32) {
	q.mu.Lock()
	delete(q.streams, id)
	q.mu.Unlock()
}

// write hands b to the multiplexer on st, noting what it took as
// waiting. Every data frame a session sends goes through here, or through
// Stream.Write which does the same: a byte taken off waiting that was
// never added only costs batching, but one added and never taken off
// would hold messages open for frames that do not come.
func (q *sendQueue) write(st *yamux.Stream, b []byte) (int, error) {
	n, err := st.Write(b)
	q.waiting.Add(int64(n))
	return n, err
}

// sent notes that the frame in b, header first, leaves the queue, and
// reports whether more data surely waits behind it.
func (q *sendQueue) sent(b []byte) (more bool) {
	// yamux's header: version, type, flags (2), stream ID (4), length (4);
	// the length of a data frame (type 0) is its payload's.
	if len(b) < frameHeader || b[1] != 0 {
		return q.more()
	}
	n := int64(binary.BigEndian.Uint32(b[8:12]))
	more = q.waiting.Add(-n) > 0
	if n == 0 {
		return more
	}
	q.mu.Lock()
	sq := q.streams[binary.BigEndian.Uint32(b[4:8])]
	q.mu.Unlock()
	if sq == nil {
		return more // not a tracked stream, or closed since
	}
	if sq.bytes.Add(-n) <= q.limit.Load()/2 {
		select {
		case sq.drained <- struct{}{}:
		default:
		}
	}
	return more
}

// more reports whether another data frame surely waits to be written.
func (q *sendQueue) more() bool { return q.waiting.Load() > 0 }

// settled reports whether every data frame handed to the multiplexer has
// been written to the connection, and no frame at all for quiet: the
// control frames that follow the data, such as a stream's end, are not
// counted, but yamux queues them behind it and writes them at once.
func (q *sendQueue) settled(now time.Time, quiet time.Duration) bool {
	return !q.more() && q.writing.Load() == 0 && monotime.At(now)-q.lastWrite.Load() >= int64(quiet)
}

// batchLimit is how many bytes of frames a message may gather now.
func (q *sendQueue) batchLimit() int { return int(min(q.limit.Load()/4, maxBatch)) }

// wrote notes that writing n bytes to the WebSocket took d, and sets the
// limit to queueDelay at the rate measured.
func (q *sendQueue) wrote(n int, d time.Duration) {
	q.wroteBytes += int64(n)
	q.wroteTime += d
	if q.wroteTime > rateWindow {
		q.wroteBytes /= 2
		q.wroteTime /= 2
	}
	if q.wroteTime <= 0 {
		return
	}
	// The first writes after a pause go into the kernel's buffers at
	// once and say nothing of the link: measured from them alone, a
	// bulk stream starting on a slow link was let queue megabytes
	// (seconds) before its first frame met the link. So, as TCP's window
	// grows by what was acknowledged, the limit grows by at most what
	// was written, and the queue by at most what the kernel and the
	// path hold anyway; it falls at once.
	limit := q.wroteBytes * int64(queueDelay) / int64(q.wroteTime)
	limit = min(limit, q.limit.Load()+int64(n))
	q.limit.Store(min(max(limit, minQueue), maxQueue))
}
