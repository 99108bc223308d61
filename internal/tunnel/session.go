package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/libp2p/go-yamux/v5"

	"github.com/west-tunnel/west/internal/lograte"
	"github.com/west-tunnel/west/internal/monotime"
	"github.com/west-tunnel/west/internal/wire"
)

// StreamHandler serves the streams a peer opens. ServeStream must answer
// the request with Accept or Reject and may block for the stream's life.
type StreamHandler interface {
	ServeStream(ctx context.Context, req *Request)
}

// StreamHandlerFunc adapts a function to StreamHandler.
type StreamHandlerFunc func(ctx context.Context, req *Request)

func (f StreamHandlerFunc) ServeStream(ctx context.Context, req *Request) { f(ctx, req) }

// headerTimeout bounds how long an opened stream may take to send its
// header, and an opener waits for the reply beyond its own context.
const headerTimeout = 10 * time.Second

// Stats counts a session's traffic. All fields are updated atomically.
type Stats struct {
	BytesIn      atomic.Int64 // payload bytes received on streams
	BytesOut     atomic.Int64 // payload bytes sent on streams
	StreamsOpen  atomic.Int64 // streams now open, both directions
	StreamsTotal atomic.Int64 // streams opened since the session began
}

// Session is one live tunnel: a multiplexer over one WebSocket.
type Session struct {
	peer   string // the peer's name (server side) or the server URL (client side)
	dialed bool   // client side: this west dialed the tunnel
	remote string // the peer's network address
	since  time.Time
	mux    *yamux.Session
	conn   *wsConn    // under mux: the peer's close reason, and ours
	queue  *sendQueue // what each stream has waiting in mux's send queue
	log    *slog.Logger
	stats  Stats

	// instance is the client's InstanceHeader (server side), set once,
	// before the session is registered.
	instance instance

	// tookOver is when this session took its name from an older one
	// (server side), zero if it did not.
	tookOver time.Time
	// admitted is the handshake the server admitted the session by
	// (server side), for Recheck to judge again; set once, before the
	// session is registered.
	admitted *http.Request

	// overLimitLog and badHeaderLog limit the warnings a peer can cause
	// once per stream it opens to a line a second each.
	overLimitLog, badHeaderLog lograte.Limit

	handlers   sync.WaitGroup // ServeStream calls in flight
	serving    atomic.Int64   // streams the peer opened whose handler still runs
	maxStreams int64          // limit on serving; 0 means none
	// onOverloaded, set before serve, is told of each stream refused for
	// maxStreams.
	onOverloaded func()

	// Drain notices (see NoticeDrain). peerDraining is set once the peer
	// has told us it drains, drainNoticed once we have told the peer and
	// it understood; onPeerDraining, set before serve, is told of the
	// first.
	peerDraining   atomic.Bool
	drainNoticed   atomic.Bool
	onPeerDraining func(*Session)

	// peerHops says that the peer announced, in the handshake, that it
	// reads stream header version 2 (see HopsHeader): streams opened to it
	// carry their hop count. readsHops says that this side reads that
	// version (MuxOptions.NoHops is not set). Both are set once, before
	// the session serves or is used.
	peerHops, readsHops bool

	// dead says why watch closed the session as dead, once it has.
	dead atomic.Pointer[string]
}

func newSession(mux *yamux.Session, conn *wsConn, dialed bool, peer, remote string, maxStreams int, log *slog.Logger) *Session {
	return &Session{peer: peer, dialed: dialed, remote: remote, since: time.Now(), mux: mux, conn: conn, queue: conn.sent, maxStreams: int64(maxStreams), log: log}
}

// Peer is the peer's name on a server's session, the server URL on a
// client's.
func (s *Session) Peer() string { return s.peer }

// Dialed reports whether this west dialed the tunnel, as a tunnel client:
// then Peer is a server URL, else a client's name. The two can be spelled
// alike.
func (s *Session) Dialed() bool { return s.dialed }

// RemoteAddr is the peer's network address.
func (s *Session) RemoteAddr() string { return s.remote }

// Since is when the session was established.
func (s *Session) Since() time.Time { return s.since }

// Stats returns the session's live counters.
func (s *Session) Stats() *Stats { return &s.stats }

