package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/west-tunnel/west/internal/lograte"
	"github.com/west-tunnel/west/internal/monotime"
	"github.com/west-tunnel/west/internal/sockio"
	"github.com/west-tunnel/west/internal/tunnel"
	"github.com/west-tunnel/west/internal/wire"
)

// UDPOptions configures a udp:// listener.
type UDPOptions struct {
	Name string // labels the listener in logs (its listen URL)
	Peer string // labels the tunnel peer in logs
	// PeerDialed says that Peer is a tunnel server this west dials (ea),
	// not a client that dials in (en), as HTTPOptions.PeerDialed.
	PeerDialed bool
	Target     string // host:port the far side sends each flow's datagrams to
	Dialer     Dialer // opens tunnel streams. Required.
	// Allow decides whether a client at addr may send; nil allows all.
	Allow func(addr netip.Addr) bool
	// IdleTimeout ends a flow that carried no datagram either way for
	// this long. Zero means 60s.
	IdleTimeout time.Duration
	// MaxFlows is how many flows may be open at once; a new client's
	// flow then ends the one idle longest. Zero means DefaultMaxFlows.
	MaxFlows int
	// Logger receives logs; nil discards them.
	Logger *slog.Logger
	// OnDialError, if set, is told why a flow's tunnel stream could not
	// be opened, for metrics.
	OnDialError func(err error)
	// OnDropped, if set, is told of the datagrams the listener dropped,
	// and why, for metrics. It is not called once Close has returned.
	OnDropped func(reason DropReason, datagrams int)
}

// DropReason says why datagrams of a UDP flow were dropped. The set is
// fixed, so that a metric labelled by it stays small.
type DropReason string

// Why a udp:// listener drops datagrams.
const (
	DropClientRefused   DropReason = "client_refused"   // the listener's access list refuses the client
	DropQueueFull       DropReason = "queue_full"       // the flow's queue, or the listener's, is full
	DropPeerDown        DropReason = "peer_down"        // no tunnel to the peer: the flow's stream could not be opened
	DropTargetForbidden DropReason = "target_forbidden" // the far side's dial policy refused the target, or the route is held after it did
	DropLoop            DropReason = "loop"             // the far side refused the flow's stream as going round a loop (wire.CodeLoop), or the route is held after it did
	DropStreamFailed    DropReason = "stream_failed"    // the flow's stream could not be opened otherwise, or failed with datagrams waiting
	DropEvicted         DropReason = "evicted"          // waiting on a flow ended to make room for a new client (MaxFlows)
	DropRerouted        DropReason = "rerouted"         // waiting on a flow ended by a Reroute, EndFlows or a draining tunnel
	DropReplyFailed     DropReason = "reply_failed"     // a reply the listener's socket could not send to its client
)

// Why the far side of a UDP flow drops datagrams (see pipeDatagrams).
const (
	DropTargetUnreachable DropReason = "target_unreachable" // the network reported one sent to the target undelivered (ICMP)
	DropSendFailed        DropReason = "send_failed"        // the far side's socket could not send it to the target
)

// UDP serves a udp:// listener. Each client address is a flow carried by
// one tunnel stream, its datagrams framed by wire.AppendDatagram, until it
// sits idle for IdleTimeout. As UDP does, it drops datagrams it cannot
// pass on at once rather than queue them without bound.
type UDP struct {
	route atomic.Pointer[udpRoute] // Reroute replaces it

	ctx    context.Context // ends every flow on Close
	cancel context.CancelFunc
	flowWG sync.WaitGroup

	failLog  lograte.Limit // of failed flows (see logDialFailure)
	readLog  lograte.Limit // of failed reads (see ServePacket)
	replyLog lograte.Limit // of replies the socket could not send (see logReplyLost)

	mu    sync.Mutex
	flows map[flowKey]*udpFlow
	pcs   []net.PacketConn

	// queued counts the bytes of the datagrams in every flow's queue,
	// which may not pass maxQueued (see enqueue).
	queued    atomic.Int64
	maxQueued int64

	// refusedHold is how long a route whose target the far side's dial
	// policy refused, or whose stream it refused as a loop, starts no
	// flow: refusedHoldTime, shorter in tests.
	refusedHold time.Duration
}

