package proxy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/west-tunnel/west/internal/tunnel"
	"github.com/west-tunnel/west/internal/wire"
)

// A stream whose target is one of this west's own listeners (the middle
// west of a chain, use cases 3 and 4) is handed to that listener as if it
// had connected, instead of leaving through a loopback connection to
// ourselves: no second socket, no copying between the stream and it, and
// none of the system calls a connection costs per read and write. The
// listener serves it exactly as it serves a connection from that address:
// its access lists, its limit on connections, its logs.

// Locals is the set of this west's listeners that streams can be handed to.
type Locals struct {
	mu  sync.RWMutex
	lns map[*LocalListener]struct{}
	// stopped holds the addresses of the listeners open when the west
	// began to stop (Stop).
	stopped []netip.AddrPort
}

// Stop notes that the west is stopping. Its listeners close at once, and
// its tunnels stay up while what they carry drains, so its peers may
// still send streams for those listeners: Find tells them, for the far
// side to refuse them as the west's ("stopping", 503), rather than dial
// the closed address and pass on the kernel's "connection refused"
// (502).
func (s *Locals) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for l := range s.lns {
		s.stopped = append(s.stopped, l.bound)
	}
}

// Find returns the open listener a connection to target (an IP literal
// and port) would reach, or nil: one bound to that address, or to the
// wildcard address of its family with target a loopback address. Names
// are left to a real dial, which resolves them. With the listener it
// returns the address a dial would have connected to. Without one,
// stopped says that target is the address of a listener that was open
// when the west began to stop (see Stop).
func (s *Locals) Find(target string) (l *LocalListener, ap netip.AddrPort, stopped bool) {
	ap, err := netip.ParseAddrPort(target)
	if s == nil || err != nil {
		return nil, netip.AddrPort{}, false
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	takes := func(bound netip.AddrPort) bool { return bound.Port() == ap.Port() && reaches(bound.Addr(), ap.Addr()) }
	s.mu.RLock()
	defer s.mu.RUnlock()
	for l := range s.lns {
		if takes(l.bound) {
			return l, ap, false
		}
	}
	return nil, netip.AddrPort{}, slices.ContainsFunc(s.stopped, takes)
}

// hasPort reports whether one of the listeners is bound to port: only
// then may a TCP connection dialled to that port be one of theirs.
func (s *Locals) hasPort(port int) bool {
	if s == nil {
		return false
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for l := range s.lns {
		if int(l.bound.Port()) == port {
			return true
		}
	}
	return false
}

// reaches tells whether a listener bound to bound takes a connection to ip.
func reaches(bound, ip netip.Addr) bool {
	switch {
	case bound == ip:
		return true
	case !bound.IsUnspecified() || !ip.IsLoopback():
		return false
	case bound.Is6():
		return true // "[::]" takes IPv4 too, as Go listens dual-stack
	default:
		return ip.Is4()
	}
}

// LocalListener is a listener that also accepts the streams handed to it.
type LocalListener struct {
	net.Listener
	bound   netip.AddrPort
	set     *Locals
	handed  chan net.Conn
	sockets chan accepted // from the socket, through acceptLoop
	done    chan struct{}
	start   sync.Once
	close   sync.Once
}

type accepted struct {
	conn net.Conn
	err  error
}

// NewLocalListener wraps ln so that streams for its address can be handed
// to it, and adds it to set until it is closed. A listener whose address
// is not an IP and port is returned as it is.
func NewLocalListener(ln net.Listener, set *Locals) net.Listener {
	bound, err := netip.ParseAddrPort(ln.Addr().String())
	if err != nil {
		return ln
	}
	l := &LocalListener{
		Listener: ln,
		bound:    netip.AddrPortFrom(bound.Addr().Unmap(), bound.Port()),
		set:      set,
		handed:   make(chan net.Conn),
		sockets:  make(chan accepted),
		done:     make(chan struct{}),
	}
	set.mu.Lock()
	if set.lns == nil {
		set.lns = make(map[*LocalListener]struct{})
	}
	set.lns[l] = struct{}{}
	set.mu.Unlock()
	return l
}

// Accept returns the next connection from the socket or stream handed over.
func (l *LocalListener) Accept() (net.Conn, error) {
	l.start.Do(func() { go l.acceptLoop() })
	select {
	case c := <-l.handed:
		return c, nil
	case a := <-l.sockets:
		return a.conn, a.err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// acceptLoop accepts from the socket, so that Accept can wait for a
// socket and a handed stream at once.
func (l *LocalListener) acceptLoop() {
	for {
		c, err := l.Listener.Accept()
		select {
		case l.sockets <- accepted{c, err}:
		case <-l.done:
			if c != nil {
				c.Close()
			}
			return
		}
		//lint:ignore SA1019 as net/http's own accept loop: a temporary error is followed by more
		if ne, ok := err.(net.Error); err != nil && (!ok || !ne.Temporary()) {
			return
		}
	}
}

// Close stops the listener; streams handed to it later are refused.
func (l *LocalListener) Close() error {
	l.close.Do(func() {
		close(l.done)
		l.set.mu.Lock()
		delete(l.set.lns, l)
		l.set.mu.Unlock()
	})
	return l.Listener.Close()
}

// serve hands stream to the listener as a connection from from and waits
// until the listener is done with it or ctx ends. fromWest says the
// stream carries HTTP from a west's listener (see fromWest); hops is its
// hop count (see nextHops). It fails,
// without closing stream, if the listener is closed or does not accept
// within timeout (its limit on connections is reached).
func (l *LocalListener) serve(ctx context.Context, stream net.Conn, from netip.Addr, timeout time.Duration, fromWest bool, hops uint8) error {
	c := &localConn{Conn: stream, done: make(chan struct{}), fromWest: fromWest, hops: hops,
		local:  net.TCPAddrFromAddrPort(l.bound),
		remote: net.TCPAddrFromAddrPort(netip.AddrPortFrom(from, 0))}
	wait := time.NewTimer(timeout)
	defer wait.Stop()
	select {
	case l.handed <- c:
	case <-l.done:
		return net.ErrClosed
	case <-wait.C:
		return errLocalBusy
	case <-ctx.Done():
		return ctx.Err()
	}
	// Taken, an HTTP stream not yet answered may still wait for a slot:
	// an http:// listener at max_conns holds one client while it closes
	// an idle connection for it, and all may be busy. Not served within
	// the timeout, it is refused as one not taken would be. (A raw one is
	// answered once the listener has dialled on, which has its own
	// timeout and failure to tell.)
	if p, ok := stream.(*pendingStream); ok && fromWest {
		select {
		case <-p.answered:
		case <-wait.C:
			if p.refuse(errLocalBusy) {
				c.Close()
				return errLocalBusy
			}
		case <-ctx.Done():
			c.Close()
			return nil
		}
	}
	select {
	case <-c.done:
	case <-ctx.Done():
		c.Close()
	}
	return nil
}

// errLocalBusy is a listener at its limit of connections for the whole
// of a dial's timeout.
var errLocalBusy = errors.New("listener busy: not accepted within the dial timeout")

// localConn is a stream handed to a listener, with the addresses a
// connection from the west itself would have had.
type localConn struct {
	net.Conn
	local, remote net.Addr
	fromWest      bool  // HTTP from a west's listener (see fromWest)
	hops          uint8 // the stream's hop count (see nextHops)
	once          sync.Once
	done          chan struct{}
}

// fromWest reports whether c is a stream of HTTP that a west's listener
// sent through a tunnel to this west's own listener: the middle of a
// chain. Its X-Forwarded headers are that listener's, naming the client
// that reached it, so they pass on rather than name a west.
func fromWest(c net.Conn) bool {
	switch cc := c.(type) {
	case *handedConn:
		return fromWest(cc.Conn)
	case *limitConn:
		return fromWest(cc.Conn)
	case *localConn:
		return cc.fromWest
	case nil:
		return false
	}
	// A connection this west's far side dialled for an HTTP stream, to a
	// listener it could not tell for its own (named by a host name, or by
	// an address of the host a wildcard listener takes): the stream's
	// HTTP, as if it had been handed over.
	// Not waiting for a dial under way (see dialMarkOf): its callers
	// ask once the client has sent something, which the far side does
	// only after its dial has returned, or, as ConnContext, in net/http's
	// accept loop, which must not wait.
	m := dialMarkOf(c, false)
	return m != nil && m.http
}

// nextHops is the hop count (wire.Header.Hops) of the stream a tcp://
// listener opens for c, a connection it accepted: 0 for a client's, and
// one more than the stream's for a stream this west's far side handed to
// it, or for a connection the far side dialled for a stream (see
// selfDialled). A stream that goes round a loop of routes through wests'
// own listeners thus counts its turns, and a far side refuses it at
// MaxHops.
func nextHops(c net.Conn) uint8 {
	for {
		switch cc := c.(type) {
		case *handedConn:
			c = cc.Conn
			continue
		case *limitConn:
			c = cc.Conn
			continue
		case *localConn:
			return addHop(cc.hops)
		case nil:
			return 0
		}
		if m := dialMarkOf(c, true); m != nil {
			return addHop(m.hops)
		}
		return 0
	}
}

// dialMarkOf returns the mark of c, a connection a listener accepted,
// if this west's far side dialled it for a stream (see selfDialled). The
// far side marks a connection once its dial returns, which may be after
// the listener has accepted it: with wait, a connection from this host
// (its two ends on one address, or both on loopback), to the address of
// a dial still under way, waits for that dial before it is judged. A tcp://
// listener opens its stream onward as soon as it accepts, so it waits.
func dialMarkOf(c net.Conn, wait bool) *dialMark {
	key := connKey(c.RemoteAddr(), c.LocalAddr())
	if m, ok := selfDialled.Load(key); ok {
		return m.(*dialMark)
	}
	from, to := key[0].Addr(), key[1].Addr()
	if !wait || !from.IsValid() || from != to && !(from.IsLoopback() && to.IsLoopback()) || !selfDials.wait(key[1]) {
		return nil
	}
	if m, ok := selfDialled.Load(key); ok {
		return m.(*dialMark)
	}
	return nil
}

// udpNextHops is nextHops for a udp:// listener's new flow from client
// from: one more than the stream's, when from is the socket this west's
// far side sends a flow's datagrams from (see udpDialled).
func udpNextHops(from netip.AddrPort) uint8 {
	if m, ok := udpDialled.Load(netip.AddrPortFrom(from.Addr().Unmap(), from.Port())); ok {
		return addHop(m.(*dialMark).hops)
	}
	return 0
}

// addHop is h and one more hop, kept within a byte: a far side refuses
// the stream long before (MaxHops).
func addHop(h uint8) uint8 { return h + min(1, 255-h) }

// dialMark is what the far side notes of a socket it dialled for a
// stream, for this west's listeners to find should it reach one of them.
type dialMark struct {
	http bool  // it carries an HTTP stream (see fromWest)
	hops uint8 // the stream's hop count (see nextHops)
}

// selfDialled holds the TCP connections the far side of this process
// dialled towards the port of one of its listeners (see Locals.hasPort),
// while they are open, by their connKey as the dialling side sees them
// (local, remote): a listener that accepts one sees it reversed. Both
// ends are in the key, so that another socket from the same address and
// port, to another destination, is not taken for one. The value is the
// *dialMark, removed only by its own dial.
var selfDialled sync.Map

// selfDials are the far side's TCP dials to the port of one of this
// west's listeners that are under way, by the address each attempt
// connects to (see dialMarkOf).
var selfDials selfDialSet

// selfDialSet is a set of dials under way, by the address they connect
// to, unmapped.
type selfDialSet struct {
	n      atomic.Int64 // the dials in byAddr, read without mu
	mu     sync.Mutex
	byAddr map[netip.AddrPort][]*selfDial
}

// selfDial is one attempt of selfDials; done is closed once its dial
// has returned, and marked its connection if it made one.
type selfDial struct {
	set  *selfDialSet
	to   netip.AddrPort
	done chan struct{}
}

// start notes an attempt to connect to to, under way until its finish.
func (s *selfDialSet) start(to netip.AddrPort) *selfDial {
	d := &selfDial{set: s, to: to, done: make(chan struct{})}
	s.mu.Lock()
	if s.byAddr == nil {
		s.byAddr = make(map[netip.AddrPort][]*selfDial)
	}
	s.byAddr[to] = append(s.byAddr[to], d)
	s.n.Add(1)
	s.mu.Unlock()
	return d
}

// finish ends d, whose dial has returned.
func (d *selfDial) finish() {
	s := d.set
	s.mu.Lock()
	list := slices.DeleteFunc(s.byAddr[d.to], func(o *selfDial) bool { return o == d })
	if len(list) == 0 {
		delete(s.byAddr, d.to)
	} else {
		s.byAddr[d.to] = list
	}
	s.n.Add(-1)
	s.mu.Unlock()
	close(d.done)
}

// wait waits for the dials to to under way now, each bounded by the far
// side's dial timeout, and reports whether there were any.
func (s *selfDialSet) wait(to netip.AddrPort) bool {
	if s.n.Load() == 0 {
		return false
	}
	s.mu.Lock()
	list := slices.Clone(s.byAddr[to])
	s.mu.Unlock()
	for _, d := range list {
		<-d.done
	}
	return len(list) > 0
}

// selfDialAttempts are the attempts of one far-side dial, noted in
// selfDials as the dialer connects each (a host name may be tried at
// several addresses, two at once), and ended together once the dial has
// returned and marked its connection.
type selfDialAttempts struct {
	mu    sync.Mutex
	dials []*selfDial
	ended bool // an attempt the dialer starts after its return is not noted
}

// control is a net.Dialer's Control, which the dialer calls with each
// address it is about to connect to.
func (a *selfDialAttempts) control(_, address string, _ syscall.RawConn) error {
	to, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil
	}
	to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.ended {
		a.dials = append(a.dials, selfDials.start(to))
	}
	return nil
}

// end ends the attempts; a nil a has none.
func (a *selfDialAttempts) end() {
	if a == nil {
		return
	}
	a.mu.Lock()
	dials := a.dials
	a.dials, a.ended = nil, true
	a.mu.Unlock()
	for _, d := range dials {
		d.finish()
	}
}

// udpDialled holds the local address (unmapped) of each UDP socket the
// far side of this process sends a flow's datagrams from, while it is
// open: a connected UDP socket alone sends from its address and port.
// The value is the *dialMark, removed only by its own flow.
var udpDialled sync.Map

// unmapped is a's IP and port, its address unmapped from IPv6; zero when
// a is neither a TCP nor a UDP address.
func unmapped(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch ta := a.(type) {
	case *net.TCPAddr:
		ap = ta.AddrPort()
	case *net.UDPAddr:
		ap = ta.AddrPort()
	default:
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// connKey is the (from, to) pair of addresses of a TCP connection,
// unmapped, so that both ends of one connection agree on it.
func connKey(from, to net.Addr) [2]netip.AddrPort {
	return [2]netip.AddrPort{unmapped(from), unmapped(to)}
}

func (c *localConn) LocalAddr() net.Addr  { return c.local }
func (c *localConn) RemoteAddr() net.Addr { return c.remote }

func (c *localConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.done) })
	return err
}

func (c *localConn) CloseWrite() error {
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

// pendingStream is a raw TCP stream handed to a listener before it is
// answered. The listener's own dial onward (this west is the middle of a
// chain) decides the answer: the stream is accepted when the listener
// first uses it, and refused with the dial's failure otherwise, so that
// the opener's listener resets its client as it does when the target is
// one tunnel away, rather than opening a connection that ends at once.
type pendingStream struct {
	req      *tunnel.Request
	answer   sync.Once
	answered chan struct{} // closed once accepted or refused
	conn     net.Conn      // once accepted
	err      error
	// ready is set once conn is, for readers outside answer (streamOf).
	ready atomic.Bool
}

func newPendingStream(req *tunnel.Request) *pendingStream {
	return &pendingStream{req: req, answered: make(chan struct{})}
}

// accept answers the stream, unless it was refused, and returns it.
func (p *pendingStream) accept() (net.Conn, error) {
	p.answer.Do(func() {
		p.conn, p.err = p.req.Accept()
		p.ready.Store(p.err == nil)
		close(p.answered)
	})
	return p.conn, p.err
}

// refuse answers the stream with why it is not served, unless it was
// accepted, and reports whether it did.
func (p *pendingStream) refuse(why error) bool {
	refused := false
	p.answer.Do(func() {
		p.req.Reject(refusal(why))
		p.err, refused = net.ErrClosed, true
		close(p.answered)
	})
	return refused
}

// refusal is the answer that tells the opener of a stream handed to a
// listener why it is not served.
func refusal(why error) (wire.Code, string) {
	var rej *wire.RejectError
	var ne net.Error
	switch {
	case errors.As(why, &rej):
		return rej.Code, rej.Reason // the next west's answer, passed on
	case errors.Is(why, errLocalBusy), errors.Is(why, context.DeadlineExceeded), errors.As(why, &ne) && ne.Timeout():
		return wire.CodeTimeout, why.Error()
	case errors.Is(why, tunnel.ErrPeerDown):
		// The next tunnel is down: the first west answers 503, as it
		// does when its own is.
		return wire.CodeOverloaded, why.Error()
	}
	return wire.CodeDialFailed, why.Error()
}

func (p *pendingStream) Read(b []byte) (int, error) {
	c, err := p.accept()
	if err != nil {
		return 0, err
	}
	return c.Read(b)
}

func (p *pendingStream) Write(b []byte) (int, error) {
	c, err := p.accept()
	if err != nil {
		return 0, err
	}
	return c.Write(b)
}

func (p *pendingStream) CloseWrite() error {
	c, err := p.accept()
	if err != nil {
		return err
	}
	return c.(closeWriter).CloseWrite()
}

// Close refuses a stream the listener never used.
func (p *pendingStream) Close() error {
	if p.refuse(errors.New("closed by this west's listener before use")) {
		return nil
	}
	if p.conn == nil {
		return p.err
	}
	return p.conn.Close()
}

func (p *pendingStream) LocalAddr() net.Addr  { return nil } // localConn tells
func (p *pendingStream) RemoteAddr() net.Addr { return nil }

func (p *pendingStream) SetDeadline(t time.Time) error {
	return p.setDeadline(func(c net.Conn) error { return c.SetDeadline(t) })
}

func (p *pendingStream) SetReadDeadline(t time.Time) error {
	return p.setDeadline(func(c net.Conn) error { return c.SetReadDeadline(t) })
}

func (p *pendingStream) SetWriteDeadline(t time.Time) error {
	return p.setDeadline(func(c net.Conn) error { return c.SetWriteDeadline(t) })
}

func (p *pendingStream) setDeadline(set func(net.Conn) error) error {
	c, err := p.accept()
	if err != nil {
		return err
	}
	return set(c)
}

// refuseConn ends conn, a connection to a raw TCP listener whose stream
// could not be opened for why: with a reset, which tells the client at
// once that nothing is behind us, or, for a stream handed over by the
// west before us in a chain, with a refusal, which its listener passes on
// to its client as a reset.
func refuseConn(conn net.Conn, why error) {
	switch c := innermost(conn).(type) {
	case *pendingStream:
		c.refuse(why)
	case interface{ SetLinger(int) error }:
		c.SetLinger(0)
	}
	conn.Close()
}

// innermost returns the connection under this package's wrappers.
func innermost(c net.Conn) net.Conn {
	for {
		switch w := c.(type) {
		case *limitConn:
			c = w.Conn
		case *localConn:
			c = w.Conn
		case *handedConn:
			c = w.Conn
		case trackedConn:
			c = w.Conn
		default:
			return c
		}
	}
}