// Streams is how many streams the multiplexer holds: unlike
// Stats().StreamsOpen, it counts from the moment a peer's stream arrives,
// before a handler has taken it.
func (s *Session) Streams() int { return s.mux.NumStreams() }

// PeerHops reports whether the peer reads stream header version 2, so
// that the streams opened to it carry their hop count (wire.Header.Hops);
// otherwise they go as version 1, and reach it with a hop count of 0.
func (s *Session) PeerHops() bool { return s.peerHops }

// Done is closed when the session has ended.
func (s *Session) Done() <-chan struct{} { return s.mux.CloseChan() }

// WaitSent waits until the data this session's streams have written,
// and the frames that end them, have gone to the connection, the session
// ends, or ctx does. A drain calls it before closing a tunnel: yamux
// drops what still waits in its send queue when the session closes, and
// the peer drops what it has received on a stream whose end has not
// arrived; so the last replies were lost.
func (s *Session) WaitSent(ctx context.Context) error {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !s.queue.settled(time.Now(), sentQuiet) {
		select {
		case <-tick.C:
		case <-s.mux.CloseChan():
			return nil
		case <-ctx.Done():
			// A handler's ctx ends with its session: that is the
			// session's end, not ctx's.
			select {
			case <-s.mux.CloseChan():
				return nil
			default:
				return ctx.Err()
			}
		}
	}
	return nil
}

// sentQuiet is how long WaitSent wants no frame written before it takes
// the queue for empty.
const sentQuiet = 5 * time.Millisecond

// Close ends the session and every stream on it.
func (s *Session) Close() error { return s.mux.Close() }

// closeFor ends the session and first tells the peer why, in a WebSocket
// close message, so that its log says what happened rather than only
// that the tunnel went down.
func (s *Session) closeFor(code int, reason string) error {
	s.conn.sendClose(code, reason)
	return s.mux.Close()
}

// silent is how long the session had heard nothing from its peer at now.
func (s *Session) silent(now time.Time) time.Duration {
	return time.Duration(monotime.At(now) - s.conn.heard.Load())
}

// Close codes a west sends in the close message of a tunnel it ends.
const (
	closeStopping = websocket.CloseGoingAway // its west stops, or no longer has the tunnel in its config
	closeReplaced = 4000                     // a newer tunnel took the peer's name
	closeRevoked  = 4001                     // a reload's wsts.ca or wsts.tokens no longer admit the peer
)

// suspended reads how long the machine has slept: monotime.Suspended,
// or suspendedHook, set by tests only to put it to sleep.
func suspended() time.Duration {
	if hook := suspendedHook.Load(); hook != nil {
		return (*hook)()
	}
	return monotime.Suspended()
}

var suspendedHook atomic.Pointer[func() time.Duration]

// minSleep is the least growth of suspended that watch takes for a sleep
// rather than the drift between its two clocks' reads.
const minSleep = 100 * time.Millisecond

// peerClosed returns the code and reason of the peer's close message, or
// 0 and "" if none came.
func (s *Session) peerClosed() (code int, reason string) {
	if ce := s.conn.peerClosed(); ce != nil {
		return ce.Code, ce.Text
	}
	return 0, ""
}