// flowKey names a flow: its client and, for a listener on every address,
// the control message that tells the address the client sent to. A
// client may send from one port to several of the host's addresses (ntpd
// sends from port 123 to each of its servers), and wants each answer from
// the address it asked.
type flowKey struct {
	client netip.AddrPort
	to     string
}

type udpFlow struct {
	out  chan []byte  // datagrams from the client, waiting for the stream
	last atomic.Int64 // monotime reading of the last datagram either way
	ctx  context.Context
	end  context.CancelFunc // ends the flow early, to make room for another
	// route is what the flow was started by: its target and peer.
	route *udpRoute
	// stream is the flow's tunnel stream, once open.
	stream atomic.Pointer[net.Conn]
	// why is the reason the flow ended for, which its datagrams still
	// queued are counted as dropped for; nil while it runs, and when the
	// listener's Close ended it.
	why atomic.Pointer[DropReason]
	// from, for a listener on every address, is the control message
	// that sends replies from the address the client sent to; a client
	// drops replies from any other. Nil: the socket's own address.
	from []byte
	// hops is the hop count of the flow's stream (see udpNextHops).
	hops uint8
}

// endFor ends the flow, if it has not ended for a reason already, for
// reason.
func (f *udpFlow) endFor(reason DropReason) {
	f.why.CompareAndSwap(nil, &reason)
	f.end()
}

// logEnded logs at debug, as its start, the end of a flow ended from
// outside; one made room for a new client is logged where it is ended.
func (f *udpFlow) logEnded(log *slog.Logger) {
	reason := "the listener closed"
	if why := f.why.Load(); why != nil {
		if *why == DropEvicted {
			return
		}
		reason = string(*why)
	}
	log.Debug("udp flow ended", "reason", reason)
}

// flowQueue is how many datagrams of one flow may wait for its stream.
const flowQueue = 256

// maxQueuedBytes bounds the bytes of the datagrams waiting for their
// streams across a listener's flows. Without it, clients sending large datagrams
// from many ports while the tunnel stalls (or while their streams open)
// could make a west hold flowQueue × 64 KiB for each of MaxFlows flows.
const maxQueuedBytes = 16 << 20

// DefaultMaxFlows bounds a UDP listener's flows, each a tunnel stream for
// at least IdleTimeout: clients that send one datagram from each of many
// ports, as DNS resolvers do, would otherwise take a tunnel's streams from
// every other listener on it.
const DefaultMaxFlows = 1024

// refusedHoldTime is how long a udp:// listener starts no flow for a route
// whose target the far side's dial policy (dial_allow) refused, dropping
// the datagrams of new clients as it does when the tunnel is down. The
// refusal is of the target, the same for every client of the route, and
// changes only with the far west's configuration; without the hold, each
// datagram after a refusal cost a tunnel stream opened, refused and
// closed, and a resolver that sends each query from a new port, one per
// query. 5 s makes that one stream per 5 s at most, and keeps an operator
// who widens dial_allow waiting no longer than a client's own retry (a
// DNS stub resolver's default timeout is 5 s) before the route works.
//
// A route whose stream the far side refused as a loop (wire.CodeLoop) is
// held alike: every flow of a route that leads back to itself goes round
// the loop, and each datagram that came to the end of it, as a new flow
// there, would cost a stream refused.
const refusedHoldTime = 5 * time.Second

// udpRoute is what a UDP listener's new flows are served by.
type udpRoute struct {
	opts UDPOptions
	log  *slog.Logger
	// held is when, a monotime reading, new flows may start again after
	// the far side refused the target by its dial policy, or as a loop,
	// and for which of the two: nil, or past, for none. A Reroute's new
	// route starts without it.
	held atomic.Pointer[routeHold]
}

