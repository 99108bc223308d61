package proxy

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/west-tunnel/west/internal/acl"
	"github.com/west-tunnel/west/internal/monotime"
)

// Server serves an http:// proxy listener. It answers the common request,
// a GET or HEAD without a body, in one loop per connection (see fast.go),
// and hands a connection that brings anything else, or anything it does
// not fully understand, to an http.Server running the same handler, for
// the rest of that connection's life.
//
// The loop exists for speed: per request, net/http's server allocates a
// context, a Request with its header map and a response, starts and stops
// a goroutine reading in the background, and the reverse proxy copies the
// headers twice more. On the 64-connection benchmark that was half the
// listening west's CPU time.
type Server struct {
	current  func() *HTTP // the handler now, which a reload may change
	fallback *http.Server
	handoff  *handoffListener

	closing atomic.Bool

	mu       sync.Mutex // guards the fields below
	ln       net.Listener
	conns    map[*serverConn]struct{} // the loop's, and those handed to fallback until they close
	fellBack bool                     // fallback is serving handoff
	wg       sync.WaitGroup

	handedOff atomic.Int64 // connections given to fallback, for tests
}

// NewServer returns a Server that answers with current()'s routes and
// hands connections over to fallback, whose Handler must serve the same.
// fallback's ReadHeaderTimeout, IdleTimeout and BaseContext apply to the
// loop too.
func NewServer(current func() *HTTP, fallback *http.Server) *Server {
	return &Server{current: current, fallback: fallback, conns: make(map[*serverConn]struct{})}
}

// HTTPServer returns the http.Server that serves the connections handed
// over, to be configured before Serve.
func (s *Server) HTTPServer() *http.Server { return s.fallback }

// Serve accepts connections on ln until Shutdown or Close.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		ln.Close()
		return http.ErrServerClosed
	}
	s.ln = ln
	if !s.fellBack {
		s.fellBack = true
		s.handoff = newHandoffListener(ln.Addr())
		markFromWest(s.fallback)
		s.followHandedOver()
		go s.fallback.Serve(s.handoff)
	}
	s.mu.Unlock()
	base := context.Background()
	if f := s.fallback.BaseContext; f != nil {
		base = f(ln)
	}
	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return http.ErrServerClosed
			}
			var ne net.Error
			//lint:ignore SA1019 as net/http's own accept loop, for EMFILE and the like
			if errors.As(err, &ne) && ne.Temporary() {
				// Out of file descriptors and the like: wait, as net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		c := &serverConn{s: s, conn: conn}
		c.ctx, c.cancel = context.WithCancel(base)
		if !s.track(c) {
			c.cancel()
			conn.Close()
			return http.ErrServerClosed
		}
		go c.serve()
	}
}

// track adds c to the connections served, unless the server is closing.
func (s *Server) track(c *serverConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	c.idle.Store(true) // idleSince stays 0 until a first answer: see CloseIdlest
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

// setIdle marks c waiting for a request or busy with one, and reports
// whether it may go on: not once the server closes. Shutdown closes the
// connections it finds idle; one that turned busy first answers its
// request, and then finds the server closing.
func (s *Server) setIdle(c *serverConn, idle bool) bool {
	if idle {
		c.idleSince.Store(monotime.Now())
	}
	c.idle.Store(idle)
	return !s.closing.Load()
}

// CloseIdlest closes the connection that has waited longest for a
// request, if one does, to make room for a new client at max_conns (see
// Limited.SetReclaim). It reports whether it closed one. One whose first
// request has not arrived yet (idleSince 0) is not kept alive but a new
// client, its request perhaps on its way or behind a TLS handshake: it
// keeps its place, bounded by the header timeout.
func (s *Server) CloseIdlest() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	var idlest *serverConn
	for c := range s.conns {
		if c.idle.Load() && !c.ended && c.idleSince.Load() != 0 && (idlest == nil || c.idleSince.Load() < idlest.idleSince.Load()) {
			idlest = c
		}
	}
	if idlest == nil {
		return false
	}
	// Marked ended, so that it is not picked again before its goroutine
	// has seen the close and untracked it.
	idlest.ended = true
	idlest.conn.Close()
	return true
}

// untrack ends the loop's service of c. One handed to fallback stays in
// conns, for Recheck, until it closes (forget); Shutdown waits for it
// through fallback, as before.
func (s *Server) untrack(c *serverConn) {
	s.mu.Lock()
	if !c.handedOver {
		delete(s.conns, c)
	}
	s.mu.Unlock()
	s.wg.Done()
}