// watch keeps the session alive until it ends. A side that has heard
// nothing for interval, or sent nothing, pings the peer; a session that
// has heard nothing at all for timeout is closed as dead. Any bytes
// count, not only a ping's answer: on a busy slow link the answer waits
// behind the data, for longer than a frame takes, while the side that
// only receives the data pings on the idle direction, so the sender
// hears it. A ping gives up on its answer after interval (yamux's
// ConnectionWriteTimeout), so the next one goes out on time.
// heard and sent are monotime readings.
//
// A peer that has stopped reading, but goes on sending, is closed too,
// once a write to it has waited for timeout and its TCP has acknowledged
// nothing more for timeout (see sendStall): it holds the send loop in
// that write, and every frame behind it waits, the acknowledgements of
// the streams the peer opens among them, so that those streams pile up
// in the multiplexer's backlog, beyond max_streams.
//
// A watch that wakes an interval or more after its time has itself been
// stopped (SIGSTOP, a paused VM), and the session's reader with it: what
// the peer sent meanwhile waits unread in the socket, so the silence is
// this west's, not the peer's. It gives the reader an interval to read
// it, and the peer its ping's answer, before it judges the peer silent.
//
// A machine that sleeps (a laptop's lid closed) stops the monotonic clock,
// and the watch with it, so the silence it measures leaves the sleep out.
// Seen on waking (monotime.Suspended), the sleep counts as silence, and
// the peer is pinged at once and judged as after a stop: a tunnel silent
// for timeout, the sleep counted, whose peer does not answer within
// interval is closed then, rather than timeout after waking, and its
// client redials. One whose peer answers stays up, however long the
// sleep: a peer whose dead_after is longer than this west's has kept
// it (and one that gave it up resets it, ending it at once).
func (s *Session) watch(heard, sent *atomic.Int64, interval, timeout time.Duration) {
	t := time.NewTimer(interval)
	defer t.Stop()
	wake := monotime.Now() + int64(interval) // when t is due
	judge := int64(math.MinInt64 / 2)        // no dead tunnel before then
	pinging := make(chan struct{}, 1)        // holds a token while a ping waits
	pinged := int64(math.MinInt64 / 2)       // when the last ping started: never
	var stall sendStall
	suspendedAt := suspended()       // the machine's sleep so far
	var asleep time.Duration         // its sleep seen since the peer was last heard
	woke := int64(math.MinInt64 / 2) // when that sleep was seen
	for {
		select {
		case <-t.C:
		case <-s.mux.CloseChan():
			return
		}
		now := monotime.Now()
		if now-wake >= int64(interval) {
			judge = now + int64(interval)
		}
		last := heard.Load()
		if last >= woke {
			asleep = 0 // heard since: the peer kept the tunnel
		}
		if sleep := suspended(); sleep-suspendedAt >= minSleep {
			asleep += sleep - suspendedAt
			suspendedAt, woke = sleep, now
			judge = now + int64(interval)
		}
		if quiet := time.Duration(now-last) + asleep; quiet >= timeout && now >= judge {
			why := fmt.Sprintf("peer silent for %s; closed as dead", quiet.Round(time.Millisecond))
			if asleep > 0 {
				s.log.Warn("tunnel silent after this machine slept, its peer not answering on waking; closed as dead",
					"silent", quiet.Round(time.Millisecond), "asleep", asleep.Round(time.Millisecond))
				why = fmt.Sprintf("peer silent for %s, %s of it while this machine slept; closed as dead",
					quiet.Round(time.Millisecond), asleep.Round(time.Millisecond))
			} else {
				s.log.Warn("tunnel silent; closed as dead", "silent", quiet.Round(time.Millisecond))
			}
			s.dead.Store(&why)
			s.mux.Close()
			return
		}
		if stalled := stall.check(s, now, timeout); stalled >= timeout {
			s.log.Warn("tunnel peer takes no data; closed as dead", "stalled", stalled.Round(time.Millisecond))
			why := fmt.Sprintf("peer took no data for %s; closed as dead", stalled.Round(time.Millisecond))
			s.dead.Store(&why)
			s.mux.Close()
			return
		}
		// A ping is due an interval after the last thing heard or the
		// last thing sent, whichever is older, and after the last ping;
		// at once on waking from a sleep.
		due := max(min(last, sent.Load()), pinged) + int64(interval)
		if now >= due || woke == now {
			select {
			case pinging <- struct{}{}:
				pinged = now
				go func() {
					s.mux.Ping()
					<-pinging
				}()
			default:
			}
			due = now + int64(interval)
		}
		next := min(max(last+int64(timeout-asleep), judge), due)
		t.Reset(time.Duration(next - now))
		wake = next
	}
}

// sendStall follows a write to the peer that does not end, for watch.
type sendStall struct {
	acked uint64 // the peer's TCP acknowledgements, as last read
	since int64  // when acked was read first at that count; 0: no stall
}