// routeHold holds a route's new flows (see refusedHoldTime).
type routeHold struct {
	until int64      // monotime reading
	why   DropReason // DropTargetForbidden or DropLoop
}

func newUDPRoute(opts UDPOptions) *udpRoute {
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 60 * time.Second
	}
	if opts.MaxFlows <= 0 {
		opts.MaxFlows = DefaultMaxFlows
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &udpRoute{opts: opts, log: log.With("listener", opts.Name, "peer", opts.Peer)}
}

// NewUDP returns a UDP listener's server.
func NewUDP(opts UDPOptions) *UDP {
	ctx, cancel := context.WithCancel(context.Background())
	u := &UDP{ctx: ctx, cancel: cancel, flows: make(map[flowKey]*udpFlow), maxQueued: maxQueuedBytes,
		refusedHold: refusedHoldTime}
	u.route.Store(newUDPRoute(opts))
	return u
}

// Reroute serves the flows that start after by opts (a reload changed the
// listener's target, peer, access list or bound) on the same socket.
// Flows open stay on their streams, but for those whose client opts.Allow
// now refuses, those over the new bound, and, when the target or the peer
// changed, all: they end, and a client's next datagram starts a flow by
// opts. A UDP client that keeps sending would otherwise never leave the
// old target, as a TCP connection does when it closes.
func (u *UDP) Reroute(opts UDPOptions) {
	r := newUDPRoute(opts)
	u.route.Store(r)
	u.mu.Lock()
	defer u.mu.Unlock()
	for k, f := range u.flows {
		was := f.route.opts
		moved := was.Target != opts.Target || was.Peer != opts.Peer || was.PeerDialed != opts.PeerDialed
		if moved || opts.Allow != nil && !opts.Allow(k.client.Addr().Unmap()) {
			delete(u.flows, k)
			f.endFor(DropRerouted)
		}
	}
	for len(u.flows) > r.opts.MaxFlows {
		u.evictLocked(r)
	}
}

// EndFlows ends every flow open, as Reroute does when the peer changed: a
// client's next datagram starts a flow by the current route. A reload
// calls it when the tunnel client the listener dials through was
// replaced, though the peer it names stayed the same.
func (u *UDP) EndFlows() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for k, f := range u.flows {
		delete(u.flows, k)
		f.endFor(DropRerouted)
	}
}

// PeerDraining is told that a tunnel to peer (dialed: one this west
// dialled) drains, as HTTP.PeerDraining is. Once elsewhere reports that
// new streams to peer go through another tunnel (a retiring tunnel
// client's west has its new one up beside it), the flows whose streams go
// through a draining tunnel end, and a client's next datagram starts a
// flow on the other: a client that keeps sending would otherwise hold the
// draining tunnel for the whole of its west's shutdown_grace. It watches
// until done closes.
func (u *UDP) PeerDraining(peer string, dialed bool, done <-chan struct{}, elsewhere func() bool) {
	if o := u.route.Load().opts; peer != o.Peer || dialed != o.PeerDialed {
		return
	}
	go func() {
		tick := time.NewTicker(drainSweep)
		defer tick.Stop()
		for !elsewhere() {
			select {
			case <-tick.C:
			case <-done:
				return
			case <-u.ctx.Done():
				return
			}
		}
		u.mu.Lock()
		defer u.mu.Unlock()
		for k, f := range u.flows {
			p := f.stream.Load()
			if p == nil {
				continue
			}
			if d, ok := (*p).(interface{ PeerDraining() bool }); ok && d.PeerDraining() {
				delete(u.flows, k)
				f.endFor(DropRerouted)
			}
		}
	}()
}

// ServePacket reads datagrams from pc until it is closed, and returns
// net.ErrClosed then. After Close it closes pc and returns at once.
func (u *UDP) ServePacket(pc net.PacketConn) error {
	u.mu.Lock()
	if u.ctx.Err() != nil {
		// Closed before it began: Close could not close pc.
		u.mu.Unlock()
		pc.Close()
		return net.ErrClosed
	}
	u.pcs = append(u.pcs, pc)
	u.mu.Unlock()
	uc, _ := pc.(*net.UDPConn)
	var oob []byte
	if uc != nil && askDestination(uc) {
		oob = make([]byte, destinationBufSize)
	}
	buf := make([]byte, wire.MaxDatagram)
	var delay time.Duration
	for {
		var n, oobn int
		var from netip.AddrPort
		var err error
		if oob != nil {
			n, oobn, _, from, err = uc.ReadMsgUDPAddrPort(buf, oob)
		} else {
			var addr net.Addr
			n, addr, err = pc.ReadFrom(buf)
			if ua, ok := addr.(*net.UDPAddr); ok {
				from = ua.AddrPort()
			}
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) || u.ctx.Err() != nil {
				return net.ErrClosed
			}
			// Short of memory and the like: wait a little, as the accept
			// loops do, rather than spin on a read that fails at once.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			if ok, skipped := u.readLog.Allow(); ok {
				args := []any{"err", err, "retry_in", delay, "not_logged_since", skipped}
				if hint := sockio.LimitHint(err); hint != "" {
					args = append(args, "hint", hint)
				}
				u.route.Load().log.Warn("udp read failed", args...)
			}
			time.Sleep(delay)
			continue
		}
		delay = 0
		if !from.IsValid() {
			continue
		}
		u.flow(pc, from, oob[:oobn], buf[:n])
	}
}

// dropped counts n datagrams the listener dropped for reason, by r's
// OnDropped. Its callers hold mu, or are flows, which Close waits for, so
// that none is counted once Close has returned: the listener's series go
// then (see UDPOptions.OnDropped).
func (u *UDP) dropped(r *udpRoute, reason DropReason, n int) {
	if r.opts.OnDropped != nil && n > 0 {
		r.opts.OnDropped(reason, n)
	}
}

// enqueue queues a copy of d for f's stream, unless f's queue is full or
// the listener's queues hold maxQueued bytes: as UDP does, a datagram that
// cannot pass is dropped.
func (u *UDP) enqueue(f *udpFlow, d []byte) bool {
	n := int64(len(d))
	if !u.reserve(n) {
		return false
	}
	select {
	case f.out <- append([]byte(nil), d...):
	default:
		u.queued.Add(-n)
		return false
	}
	if f.ctx.Err() != nil {
		// The flow ended, and may have emptied its queue before d came.
		u.discardQueue(f, 0)
	}
	return true
}

// reserve counts n more bytes as queued if that keeps the count within
// maxQueued. It never passes the bound, even for a moment, so that what
// /metrics or a test reads of it is a count the listener allowed.
func (u *UDP) reserve(n int64) bool {
	for {
		q := u.queued.Load()
		if q+n > u.maxQueued {
			return false
		}
		if u.queued.CompareAndSwap(q, q+n) {
			return true
		}
	}
}

// discardQueue empties the queue of a flow that has ended. Both the flow
// and enqueue call it, so that no datagram stays counted in u.queued.
// What it empties, and unsent more datagrams the flow had taken from its
// queue, are counted as dropped for the reason the flow ended for; those
// of a flow the listener's Close ended are not, as the listener and its
// series go.
func (u *UDP) discardQueue(f *udpFlow, unsent int) {
	n := unsent
	defer func() {
		if why := f.why.Load(); why != nil {
			u.dropped(f.route, *why, n)
		}
	}()
	for {
		select {
		case d := <-f.out:
			u.queued.Add(-int64(len(d)))
			n++
		default:
			return
		}
	}
}

// flow queues d, which came from client from with oob (from a listener
// on every address, where it tells apart the client's flows to each of
// the host's addresses: see flowKey), on the client's flow, starting it
// when new, or drops it and counts it dropped. It queues under mu, as a
// flow idling out leaves the map (see runFlow): a datagram is then
// either queued before the flow decides to end, and carried, or finds it
// gone and starts a new one.
func (u *UDP) flow(pc net.PacketConn, from netip.AddrPort, oob, d []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.ctx.Err() != nil {
		return // closing: nothing more is counted
	}
	// The route is read under mu, so that a Reroute either sees this
	// flow in its sweep or has its Allow judge it here.
	r := u.route.Load()
	if r.opts.Allow != nil && !r.opts.Allow(from.Addr().Unmap()) {
		r.log.Debug("datagram from a client outside the access list dropped", "client", from)
		u.dropped(r, DropClientRefused, 1)
		return
	}
	if f := u.flows[flowKey{from, string(oob)}]; f != nil {
		u.enqueueOrDrop(r, f, from, d)
		return
	}
	if h := r.held.Load(); h != nil {
		if wait := -monotime.Since(h.until); wait > 0 {
			r.log.Debug("datagram dropped: the far side refused the route's stream; no flow starts until retry", "client", from,
				"why", h.why, "retry_in", wait.Round(time.Millisecond))
			u.dropped(r, h.why, 1)
			return
		}
	}
	for len(u.flows) >= r.opts.MaxFlows {
		u.evictLocked(r)
	}
	f := &udpFlow{out: make(chan []byte, flowQueue), route: r}
	f.ctx, f.end = context.WithCancel(u.ctx)
	if len(oob) > 0 {
		f.from = replyFrom(oob)
	}
	f.last.Store(monotime.Now())
	f.hops = udpNextHops(from)
	k := flowKey{from, string(oob)}
	u.flows[k] = f
	u.flowWG.Add(1)
	go u.runFlow(pc, k, f, r)
	u.enqueueOrDrop(r, f, from, d)
}

// enqueueOrDrop is enqueue, counting by route r a datagram it dropped.
// u.mu must be held.
func (u *UDP) enqueueOrDrop(r *udpRoute, f *udpFlow, from netip.AddrPort, d []byte) {
	if !u.enqueue(f, d) {
		r.log.Debug("datagram dropped: its flow's queue, or the listener's, is full", "client", from)
		u.dropped(r, DropQueueFull, 1)
	}
}

// logDialFailure logs a flow whose stream could not be opened, at most
// once a second per listener, with how many it left out since: while the
// peer is down each new client starts a flow, and clients that send from
// a new port each time (DNS) would fill the log. The metrics count each.
// held is how long the route starts no flow after it, if it does.
func (u *UDP) logDialFailure(log *slog.Logger, err error, held time.Duration) {
	ok, skipped := u.failLog.Allow()
	switch {
	case !ok:
	case held > 0 && rejectedWith(err, wire.CodeLoop):
		log.Warn("udp flow: the far side refused its stream as a loop: this listener's route leads back to it; new flows' datagrams are dropped until retry",
			"err", err, "retry_in", held, "not_logged_since", skipped)
	case held > 0:
		log.Info("udp flow: the far side's dial policy refuses the target; new flows' datagrams are dropped until retry",
			"err", err, "retry_in", held, "not_logged_since", skipped)
	default:
		log.Info("udp flow: tunnel stream failed; its datagrams are dropped", "err", err, "not_logged_since", skipped)
	}
}

// rejectedWith reports whether err is the far side's refusal of a
// stream with code: CodeForbidden (its dial policy refuses the target)
// and CodeLoop (the route leads back to itself) meet every flow of the
// route, not only this one.
func rejectedWith(err error, code wire.Code) bool {
	var reject *wire.RejectError
	return errors.As(err, &reject) && reject.Code == code
}

// logReplyLost logs a datagram from the tunnel that the listener's socket
// could not send to its client (too large for the client's network,
// EMSGSIZE; no route to it), at most once a second per listener with how
// many it left out since, as the far side logs those it cannot send to
// the target: a target that keeps answering too large would fill the log.
// The failure is the datagram's, so the flow goes on.
func (u *UDP) logReplyLost(log *slog.Logger, err error) {
	if ok, skipped := u.replyLog.Allow(); ok {
		log.Info("udp reply to the client lost; the flow goes on", "err", err, "not_logged_since", skipped)
	}
}

// evictLocked ends the flow idle longest, to make room for a new one.
// u.mu must be held.
func (u *UDP) evictLocked(r *udpRoute) {
	var oldest *udpFlow
	var key flowKey
	for k, f := range u.flows {
		if oldest == nil || f.last.Load() < oldest.last.Load() {
			oldest, key = f, k
		}
	}
	if oldest == nil {
		return
	}
	// Out of the map at once: the client's next datagram starts a flow.
	delete(u.flows, key)
	oldest.endFor(DropEvicted)
	r.log.Debug("udp flow ended to make room for a new client", "client", key.client,
		"idle", monotime.Since(oldest.last.Load()).Round(time.Millisecond), "max_flows", r.opts.MaxFlows)
}

// runFlow opens the flow's stream and carries datagrams both ways until
// the flow idles out, the stream ends, or the listener closes.
func (u *UDP) runFlow(pc net.PacketConn, k flowKey, f *udpFlow, r *udpRoute) {
	defer u.flowWG.Done()
	// lost is why the flow gives up on the datagrams still queued when it
	// ends of itself, and unsent how many it had taken from the queue
	// but could not send; a flow ended from outside has a reason of its
	// own (see endFor).
	var lost DropReason
	unsent := 0
	defer func() {
		// Before the queue is emptied: see enqueue.
		if lost != "" {
			f.endFor(lost)
		} else {
			f.end()
		}
		u.discardQueue(f, unsent)
	}()
	defer func() {
		u.mu.Lock()
		if u.flows[k] == f { // not a newer flow of the client's
			delete(u.flows, k)
		}
		u.mu.Unlock()
	}()
	from := k.client
	log := r.log.With("client", from)
	dctx, cancel := context.WithTimeout(f.ctx, 15*time.Second)
	stream, err := r.opts.Dialer.Dial(dctx, wire.Header{Kind: wire.KindUDP, Target: r.opts.Target, Hops: f.hops})
	cancel()
	if err != nil && f.ctx.Err() != nil {
		return // evicted, or the listener closed, while the stream opened
	}
	if err != nil {
		lost = dialDropReason(err)
		var held time.Duration
		if lost == DropTargetForbidden || lost == DropLoop {
			// Before the flow leaves the map (deferred above), so that
			// the client's next datagram finds the route held.
			held = u.refusedHold
			r.held.Store(&routeHold{until: monotime.Now() + int64(held), why: lost})
		}
		u.logDialFailure(log, err, held)
		if r.opts.OnDialError != nil {
			r.opts.OnDialError(err)
		}
		return
	}
	f.stream.Store(&stream)
	log.Debug("udp flow started")
	// A flow ended from outside (eviction, a reroute, Close) may be
	// blocked on a stream whose tunnel has stalled, in the tunnel's queue
	// or the multiplexer's; the frames that close the stream wait there
	// too, with no deadline, until the tunnel is found dead (dead_after).
	// A past deadline frees the flow at once, and the close goes on in
	// the background: a flow of datagrams has no tail worth waiting for.
	var dropOnce sync.Once
	drop := func() {
		dropOnce.Do(func() {
			stream.SetDeadline(time.Now())
			go stream.Close()
		})
	}
	defer context.AfterFunc(f.ctx, drop)()

	// Replies: stream to client.
	done := make(chan struct{})
	defer func() {
		drop()
		<-done
	}()
	go func() {
		defer close(done)
		to := net.UDPAddrFromAddrPort(from)
		uc, _ := pc.(*net.UDPConn)
		for {
			d, bp, err := readDatagram(stream)
			if err != nil {
				return
			}
			f.last.Store(monotime.Now())
			if f.from != nil && uc != nil {
				_, _, err = uc.WriteMsgUDPAddrPort(d, f.from, from)
			} else {
				_, err = pc.WriteTo(d, to)
			}
			putDatagramBuf(bp)
			if errors.Is(err, net.ErrClosed) {
				return // the listener's socket is gone: no reply can go
			}
			if err != nil {
				u.logReplyLost(log, err)
				u.dropped(r, DropReplyFailed, 1)
			}
		}
	}()

	idle := time.NewTimer(r.opts.IdleTimeout)
	defer idle.Stop()
	for {
		select {
		case d := <-f.out:
			u.queued.Add(-int64(len(d)))
			f.last.Store(monotime.Now())
			if err := writeDatagram(stream, d); err != nil {
				unsent = 1
				if f.ctx.Err() == nil { // not cut short by an end from outside
					log.Info("udp flow ended", "err", err)
					lost = DropStreamFailed
				}
				return
			}
		case <-idle.C:
			if quiet := monotime.Since(f.last.Load()); quiet < r.opts.IdleTimeout {
				idle.Reset(r.opts.IdleTimeout - quiet)
				continue
			}
			// A datagram may have been queued as the timer fired (select
			// picks either): the flow ends only with its queue empty, and
			// leaves the map under mu, where flow queues, so that none is
			// queued after and dropped with it.
			u.mu.Lock()
			if len(f.out) > 0 {
				u.mu.Unlock()
				idle.Reset(r.opts.IdleTimeout)
				continue
			}
			if u.flows[k] == f {
				delete(u.flows, k)
			}
			u.mu.Unlock()
			log.Debug("udp flow idle; ended")
			return
		case <-done:
			if f.ctx.Err() == nil { // the stream ended, not the flow
				lost = DropStreamFailed
				log.Debug("udp flow ended", "reason", "its tunnel stream ended")
				return
			}
			f.logEnded(log)
			return
		case <-f.ctx.Done():
			f.logEnded(log)
			return
		}
	}
}

// dialDropReason is why a flow whose stream could not be opened for err
// drops its datagrams.
func dialDropReason(err error) DropReason {
	switch {
	case rejectedWith(err, wire.CodeForbidden):
		return DropTargetForbidden
	case rejectedWith(err, wire.CodeLoop):
		return DropLoop
	case errors.Is(err, tunnel.ErrPeerDown):
		return DropPeerDown
	default:
		return DropStreamFailed
	}
}

// Shutdown stops reading datagrams and ends every flow. UDP has no
// requests in flight to wait for.
func (u *UDP) Shutdown(context.Context) error { return u.Close() }

// Close stops the listener and every flow, and waits for them.
func (u *UDP) Close() error {
	u.mu.Lock()
	u.cancel()
	for _, pc := range u.pcs {
		pc.Close()
	}
	u.mu.Unlock()
	u.flowWG.Wait()
	return nil
}

// smallDatagram is the buffer a UDP stream's reader waits for a
// datagram's body with: all that a datagram of an Ethernet MTU or less
// (DNS, WireGuard, QUIC, syslog: most of them) ever takes.
const smallDatagram = 2 << 10

var (
	smallDatagramBufs = sync.Pool{New: func() any { b := make([]byte, smallDatagram); return &b }}
	datagramBufs      = sync.Pool{New: func() any { b := make([]byte, wire.MaxDatagram); return &b }}
)