// handOver marks c as fallback's from now on.
func (s *Server) handOver(c *serverConn) {
	s.mu.Lock()
	c.handedOver = true
	s.mu.Unlock()
}

// forget drops c, a connection handed to fallback, which has closed.
func (s *Server) forget(c *serverConn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.cancel()
}

// Recheck judges the exchanges in progress (a request awaiting or
// streaming its response, a connection upgraded to another protocol) by
// the routes current() has now: one whose client the access list of the
// route for its path refuses is ended, its connection closed. A path no
// route matches now is no reason: only access is. It reports how many it
// ended. A reload calls it once it has changed the handler; idle
// connections need none, as their next request is judged anew.
func (s *Server) Recheck() int {
	h := s.current()
	s.mu.Lock()
	defer s.mu.Unlock()
	ended := 0
	for c := range s.conns {
		path, addr := c.request()
		if path == "" || c.ended {
			continue
		}
		if rt := h.match(path); rt == nil || h.allows(rt, path, addr) {
			continue
		}
		// Closing first, so that the client sees its connection end
		// rather than the 502 the abandoned request would write;
		// cancelling then abandons the request's tunnel stream (the
		// loop's hook, or the reverse proxy's on the request's context,
		// which also ends an upgrade's copy).
		c.conn.Close()
		c.cancel()
		// It stays in conns until its goroutines have seen the close;
		// a Recheck meanwhile must not count it again.
		c.ended = true
		ended++
	}
	return ended
}

// BeginShutdown is Shutdown's first step, taken at once: it stops
// accepting, closes idle connections, and has every busy one close after
// its answer. A caller that runs the rest of Shutdown in the background
// calls it first, so that no request arriving after it returns, on a
// connection kept alive, is still served.
func (s *Server) BeginShutdown() {
	s.mu.Lock()
	s.closing.Store(true)
	if s.ln != nil {
		s.ln.Close()
	}
	for c := range s.conns {
		if c.idle.Load() {
			c.conn.Close()
		}
	}
	s.mu.Unlock()
	// Whether or not fallback serves yet: a request in flight may still
	// be handed to it. Outside s.mu, since closing a handed connection
	// takes it (forget).
	s.fallback.SetKeepAlivesEnabled(false) // closes its idle connections
}

// Shutdown stops accepting, closes idle connections, and waits until the
// busy ones have answered their request and the upgraded ones have
// closed, or ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.BeginShutdown()
	s.mu.Lock()
	fellBack := s.fellBack
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	var fallbackErr error
	if fellBack {
		fallbackErr = s.fallback.Shutdown(ctx)
	}
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if fallbackErr != nil {
		return fallbackErr
	}
	// net/http neither waits for nor closes the connections it let a
	// handler hijack: WebSockets and other upgrades. They are exchanges in
	// flight all the same, given the time a tcp:// listener's connections
	// get, then ended by Close.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for s.tracked() > 0 {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// tracked is how many connections s holds: the loop's, and those handed to
// net/http, hijacked ones included, until they close.
func (s *Server) tracked() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Close closes the listener and every connection at once.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closing.Store(true)
	if s.ln != nil {
		s.ln.Close()
	}
	for c := range s.conns {
		// fallback closes those handed to it, but for hijacked ones,
		// which it leaves to their hijacker: they end here, and their
		// request's context with them, so that the reverse proxy lets go
		// of the tunnel stream too.
		c.conn.Close()
		if c.handedOver {
			c.cancel()
		}
	}
	fellBack := s.fellBack
	s.mu.Unlock()
	if fellBack {
		s.fallback.Close()
	}
	return nil
}