// check returns for how long the peer's TCP has acknowledged nothing
// while a write to it has waited for at least timeout: on a slow link
// the acknowledgements go on growing, where a peer that stopped reading
// has filled its receive window. It returns 0 where the count cannot be
// read.
func (st *sendStall) check(s *Session, now int64, timeout time.Duration) time.Duration {
	q := s.queue
	if q.writing.Load() == 0 || time.Duration(now-q.lastWrite.Load()) < timeout {
		st.since = 0
		return 0
	}
	acked, ok := ackedBytes(s.conn.ws.NetConn())
	if !ok {
		return 0
	}
	if st.since == 0 || acked != st.acked {
		st.acked, st.since = acked, now
	}
	return time.Duration(now - st.since)
}

// Open opens a stream to the peer, asks it to connect to h.Target, and
// returns the stream once the peer has connected. A refusal is a
// *wire.RejectError. ctx bounds the open and the wait for the reply only.
func (s *Session) Open(ctx context.Context, h wire.Header) (net.Conn, error) {
	st, err := s.open(ctx, h)
	if err != nil {
		return nil, err
	}
	return s.track(st), nil
}

// NoticeDrain tells the peer that this west has begun to drain, so that
// it stops keeping HTTP streams through us idle for reuse and closes each
// once its exchange ends: the drain can then wait for every HTTP stream
// to end, where without the notice it cannot tell a response paused
// between two events from a connection idle between requests. It returns
// once the peer has answered. A peer that does not know the notice (an
// older west) refuses it as a bad header, and DrainNoticed stays false.
func (s *Session) NoticeDrain(ctx context.Context) error {
	st, err := s.open(ctx, wire.Header{Kind: wire.KindDrain})
	if err != nil {
		return fmt.Errorf("drain notice: %w", err)
	}
	abandon(st) // answered; the close need not hold the drain
	s.drainNoticed.Store(true)
	return nil
}

// DrainNoticed reports whether the peer has understood NoticeDrain.
func (s *Session) DrainNoticed() bool { return s.drainNoticed.Load() }

// PeerDraining reports whether the peer has told us that it drains.
func (s *Session) PeerDraining() bool { return s.peerDraining.Load() }

// open opens a stream with header h and waits for the peer's reply.
func (s *Session) open(ctx context.Context, h wire.Header) (*yamux.Stream, error) {
	version := wire.Version
	if s.peerHops {
		version = wire.VersionHops
	}
	hdr, err := h.AppendBinary(make([]byte, 0, 5+len(h.Target)), version)
	if err != nil {
		return nil, err
	}
	st, err := s.mux.OpenStream(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("open stream to %s: %w", s.peer, ctx.Err())
		}
		return nil, fmt.Errorf("open stream to %s: %w: %v", s.peer, ErrPeerDown, err)
	}
	// The reply wait is bounded by ctx and by headerTimeout beyond the far
	// side's own dial timeout, so a peer that never answers cannot hang us.
	st.SetDeadline(time.Now().Add(2 * headerTimeout))
	stop := context.AfterFunc(ctx, func() { st.SetDeadline(time.Now()) })
	defer stop()
	if _, err := s.queue.write(st, hdr); err != nil {
		// A peer that refuses before reading the header (overloaded)
		// resets the stream after its reply, which may come before our
		// header goes: its reason is the better answer. The deadline
		// above still bounds the read.
		rerr := wire.ReadReply(st)
		abandon(st)
		var re *wire.RejectError
		if errors.As(rerr, &re) {
			return nil, fmt.Errorf("stream to %s via %s: %w", h.Target, s.peer, rerr)
		}
		return nil, fmt.Errorf("send stream header to %s: %w", s.peer, ctxErr(ctx, err))
	}
	if err := wire.ReadReply(st); err != nil {
		abandon(st)
		var re *wire.RejectError
		if ctx.Err() == nil && !errors.As(err, &re) && s.mux.IsClosed() {
			// The tunnel ended before the peer took the stream (it
			// stopped, or the link broke): the peer reads a stream's
			// first bytes only after it has answered, so nothing
			// reached the target but perhaps a connection.
			return nil, fmt.Errorf("stream to %s via %s: %w: the tunnel ended before the peer took the stream: %v", h.Target, s.peer, ErrPeerDown, err)
		}
		return nil, fmt.Errorf("stream to %s via %s: %w", h.Target, s.peer, ctxErr(ctx, err))
	}
	if !stop() {
		abandon(st)
		return nil, fmt.Errorf("stream to %s via %s: %w", h.Target, s.peer, ctx.Err())
	}
	st.SetDeadline(time.Time{})
	return st, nil
}

// ctxErr prefers the context's error, which says why a deadline fired.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// serve accepts the peer's streams until the session ends.
func (s *Session) serve(ctx context.Context, h StreamHandler) {
	// Handlers end with the session, not only with ctx: one waiting on a
	// quiet backend (its stream half-closed by the opener) would hold
	// serve past the session's end, and with it the client's redial and
	// the server's Close.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.mux.CloseChan():
			cancel()
		case <-ctx.Done():
		}
	}()
	defer s.handlers.Wait()
	stop := context.AfterFunc(ctx, func() {
		if !s.mux.IsClosed() {
			s.closeFor(closeStopping, "stopped by its west (shutdown, or reload)")
		}
	})
	defer stop()
	for {
		st, err := s.mux.AcceptStream()
		if err != nil {
			return
		}
		if s.maxStreams > 0 && s.serving.Load() >= s.maxStreams {
			s.refuseOverloaded(st)
			continue
		}
		s.serving.Add(1)
		s.handlers.Add(1)
		go s.serveStream(ctx, st, h)
	}
}

// refuseOverloaded answers a stream beyond MaxStreams without reading its
// header; the opener reads the reply after sending the header anyway.
func (s *Session) refuseOverloaded(st *yamux.Stream) {
	if s.onOverloaded != nil {
		s.onOverloaded()
	}
	if ok, skipped := s.overLimitLog.Allow(); ok {
		s.log.Warn("stream refused: too many open streams", "limit", s.maxStreams, "not_logged_since", skipped)
	}
	st.SetWriteDeadline(time.Now().Add(time.Second))
	s.queue.write(st, wire.Reply{Code: wire.CodeOverloaded, Reason: fmt.Sprintf("peer has %d streams open, the limit", s.maxStreams)}.AppendBinary(nil))
	abandon(st) // not in the accept loop: the close may wait on a full queue
}

func (s *Session) serveStream(ctx context.Context, st *yamux.Stream, h StreamHandler) {
	defer s.handlers.Done()
	// A stream counts against MaxStreams while its handler runs, which for
	// the far side is the stream's whole life.
	defer s.serving.Add(-1)
	st.SetReadDeadline(time.Now().Add(headerTimeout))
	maxVersion := wire.Version
	if s.readsHops {
		maxVersion = wire.VersionHops
	}
	hdr, err := wire.ReadHeader(st, maxVersion)
	if err != nil {
		if ok, skipped := s.badHeaderLog.Allow(); ok {
			s.log.Warn("bad stream header", "err", err, "not_logged_since", skipped)
		}
		if errors.Is(err, wire.ErrMalformed) {
			st.SetWriteDeadline(time.Now().Add(headerTimeout))
			s.queue.write(st, wire.Reply{Code: wire.CodeBadHeader, Reason: err.Error()}.AppendBinary(nil))
		}
		closeStream(st)
		return
	}
	st.SetReadDeadline(time.Time{})
	if hdr.Kind == wire.KindDrain {
		s.peerDrains(st)
		return
	}
	req := &Request{Peer: s.peer, RemoteAddr: s.remote, Header: hdr, session: s, stream: st}
	h.ServeStream(ctx, req)
	if !req.answered {
		req.Reject(wire.CodeDialFailed, "stream not served")
	}
}

// peerDrains takes the peer's notice that it drains. The hook runs before
// the answer, so that by the time the peer reads it our idle streams to it
// are closing.
func (s *Session) peerDrains(st *yamux.Stream) {
	if s.peerDraining.CompareAndSwap(false, true) {
		s.log.Info("peer draining: HTTP streams to it close as their exchanges end")
		if s.onPeerDraining != nil {
			s.onPeerDraining(s)
		}
	}
	st.SetWriteDeadline(time.Now().Add(headerTimeout))
	s.queue.write(st, wire.Reply{Code: wire.CodeOK}.AppendBinary(nil))
	closeStream(st)
}

func (s *Session) track(st *yamux.Stream) *Stream {
	s.stats.StreamsOpen.Add(1)
	s.stats.StreamsTotal.Add(1)
	return &Stream{st: st, stats: &s.stats, queue: s.queue, queued: s.queue.add(st.StreamID()),
		sessionDone: s.mux.CloseChan(), closing: make(chan struct{}), peerDraining: &s.peerDraining}
}

// Request is a stream the peer opened, waiting for an answer.
type Request struct {
	Peer       string // the peer's name (or the server URL on a client)
	RemoteAddr string // the peer's network address
	Header     wire.Header

	session  *Session
	stream   *yamux.Stream
	answered bool
}

// Accept tells the peer the target is connected and returns the stream.
func (r *Request) Accept() (net.Conn, error) {
	r.answered = true
	r.stream.SetWriteDeadline(time.Now().Add(headerTimeout))
	if _, err := r.session.queue.write(r.stream, wire.Reply{Code: wire.CodeOK}.AppendBinary(nil)); err != nil {
		closeStream(r.stream)
		return nil, fmt.Errorf("send stream reply: %w", err)
	}
	r.stream.SetWriteDeadline(time.Time{})
	return r.session.track(r.stream), nil
}

// Reject tells the peer why its stream is refused and closes the stream.
// A peer that predates wire.CodeLoop (it does not read header version 2)
// is told wire.CodeDialFailed instead, with the same reason: a loop's
// refusal passed back along a chain may reach one.
func (r *Request) Reject(code wire.Code, reason string) {
	if code == wire.CodeLoop && !r.session.peerHops {
		code = wire.CodeDialFailed
	}
	r.answered = true
	r.stream.SetWriteDeadline(time.Now().Add(headerTimeout))
	r.session.queue.write(r.stream, wire.Reply{Code: code, Reason: reason}.AppendBinary(nil))
	closeStream(r.stream)
}

// Stream is an open stream: a net.Conn whose CloseWrite sends end-of-stream
// to the peer while reads go on, and whose traffic is counted. It wraps the
// yamux stream rather than embedding it so that no promoted method can
// bypass the counting or close only one direction.
type Stream struct {
	st    *yamux.Stream
	stats *Stats

	queue       *sendQueue
	queued      *queued         // this stream's bytes in the send queue
	sessionDone <-chan struct{} // closed when the session ends
	closing     chan struct{}   // closed by Close
	closed      atomic.Bool
	// writeDeadline is the write deadline as a monotime reading, 0 for none;
	// yamux has its own copy, this one bounds the wait for the queue.
	writeDeadline atomic.Int64
	peerDraining  *atomic.Bool // the session's
	// cutFurther is set once the peer aborted the stream with
	// lostCode: a tunnel further along a chain was lost under it.
	cutFurther atomic.Bool
	// aborted is set once a read or write finds the stream aborted by
	// the peer with abortCode or lostCode (see Aborted).
	aborted atomic.Bool
}

// lostCode is the code of a reset (AbortLost) that tells the peer the
// stream was cut by a tunnel lost further along a chain, so that it
// resets its own side as it does for a tunnel of its own lost.
const lostCode uint32 = 0x4c4f5354 // "LOST"

// abortCode is the code of a reset (Abort) that tells the peer the
// stream failed rather than closed: the reset Close sends after its
// end-of-stream has code 0, and an older west's Abort too.
const abortCode uint32 = 0x41425254 // "ABRT"

// noteReset records a reset by the peer with abortCode or lostCode.
func (s *Stream) noteReset(err error) {
	var se *yamux.StreamError
	if err == nil || !errors.As(err, &se) || !se.Remote {
		return
	}
	switch se.ErrorCode {
	case lostCode:
		s.cutFurther.Store(true)
		s.aborted.Store(true)
	case abortCode:
		s.aborted.Store(true)
	}
}

// Aborted reports whether a read or write found the stream aborted by the
// peer (Abort, AbortLost) rather than closed: its listener's client
// reset, or the stream was cut.
func (s *Stream) Aborted() bool { return s.aborted.Load() }

var _ interface {
	net.Conn
	CloseWrite() error
} = (*Stream)(nil)

func (s *Stream) Read(b []byte) (int, error) {
	n, err := s.st.Read(b)
	s.stats.BytesIn.Add(int64(n))
	s.noteReset(err)
	return n, err
}

// Quiet reports, without waiting or consuming anything, whether nothing
// waits to be read: no bytes, no end-of-stream, no reset. A stream kept
// idle between HTTP requests that is not quiet has been sent something
// unasked for, which the next request would take for its answer. It
// clears any read deadline.
func (s *Stream) Quiet() bool {
	s.st.SetReadDeadline(aLongTimeAgo)
	// yamux's Read of an empty slice returns at once when bytes or the
	// end are waiting, and consumes nothing.
	_, err := s.st.Read(nil)
	s.st.SetReadDeadline(time.Time{})
	return errors.Is(err, yamux.ErrTimeout)
}

// Lost reports whether the tunnel under the stream has ended, or one
// further along a chain has (the peer aborted it with AbortLost): a
// stream that fails then was cut, and its end says nothing of the far
// side's.
func (s *Stream) Lost() bool {
	if s.cutFurther.Load() {
		return true
	}
	select {
	case <-s.sessionDone:
		return true
	default:
		return false
	}
}

// PeerDraining reports whether the peer at the far end has told us that
// it drains: a stream kept for reuse should be closed instead.
func (s *Stream) PeerDraining() bool { return s.peerDraining.Load() }

// Session returns the session a request came on.
func (r *Request) Session() *Session { return r.session }

// aLongTimeAgo is a deadline that has passed.
var aLongTimeAgo = time.Unix(1, 0)

// Write hands b to the multiplexer a frame at a time, each once this
// stream has less than its limit waiting to be sent (see sendQueue).
func (s *Stream) Write(b []byte) (int, error) {
	total := 0
	for len(b) > 0 {
		if err := s.waitQueue(); err != nil {
			return total, err
		}
		chunk := b[:min(int64(len(b)), MaxPayload, s.queue.limit.Load())]
		s.queued.bytes.Add(int64(len(chunk)))
		n, err := s.queue.write(s.st, chunk)
		if n < len(chunk) {
			s.queued.bytes.Add(int64(n - len(chunk)))
		}
		total += n
		s.stats.BytesOut.Add(int64(n))
		if err != nil {
			s.noteReset(err)
			return total, err
		}
		b = b[len(chunk):]
	}
	return total, nil
}

// waitQueue waits until the stream has less than its limit in the send
// queue, the write deadline passes, or the stream or session closes.
func (s *Stream) waitQueue() error {
	for s.queued.bytes.Load() >= s.queue.limit.Load() {
		var timeout <-chan time.Time
		var timer *time.Timer
		if d := s.writeDeadline.Load(); d != 0 {
			wait := time.Duration(d - monotime.Now())
			if wait <= 0 {
				return os.ErrDeadlineExceeded
			}
			timer = time.NewTimer(wait)
			timeout = timer.C
		}
		var err error
		select {
		case <-s.queued.drained:
		case <-timeout:
		case <-s.closing:
			err = net.ErrClosed
		case <-s.sessionDone:
			err = yamux.ErrSessionShutdown
		}
		if timer != nil {
			timer.Stop()
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// WriteTo copies the stream to w until the peer's end-of-stream. It takes
// a pooled buffer only once bytes have arrived and returns it after each
// write, so an idle stream waiting in WriteTo holds no copy buffer.
func (s *Stream) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		// yamux's Read of an empty slice waits until bytes, end-of-stream
		// or an error arrive, and consumes nothing.
		if _, err := s.st.Read(nil); err != nil {
			s.noteReset(err)
			return total, eofIsEnd(err)
		}
		bp := frameBufs.Get().(*[]byte)
		n, rerr := s.st.Read(*bp)
		var werr error
		if n > 0 {
			var nw int
			nw, werr = w.Write((*bp)[:n])
			total += int64(nw)
			s.stats.BytesIn.Add(int64(nw))
			if werr == nil && nw != n {
				werr = io.ErrShortWrite
			}
		}
		frameBufs.Put(bp)
		if werr != nil {
			return total, werr
		}
		if rerr != nil {
			s.noteReset(rerr)
			return total, eofIsEnd(rerr)
		}
	}
}

// eofIsEnd turns the end-of-stream into a copy's success.
func eofIsEnd(err error) error {
	if err == io.EOF {
		return nil
	}
	return err
}

// ReadFrom copies r into the stream in full multiplexer frames; io.Copy's
// own 32 KiB buffer would send every frame half full.
func (s *Stream) ReadFrom(r io.Reader) (int64, error) {
	bp := frameBufs.Get().(*[]byte)
	buf := *bp
	var total int64
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			nw, werr := s.Write(buf[:n])
			total += int64(nw)
			if werr != nil {
				// A multiplexer may still be sending from buf after a
				// failed write (smux did; go-yamux copies each frame,
				// but does not promise to), so buf is not given back.
				return total, werr
			}
		}
		if rerr != nil {
			frameBufs.Put(bp)
			if rerr == io.EOF {
				return total, nil
			}
			return total, rerr
		}
	}
}