// readDatagram reads the next datagram of a UDP stream into a pooled
// buffer, which the caller gives back with putDatagramBuf. It takes none
// until the frame's length has come, so that a flow idle between
// datagrams holds none. A datagram of smallDatagram bytes or less is read
// into a buffer that size; a larger one waits for its first bytes there
// too, and only then moves to one of wire.MaxDatagram bytes. A peer that
// sends a frame's length and stalls thus makes the flow hold 2 KiB, and
// one that stalls within a larger body 64 KiB, rather than a copy buffer
// (256 KiB).
func readDatagram(stream net.Conn) (d []byte, bp *[]byte, err error) {
	size, err := wire.ReadDatagramSize(stream)
	if err != nil {
		return nil, nil, err
	}
	bp = smallDatagramBufs.Get().(*[]byte)
	if size <= smallDatagram {
		if d, err = wire.ReadDatagramBody(stream, (*bp)[:size]); err != nil {
			smallDatagramBufs.Put(bp)
			return nil, nil, err
		}
		return d, bp, nil
	}
	n, err := io.ReadAtLeast(stream, *bp, 1)
	if err != nil {
		smallDatagramBufs.Put(bp)
		if err == io.EOF {
			err = io.ErrUnexpectedEOF // the length came, the body did not
		}
		return nil, nil, err
	}
	large := datagramBufs.Get().(*[]byte)
	copy(*large, (*bp)[:n])
	smallDatagramBufs.Put(bp)
	if _, err := wire.ReadDatagramBody(stream, (*large)[n:size]); err != nil {
		datagramBufs.Put(large)
		return nil, nil, err
	}
	return (*large)[:size], large, nil
}

// putDatagramBuf gives back a buffer from readDatagram.
func putDatagramBuf(bp *[]byte) {
	if len(*bp) == smallDatagram {
		smallDatagramBufs.Put(bp)
	} else {
		datagramBufs.Put(bp)
	}
}

// writeDatagram writes d to a UDP stream as one frame, built in a buffer
// from copyBufs for the time of the write.
func writeDatagram(stream net.Conn, d []byte) error {
	bp := copyBufs.Get().(*[]byte)
	if _, err := stream.Write(wire.AppendDatagram((*bp)[:0], d)); err != nil {
		// The multiplexer may still send from it: it is not reused.
		return err
	}
	copyBufs.Put(bp)
	return nil
}

// pipeDatagrams carries a UDP stream's datagrams to and from conn, a
// connected UDP socket, until either ends or ctx does. A flow holds no
// buffer between datagrams: with a one-shot query per client port, as
// DNS clients make, thousands of flows wait out their idle time at once.
//
// A datagram the socket could not send, or one the network refused and
// reported back as an error of the next read (ICMP port unreachable: the
// target is down, or its port wrong), is told to lost, with
// DropSendFailed or DropTargetUnreachable, and the flow goes on, as the
// client's own socket would: the target may answer the next.
func pipeDatagrams(ctx context.Context, stream, conn net.Conn, act *activity, lost func(DropReason, error)) {
	stop := context.AfterFunc(ctx, func() { stream.Close(); conn.Close() })
	defer stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer stream.Close()
		var rc syscall.RawConn
		if canReadPooled {
			rc = rawConn(conn)
		}
		var bp *[]byte
		for {
			// The datagram is read two bytes into the buffer, where its
			// frame's length then goes in front of it.
			var n int
			var err error
			if rc != nil {
				n, err = readSocket(rc, &bp, 2)
			} else {
				if bp == nil {
					bp = copyBufs.Get().(*[]byte)
				}
				n, err = conn.Read((*bp)[2 : 2+wire.MaxDatagram])
			}
			if err != nil {
				if icmpReported(err) {
					// Reported once: the next read waits again.
					lost(DropTargetUnreachable, err)
					continue
				}
				if bp != nil {
					copyBufs.Put(bp)
				}
				return
			}
			act.last.Store(monotime.Now())
			frame := wire.AppendDatagram((*bp)[:0], (*bp)[2:2+n]) // moves the datagram onto itself
			if _, err := stream.Write(frame); err != nil {
				return // the multiplexer may still send from bp
			}
			if rc != nil {
				copyBufs.Put(bp)
				bp = nil
			}
		}
	}()
	for {
		d, bp, err := readDatagram(stream)
		if err != nil {
			break
		}
		act.last.Store(monotime.Now())
		if _, err := conn.Write(d); err != nil {
			lost(DropSendFailed, err) // too large, refused: UDP's way, but logged and counted
		}
		putDatagramBuf(bp)
	}
	conn.Close()
	<-done
	stream.Close()
}