// serverConn is one client connection served by the loop.
type serverConn struct {
	s    *Server
	conn net.Conn
	br   *bufio.Reader
	idle atomic.Bool // waiting for a request
	// idleSince is when it last began to wait after an answer, a
	// monotime reading; 0 before the first.
	idleSince atomic.Int64
	// ctx ends with the connection, or when its client is seen to leave
	// (clientWatch) or Recheck refuses it: its requests are abandoned
	// then. A connection handed to fallback keeps it until it closes, as
	// the parent of its requests' contexts.
	ctx    context.Context
	cancel context.CancelFunc
	// handedOver is set under s.mu once fallback serves the connection.
	handedOver bool
	// ended is set under s.mu once Recheck or CloseIdlest has ended the
	// connection.
	ended bool
	// reqMu guards path, the escaped path of the request in progress ("",
	// between requests), which Recheck reads.
	reqMu sync.Mutex
	path  string
	watch *clientWatch
	// For the request in progress (serveFast): its writer, the request
	// as the stream transport takes it, and the head it sends.
	w    fastWriter
	sreq streamRequest
	out  []byte
	// armed is when the read deadline was last set for the wait for a
	// request; zero when it must be set again.
	armed time.Time
	// writeArmed is when the write deadline was last set (armWrite), a
	// monotime reading: net/http and a hijacker write from goroutines of
	// their own.
	writeArmed atomic.Int64
	// The client's address, for access lists and X-Forwarded-For, and
	// whether the client is a west's listener (see fromWest).
	addr     netip.Addr
	ip       string
	fromWest bool
}

// connReadBuf is the size of a loop connection's reader: a request head
// that does not fit goes to net/http, which allows larger ones.
const connReadBuf = 4 << 10

func (c *serverConn) serve() {
	defer c.s.untrack(c)
	defer func() {
		if !c.handedOver { // written by this goroutine only
			c.cancel()
		}
	}()
	c.br = bufio.NewReaderSize(c.conn, connReadBuf)
	remote := c.conn.RemoteAddr().String()
	c.addr = acl.PeerAddr(remote)
	if host, _, err := net.SplitHostPort(remote); err == nil {
		c.ip = host
	}
	wait, idle := c.s.headerTimeout(), c.s.idleTimeout()
	for first := true; ; first = false {
		// Setting a deadline costs a timer update: while requests keep
		// coming, it is set again once a second (or a quarter of a short
		// wait), not for each.
		if now := time.Now(); wait > 0 && now.Sub(c.armed) > min(time.Second, wait/4) {
			c.conn.SetReadDeadline(now.Add(wait))
			c.armed = now
		}
		if _, err := c.br.Peek(1); err != nil {
			c.conn.Close()
			return
		}
		if first {
			// Once the client has sent something: a connection this
			// west dialled is known for one (see fromWest) before its
			// far side sends on it, not always before it is accepted.
			c.fromWest = fromWest(c.conn)
		}
		if !c.s.setIdle(c, false) {
			c.conn.Close()
			return
		}
		keep, handOff := c.serveRequest()
		switch {
		case handOff:
			c.s.handedOff.Add(1)
			c.conn.SetReadDeadline(time.Time{})
			c.s.handOver(c)
			hc := &handedConn{Conn: c.conn, r: c.br, c: c}
			// c stays tracked as long as the connection lives (for
			// Recheck): it lets go of the loop's buffers, which a
			// WebSocket would otherwise keep for its life.
			c.br, c.w = nil, fastWriter{}
			if err := c.s.handoff.give(hc); err != nil {
				hc.Close()
			}
			return
		case !keep || !c.s.setIdle(c, true):
			c.conn.Close()
			return
		}
		if wait != idle {
			wait, c.armed = idle, time.Time{}
			if wait == 0 {
				// No limit on the wait: lift the first request's.
				c.conn.SetReadDeadline(time.Time{})
			}
		}
	}
}

// headerTimeout bounds the wait for a connection's first request head,
// and idleTimeout the wait for each later one, as net/http reads them
// from the same fields: ReadTimeout stands in for either when unset.
func (s *Server) headerTimeout() time.Duration {
	return cmp.Or(s.fallback.ReadHeaderTimeout, s.fallback.ReadTimeout)
}

func (s *Server) idleTimeout() time.Duration {
	return cmp.Or(s.fallback.IdleTimeout, s.fallback.ReadTimeout)
}

// armWrite bounds the write about to start. A client that takes nothing
// of an answer for as long as one may idle between requests is gone, as
// nginx's send_timeout has it: otherwise it would hold its tunnel stream,
// a window of unread data and the far side's backend connection for ever.
// Setting a deadline costs a timer update, so while writes go through it
// is set again once a second (or a quarter of a short idle) at most.
func (c *serverConn) armWrite() {
	idle := c.s.idleTimeout()
	if idle <= 0 {
		return
	}
	now := time.Now()
	if at := monotime.At(now); at-c.writeArmed.Load() > int64(min(time.Second, idle/4)) {
		c.conn.SetWriteDeadline(now.Add(idle))
		c.writeArmed.Store(at)
	}
}