// frameBufs hold one frame's payload: a stream's reads return at most one
// frame's bytes, and a write of this size leaves as one frame.
var frameBufs = sync.Pool{New: func() any { b := make([]byte, MaxPayload); return &b }}

// CloseWrite sends end-of-stream; the peer's reads return io.EOF while this
// side can still read the peer's reply.
func (s *Stream) CloseWrite() error { return s.st.CloseWrite() }

// Close closes both directions.
func (s *Stream) Close() error {
	s.forget()
	return closeStream(s.st)
}

// Abort ends the stream with a reset and no end-of-stream before it, as a
// TCP reset ends a connection: the peer's reads fail rather than end, so
// that it closes its own side at once rather than take it for a
// half-close and wait on its target, which it resets (Aborted). What the
// peer has not read yet is lost. Once the stream's end-of-stream has
// gone, it is Close.
func (s *Stream) Abort() error {
	s.forget()
	return s.st.ResetWithError(abortCode)
}

// AbortLost is Abort, telling the peer that a tunnel further along a
// chain was lost under the stream: its Lost then reports true, and it
// resets its own side rather than end it.
func (s *Stream) AbortLost() error {
	s.forget()
	return s.st.ResetWithError(lostCode)
}

// forget counts the stream closed, the first time it is called.
func (s *Stream) forget() {
	if s.closed.CompareAndSwap(false, true) {
		s.stats.StreamsOpen.Add(-1)
		s.queue.remove(s.st.StreamID())
		close(s.closing)
	}
}

// abandon closes st without waiting: over a stalled tunnel the frames
// that close it wait in the multiplexer's queue, with no deadline, until
// the session ends. For streams whose close nobody needs to wait for: a
// failed open, which must return within its context, an answered drain
// notice, a refusal.
func abandon(st *yamux.Stream) { go closeStream(st) }

// closeStream closes both directions of st. The end-of-stream goes first,
// so the peer still reads everything written before it. If the peer has
// not ended its own direction, a reset follows: it arrives after the
// end-of-stream, so it cannot cut the peer's reads short, but it fails the
// peer's writes, which would otherwise fill the window of a stream nobody
// reads and then block for good. (yamux's own Close stops our reads
// without telling the peer.) Once both directions have ended, Reset does
// nothing.
func closeStream(st *yamux.Stream) error {
	err := st.CloseWrite()
	st.Reset()
	return err
}

func (s *Stream) LocalAddr() net.Addr               { return s.st.LocalAddr() }
func (s *Stream) RemoteAddr() net.Addr              { return s.st.RemoteAddr() }
func (s *Stream) SetReadDeadline(t time.Time) error { return s.st.SetReadDeadline(t) }

func (s *Stream) SetDeadline(t time.Time) error {
	s.setWriteDeadline(t)
	return s.st.SetDeadline(t)
}

func (s *Stream) SetWriteDeadline(t time.Time) error {
	s.setWriteDeadline(t)
	return s.st.SetWriteDeadline(t)
}

// setWriteDeadline keeps t for waitQueue and wakes a wait in it to see t.
func (s *Stream) setWriteDeadline(t time.Time) {
	var d int64
	if !t.IsZero() {
		d = monotime.At(t)
	}
	s.writeDeadline.Store(d)
	select {
	case s.queued.drained <- struct{}{}:
	default:
	}
}
