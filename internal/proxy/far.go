package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/west-tunnel/west/internal/acl"
	"github.com/west-tunnel/west/internal/lograte"
	"github.com/west-tunnel/west/internal/monotime"
	"github.com/west-tunnel/west/internal/sockio"
	"github.com/west-tunnel/west/internal/tunnel"
	"github.com/west-tunnel/west/internal/wire"
)

// Far is the far side of a tunnel: it serves streams a peer opens by
// dialling their target and piping bytes both ways.
type Far struct {
	// DialTimeout bounds the connection to a target. Zero means 10s.
	DialTimeout time.Duration
	// Targets is the dial policy: a target passes when a name rule admits
	// it as asked for, or an address rule admits the address actually
	// dialled (so a name cannot resolve its way past the policy). Nil
	// allows every target.
	// SetTargets replaces it for the streams that come after.
	Targets *acl.Targets
	policy  atomic.Pointer[acl.Targets] // set by SetTargets
	// Logger receives logs; nil discards them.
	Logger *slog.Logger
	// OnDialError, if set, is told of every failed dial, for metrics.
	OnDialError func(code wire.Code)
	// OnDatagramDropped, if set, is told of every datagram of a UDP flow
	// that did not reach its target, and why (DropSendFailed or
	// DropTargetUnreachable), for metrics.
	OnDatagramDropped func(reason DropReason)
	// Locals are this west's own listeners: a TCP or HTTP stream for one
	// of them is handed to it rather than dialled (see local.go).
	Locals *Locals

	// refusedLog limits the lines of streams that fail before they are
	// piped (see logRefused): a peer opens as many as it likes.
	refusedLog lograte.Limit
	// lostLog limits the lines of UDP datagrams the target refused or
	// the socket could not send (see datagramLost).
	lostLog lograte.Limit
	// loopLog limits the lines of streams refused as going round a loop
	// (see refuseLoop), apart from refusedLog, so that other refusals
	// cannot hide that a route leads back to itself.
	loopLog lograte.Limit

	mu      sync.Mutex
	streams map[*activity]struct{} // streams being served
	// drain is how a drain has left new streams: taken (zero), refused,
	// or held unanswered once the tunnels are about to close (see Wait).
	drain farDrain
	// holding mirrors drain == drainHold, for a check without the lock.
	holding atomic.Bool
}

type farDrain int

const (
	drainTake farDrain = iota
	drainRefuse
	drainHold
)

// SetTargets replaces the dial policy for the streams that come after;
// those connected already stay, as a TCP connection does when a firewall
// rule changes.
func (f *Far) SetTargets(t *acl.Targets) { f.policy.Store(t) }

// targets is the dial policy in force.
func (f *Far) targets() *acl.Targets {
	if t := f.policy.Load(); t != nil {
		return t
	}
	return f.Targets
}

// MaxHops is the hop count (wire.Header.Hops) at which the far side
// refuses a stream as going round a loop: it has been handed through that
// many wests' own listeners, each of which passed it on. A chain passes a
// stream through one or two middle wests (use cases 3 and 4), so 16 is far
// beyond any route meant to be; and it bounds what a loop costs before it
// is refused to 16 streams and listener connections, or, for UDP, 16 flows
// and far-side sockets held until they idle out, where the limit that
// ended it before was a tunnel's 8192 streams or a listener's max_conns.
const MaxHops = 16

// activity follows one served stream, so that a drain can tell a request
// in flight from a kept-alive HTTP connection that merely sits idle.
type activity struct {
	quietEnds bool         // HTTP or UDP: a drain may cut it once it is quiet
	last      atomic.Int64 // monotime reading of the last bytes either way
	awaiting  atomic.Bool  // the last bytes went to the target: a reply is due
	// session, for an HTTP stream, is the tunnel it came on: once its
	// opener has understood our drain notice (DrainNoticed), it closes
	// the stream itself when its exchange ends.
	session *tunnel.Session
}

// idleAfter is how long an HTTP stream must be quiet, its last reply
// delivered, before a drain may cut it when its opener cannot be told of
// the drain (an older west).
const idleAfter = 500 * time.Millisecond

func (a *activity) busy(now int64) bool {
	if !a.quietEnds || a.session != nil && a.session.DrainNoticed() {
		return true
	}
	return a.awaiting.Load() || now-a.last.Load() < int64(idleAfter)
}

// Wait waits until no stream is busy, or ctx ends: raw TCP streams until
// they end; HTTP streams until they end too when their opener has
// understood the drain notice (tunnel.Session.NoticeDrain), since it
// closes them as their exchanges end, and otherwise until they sit idle
// between requests; UDP flows until they sit idle.
//
// A draining west keeps its tunnels up, so streams still arrive. Far
// serves them until takeUntil or until no stream is busy, whichever comes
// first, so that a steady load cannot hold the drain for all of ctx's
// time and then see its requests cut; it refuses them after, as a west
// that is stopping. Once Wait has returned, the tunnels are about to
// close: new streams are held unanswered until they do, for the peer to
// answer as a tunnel that went down, since answering each would keep the
// tunnels busy against clients that retry at once.
func (f *Far) Wait(ctx context.Context, takeUntil time.Time) error {
	defer func() {
		f.mu.Lock()
		f.drain = drainHold
		f.holding.Store(true)
		f.mu.Unlock()
	}()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		f.mu.Lock()
		busy := f.busyLocked()
		if !busy || !time.Now().Before(takeUntil) {
			f.drain = max(f.drain, drainRefuse)
		}
		f.mu.Unlock()
		if !busy {
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// busyLocked reports whether a stream is busy. f.mu must be held.
func (f *Far) busyLocked() bool {
	now := monotime.Now()
	for a := range f.streams {
		if a.busy(now) {
			return true
		}
	}
	return false
}

// track counts a stream being served, unless a drain no longer takes new
// ones: then it says what to do instead.
func (f *Far) track(a *activity) (untrack func(), drain farDrain) {
	f.mu.Lock()
	if f.drain != drainTake {
		defer f.mu.Unlock()
		return nil, f.drain
	}
	if f.streams == nil {
		f.streams = make(map[*activity]struct{})
	}
	f.streams[a] = struct{}{}
	f.mu.Unlock()
	return func() {
		f.mu.Lock()
		delete(f.streams, a)
		f.mu.Unlock()
	}, drainTake
}

// trackedConn is a target connection that records its activity.
type trackedConn struct {
	net.Conn
	a *activity
}

func (c trackedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.observeRead(n)
	}
	return n, err
}

func (c trackedConn) observeRead(int) {
	c.a.awaiting.Store(false)
	c.a.last.Store(monotime.Now())
}

func (c trackedConn) Write(b []byte) (int, error) {
	if len(b) > 0 {
		c.a.awaiting.Store(true)
		c.a.last.Store(monotime.Now())
	}
	return c.Conn.Write(b)
}

func (c trackedConn) CloseWrite() error { return closeWrite(c.Conn) }

// closeWrite half-closes c when it can, and closes it when it cannot.
func closeWrite(c net.Conn) error {
	if cw, ok := c.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

var _ tunnel.StreamHandler = (*Far)(nil)

// ServeStream dials the stream's target and pipes until both sides close.
func (f *Far) ServeStream(ctx context.Context, req *tunnel.Request) {
	log := f.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("peer", req.Peer, "target", req.Header.Target, "kind", req.Header.Kind)
	timeout := f.DialTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	if f.holding.Load() {
		f.hold(ctx, req)
		return
	}
	if req.Header.Hops >= MaxHops {
		f.refuseLoop(req, log)
		return
	}
	if req.Header.Kind != wire.KindUDP {
		switch l, ap, stopped := f.Locals.Find(req.Header.Target); {
		case l != nil:
			// The listener drains what it is handed, as its own connections.
			f.serveLocal(ctx, req, l, ap, timeout, log)
			return
		case stopped:
			f.reject(req, wire.CodeOverloaded, "this west is stopping: its listener "+req.Header.Target+" is closed")
			return
		}
	}
	// HTTP streams may be cut by a drain between requests, UDP flows
	// between datagrams; raw TCP only when it ends.
	act := &activity{quietEnds: req.Header.Kind != wire.KindTCP}
	act.last.Store(monotime.Now())
	act.awaiting.Store(req.Header.Kind == wire.KindHTTP) // the request is on its way
	if req.Header.Kind == wire.KindHTTP {
		act.session = req.Session()
	}
	untrack, drain := f.track(act)
	switch drain {
	case drainRefuse:
		f.reject(req, wire.CodeOverloaded, "this west is stopping")
		return
	case drainHold:
		f.hold(ctx, req)
		return
	}
	defer untrack()
	host, portStr, err := net.SplitHostPort(req.Header.Target)
	port, perr := strconv.Atoi(portStr)
	targetOK := err == nil && perr == nil
	dialer := &net.Dialer{}
	if targets := f.targets(); !targets.Empty() {
		if !targetOK {
			f.logRefused(log, slog.LevelWarn, "stream refused: target is not host:port", nil)
			f.reject(req, wire.CodeForbidden, fmt.Sprintf("target %q is not host:port", req.Header.Target))
			return
		}
		if !targets.AllowName(host, port) {
			dialer.Control = func(_, address string, _ syscall.RawConn) error {
				if ap, err := netip.ParseAddrPort(address); err == nil && targets.AllowAddr(ap) {
					return nil
				}
				return fmt.Errorf("%w: %s", errPolicy, address)
			}
		}
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	network := "tcp"
	if req.Header.Kind == wire.KindUDP {
		network = "udp"
	}
	// A TCP dial to the port of one of this west's listeners may reach
	// it: such a listener, accepting a connection before the dial has
	// returned and marked it (below), waits for it (see dialMarkOf).
	// Each attempt is noted by the address it connects to, so that a
	// client's connection to a listener does not wait for a dial to
	// another host on the same port. Other dials, the common case, pay
	// no entry.
	var inFlight *selfDialAttempts
	if req.Header.Kind != wire.KindUDP && targetOK && f.Locals.hasPort(port) {
		inFlight = &selfDialAttempts{}
		policy := dialer.Control
		dialer.Control = func(network, address string, c syscall.RawConn) error {
			if policy != nil {
				if err := policy(network, address, c); err != nil {
					return err
				}
			}
			return inFlight.control(network, address, c)
		}
	}
	backend, err := dialer.DialContext(dctx, network, req.Header.Target)
	cancel()
	if err == nil && (req.Header.Kind == wire.KindUDP || inFlight != nil) {
		// Only such dials have a mark: an allocation the common one,
		// to a backend, need not pay.
		mark := &dialMark{http: req.Header.Kind == wire.KindHTTP, hops: req.Header.Hops}
		switch {
		case req.Header.Kind == wire.KindUDP:
			// Should the target be one of this west's udp://
			// listeners, the flow this socket starts there carries
			// the hop count on (see udpNextHops). Nothing has been
			// sent from it yet. The listeners' ports are not known
			// here, so every flow's socket has an entry: one per
			// flow, not per datagram.
			key := unmapped(backend.LocalAddr())
			udpDialled.Store(key, mark)
			defer udpDialled.CompareAndDelete(key, mark)
		case inFlight != nil:
			// Should it be one of this west's listeners (named by a
			// host name, or by an address of the host a wildcard
			// listener takes), the listener carries the hop count
			// on (see nextHops), and the HTTP it gets is a peer
			// west's listener's (see fromWest).
			key := connKey(backend.LocalAddr(), backend.RemoteAddr())
			selfDialled.Store(key, mark)
			defer selfDialled.CompareAndDelete(key, mark)
		}
	}
	inFlight.end()
	if err != nil {
		code := wire.CodeDialFailed
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			code = wire.CodeTimeout
		}
		if errors.Is(err, errPolicy) {
			code = wire.CodeForbidden
			err = fmt.Errorf("target %s is outside this west's dial policy (dial_allow)", req.Header.Target)
		}
		if hint := sockio.LimitHint(err); hint != "" {
			// This west is at a limit, not the target: the client may
			// try later (503), and the operator has a limit to raise.
			f.logRefused(log.With("hint", hint), slog.LevelWarn, "dial failed", err)
			f.reject(req, wire.CodeOverloaded, err.Error())
			return
		}
		f.logRefused(log, slog.LevelInfo, "dial failed", err)
		f.reject(req, code, err.Error())
		return
	}
	backend = sockio.Wrap(backend) // a UDP socket stays as it is
	stream, err := req.Accept()
	if err != nil {
		backend.Close()
		f.logRefused(log, slog.LevelInfo, "stream gone before reply", err)
		return
	}
	log.Debug("stream connected")
	switch req.Header.Kind {
	case wire.KindUDP:
		pipeDatagrams(ctx, stream, backend, act, func(why DropReason, err error) { f.datagramLost(log, why, err) })
	case wire.KindHTTP:
		Pipe(ctx, stream, trackedConn{backend, act})
	default:
		// A raw TCP stream is busy until it ends, whatever its traffic,
		// so its bytes need no watching.
		Pipe(ctx, stream, backend)
	}
}

// serveLocal hands the stream to l, one of this west's listeners, which
// a dial to ap would reach, under the same dial policy as a dial, and
// waits until l is done with it.
func (f *Far) serveLocal(ctx context.Context, req *tunnel.Request, l *LocalListener, ap netip.AddrPort, timeout time.Duration, log *slog.Logger) {
	host, _, _ := net.SplitHostPort(req.Header.Target)
	if t := f.targets(); !t.Empty() && !t.AllowName(host, int(ap.Port())) && !t.AllowAddr(ap) {
		f.logRefused(log, slog.LevelInfo, "dial failed", errors.New("outside the dial policy"))
		f.reject(req, wire.CodeForbidden, fmt.Sprintf("target %s is outside this west's dial policy (dial_allow)", req.Header.Target))
		return
	}
	// Answered once the listener takes it (an HTTP stream) or has
	// dialled on (a raw TCP one): see pendingStream. A listener at its
	// max_conns for the whole timeout refuses it, as a dial that timed
	// out, rather than accept and then close it.
	pending := newPendingStream(req)
	defer pending.refuse(errors.New("not served by this west's listener"))
	var stream net.Conn = pending
	log.Debug("stream handed to this west's own listener")
	if err := l.serve(ctx, stream, ap.Addr(), timeout, req.Header.Kind == wire.KindHTTP, req.Header.Hops); err != nil {
		// The peer sees its stream refused, if it was not answered yet,
		// or else end, as a connection closed at once.
		refuseConn(stream, err)
		f.logRefused(log, slog.LevelInfo, "own listener did not take the stream", err)
		if f.OnDialError != nil {
			code, _ := refusal(err)
			f.OnDialError(code)
		}
	}
}

// refuseLoop refuses req, whose hop count has reached MaxHops: a route
// leads back to itself, through this west's own listeners or a peer's.
func (f *Far) refuseLoop(req *tunnel.Request, log *slog.Logger) {
	// The code names the loop ("far side refused stream: loop: ..."),
	// but an older west in a chain is told it as a dial failure.
	reason := fmt.Sprintf("this stream has been handed through %d wests' own listeners: a route leads back to itself", req.Header.Hops)
	if ok, skipped := f.loopLog.Allow(); ok {
		log.Warn("stream refused: a route leads back to itself (loop)", "hops", req.Header.Hops, "max_hops", MaxHops,
			"not_logged_since", skipped)
	}
	f.reject(req, wire.CodeLoop, reason)
}

// hold leaves req unanswered until ctx ends (see Wait): with the session,
// when the answer cannot go, or before it, as a tunnel client's stops, when
// the peer is told that this west is stopping rather than see the stream
// unserved.
func (f *Far) hold(ctx context.Context, req *tunnel.Request) {
	<-ctx.Done()
	f.reject(req, wire.CodeOverloaded, "this west is stopping")
}

// logRefused logs a stream that failed before it was piped, at most once
// a second with a count of those held back; the metrics count them all.
func (f *Far) logRefused(log *slog.Logger, level slog.Level, msg string, err error) {
	ok, skipped := f.refusedLog.Allow()
	if !ok {
		return
	}
	args := []any{"not_logged_since", skipped}
	if err != nil {
		args = append(args, "err", err)
	}
	log.Log(context.Background(), level, msg, args...)
}

// datagramLost counts a datagram of a UDP flow that did not reach its
// target, and logs it at most once a second with a count of those held
// back: a client that keeps sending to a target that is down would fill
// the log.
func (f *Far) datagramLost(log *slog.Logger, why DropReason, err error) {
	if f.OnDatagramDropped != nil {
		f.OnDatagramDropped(why)
	}
	if ok, skipped := f.lostLog.Allow(); ok {
		log.Info("udp datagram to the target lost; the flow goes on", "err", err, "not_logged_since", skipped)
	}
}

// errPolicy marks a dial stopped by the dial policy.
var errPolicy = errors.New("address not allowed by dial policy")

func (f *Far) reject(req *tunnel.Request, code wire.Code, reason string) {
	if f.OnDialError != nil {
		f.OnDialError(code)
	}
	req.Reject(code, reason)
}

// closeWriter is a connection that can end its write direction alone.
type closeWriter interface {
	CloseWrite() error
}

// Pipe copies a to b and b to a until both directions end, passing each
// end-of-stream on as a half-close, then closes both. An error in either
// direction, or ctx ending, closes both at once. It returns the bytes
// copied each way.
func Pipe(ctx context.Context, a, b net.Conn) (aToB, bToA int64) {
	return pipe(ctx, a, b, false)
}

// pipe is Pipe. With abortB, an error or ctx ending aborts b, a tunnel
// stream, rather than closing it (see tunnel.Stream.Abort): a listener's
// client that reset, or was cut off, is gone, and the far side should let
// go of its target, not wait on it as after a half-close. The far side
// itself closes, so that what a target sent before it failed still
// reaches the client.
func pipe(ctx context.Context, a, b net.Conn, abortB bool) (aToB, bToA int64) {
	var once sync.Once
	end := func(failed, cut bool) {
		once.Do(func() {
			switch {
			case cut:
				// The connection is ended here (a stop's grace ran out,
				// a reload refuses the client, the tunnel closed): as
				// a lost tunnel, that resets both sides.
				resetConn(a)
				resetConn(b)
			case failed:
				// A tunnel lost under one side: the other's connection
				// is reset, not ended, so that its peer does not take
				// what it received for the whole.
				resetIfLost(a, b)
				resetIfLost(b, a)
				// A client that reset: the target is reset too, as it
				// would have been without the tunnel, rather than read
				// a clean end of an upload cut short.
				resetIfAborted(a, b)
				resetIfAborted(b, a)
			}
			a.Close()
			if ab, ok := b.(interface{ Abort() error }); ok && failed && abortB {
				ab.Abort()
			} else {
				b.Close()
			}
		})
	}
	fail := func() { end(true, false) }
	stop := context.AfterFunc(ctx, func() { end(true, true) })
	defer stop()

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		aToB = copyHalf(b, a, fail)
	}()
	bToA = copyHalf(a, b, fail)
	wg.Wait()
	end(false, false)
	return aToB, bToA
}

// resetIfLost makes c's Close a reset (SO_LINGER 0) when other is a
// tunnel stream whose tunnel has ended.
func resetIfLost(c, other net.Conn) {
	if st, ok := streamOf(other).(*tunnel.Stream); ok && st.Lost() {
		resetConn(c)
	}
}

// resetIfAborted makes c's Close a reset when it is a TCP connection and
// other a tunnel stream its peer aborted. Only a socket: a stream onward
// (the middle of a chain) is aborted by pipe itself (abortB).
func resetIfAborted(c, other net.Conn) {
	if st, ok := streamOf(other).(*tunnel.Stream); ok && st.Aborted() {
		if l, ok := streamOf(c).(interface{ SetLinger(int) error }); ok {
			l.SetLinger(0)
		}
	}
}

// resetConn makes c's Close a reset: a TCP connection's by SO_LINGER 0,
// a tunnel stream's by aborting it as lost (AbortLost).
func resetConn(c net.Conn) {
	switch l := streamOf(c).(type) {
	case interface{ SetLinger(int) error }:
		l.SetLinger(0)
	case *tunnel.Stream:
		// A stream handed to this west's listener (the middle of a
		// chain): the west before us resets its side in turn.
		l.AbortLost()
	}
}

// streamOf is innermost, looking through a raw TCP stream handed to a
// listener once it has been answered.
func streamOf(c net.Conn) net.Conn {
	c = innermost(c)
	if p, ok := c.(*pendingStream); ok && p.ready.Load() {
		return p.conn
	}
	return c
}

// copyHalf copies src to dst; at src's end it half-closes dst, and on an
// error it calls fail, which closes both sides so that the other
// direction ends too.
func copyHalf(dst, src net.Conn, fail func()) int64 {
	n, err := copyConn(dst, src)
	if err != nil {
		fail()
		return n
	}
	if cw, ok := dst.(closeWriter); ok {
		if cw.CloseWrite() == nil {
			return n
		}
	}
	fail()
	return n
}