// setRequest notes the path of the request c is serving, "" once done.
func (c *serverConn) setRequest(path string) {
	c.reqMu.Lock()
	c.path = path
	c.reqMu.Unlock()
}

// request returns the path of the request c is serving, if any, and the
// client's address.
func (c *serverConn) request() (path string, addr netip.Addr) {
	c.reqMu.Lock()
	defer c.reqMu.Unlock()
	if c.path == "" {
		// serve may be setting addr still: it is read only once a path,
		// noted after it, says it has been set.
		return "", netip.Addr{}
	}
	return c.path, c.addr
}

// servedConnKey holds, in the context of a connection handed to
// fallback, its *serverConn.
type servedConnKey struct{}

// followHandedOver has fallback's requests on handed connections end with
// their serverConn's context and note their path in it, for Recheck.
func (s *Server) followHandedOver() {
	prev := s.fallback.ConnContext
	s.fallback.ConnContext = func(ctx context.Context, nc net.Conn) context.Context {
		if prev != nil {
			ctx = prev(ctx, nc)
		}
		hc, ok := nc.(*handedConn)
		if !ok {
			return ctx
		}
		ctx, cancel := context.WithCancel(ctx)
		context.AfterFunc(hc.c.ctx, cancel) // released as the connection closes
		return context.WithValue(ctx, servedConnKey{}, hc.c)
	}
	// One waiting for its next request may make room at max_conns too.
	prevState := s.fallback.ConnState
	s.fallback.ConnState = func(nc net.Conn, st http.ConnState) {
		if prevState != nil {
			prevState(nc, st)
		}
		if hc, ok := nc.(*handedConn); ok && (st == http.StateIdle || st == http.StateActive) {
			s.setIdle(hc.c, st == http.StateIdle)
		}
	}
	h := s.fallback.Handler
	s.fallback.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Noted before the handler reads the routes, so that Recheck,
		// which runs after they change, misses no request judged by the
		// old ones.
		if c, ok := r.Context().Value(servedConnKey{}).(*serverConn); ok {
			c.setRequest(r.URL.EscapedPath())
			defer c.setRequest("")
		}
		h.ServeHTTP(w, r)
	})
}

// fromWestKey marks, in a request's context, a connection from a west's
// listener (see fromWest).
type fromWestKey struct{}

// markFromWest has hs mark the contexts of connections from a west's
// listener, for the reverse proxy's Rewrite.
func markFromWest(hs *http.Server) {
	prev := hs.ConnContext
	hs.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if prev != nil {
			ctx = prev(ctx, c)
		}
		if fromWest(c) {
			ctx = context.WithValue(ctx, fromWestKey{}, true)
		}
		return ctx
	}
}

// handedConn is a connection given to net/http with the bytes the loop
// had already read from it. Closing it, as net/http or a hijacker does,
// ends its serverConn.
type handedConn struct {
	net.Conn
	r      *bufio.Reader
	c      *serverConn
	closed sync.Once
}

func (c *handedConn) Close() error {
	err := c.Conn.Close()
	c.closed.Do(func() { c.c.s.forget(c.c) })
	return err
}

// CloseWrite lets net/http half-close before closing, so that a client
// reads an error answer before the connection resets.
func (c *handedConn) CloseWrite() error {
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

// Write bounds each write as the loop's are (armWrite): net/http's writes
// of an answer, and a hijacker's of an upgraded connection.
func (c *handedConn) Write(b []byte) (int, error) {
	written := 0
	for {
		c.c.armWrite()
		n, err := c.Conn.Write(b[written:])
		written += n
		if err == nil || n == 0 || !isTimeout(err) {
			return written, err
		}
		c.c.writeArmed.Store(0) // slow, not gone: a deadline for the rest
	}
}

func (c *handedConn) Read(b []byte) (int, error) {
	if c.r != nil {
		if c.r.Buffered() > 0 {
			return c.r.Read(b)
		}
		c.r = nil
	}
	return c.Conn.Read(b)
}

// handoffListener passes connections to an http.Server.
type handoffListener struct {
	addr   net.Addr
	conns  chan net.Conn
	done   chan struct{}
	closed sync.Once
}

func newHandoffListener(addr net.Addr) *handoffListener {
	return &handoffListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *handoffListener) give(c net.Conn) error {
	select {
	case l.conns <- c:
		return nil
	case <-l.done:
		return net.ErrClosed
	}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.closed.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }
