package tunnel

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/libp2p/go-yamux/v5"

	"github.com/west-tunnel/west/internal/lograte"
	"github.com/west-tunnel/west/internal/monotime"
	"github.com/west-tunnel/west/internal/wire"
)

// ServerOptions configures a Server. The zero value of every field but
// Handler means its default.
type ServerOptions struct {
	// Handler serves the streams that tunnel clients open. Required.
	Handler StreamHandler
	// Admit decides whether a tunnel client named name may connect; a
	// non-nil error refuses it with 403 and the error's text. Nil admits
	// everyone.
	Admit func(r *http.Request, name string) error
	// Mux tunes each session's multiplexer.
	Mux MuxOptions
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
	// OnSession, if set, is told of every session that starts and ends,
	// for metrics.
	OnSession func(s *Session, up bool)
	// OnPeerDraining, if set, is told when a peer's notice says that it
	// has begun to drain (see Session.NoticeDrain).
	OnPeerDraining func(s *Session)
	// OnShed, if set, is told of every connection Listener closed for
	// exceeding a bound on handshakes, for metrics.
	OnShed func()
	// OnOverloaded, if set, is told of every stream refused because its
	// peer had Mux.MaxStreams open, for metrics: the Handler never sees it.
	OnOverloaded func()

	// The bounds on connections in their handshake (see Listener);
	// zero means DefaultMaxHandshakesPerIP and DefaultMaxHandshakes.
	// Unexported so that only tests lower them.
	maxHandshakesPerIP, maxHandshakes int
}

// Server accepts tunnel clients. It is an http.Handler serving the
// WebSocket upgrade; ServeHTTP blocks for the life of the tunnel.
type Server struct {
	opts ServerOptions
	log  *slog.Logger

	mu sync.Mutex
	// peers holds the sessions under each name, oldest first: one, or
	// several of one west (see InstanceHeader).
	peers map[string][]*Session
	// rechecks counts Recheck calls, and judge is the last one's rule: a
	// handshake admitted before a Recheck whose session registers after
	// it is judged again by that rule.
	rechecks int
	judge    func(r *http.Request, name string) error
	closed   bool
	sessions sync.WaitGroup // ServeHTTP calls past the upgrade

	// Connections in their handshake (see Listener), under hsMu.
	maxPerIP, maxTotal int
	hsMu               sync.Mutex
	hsByIP             map[netip.Addr]int
	hsTotal            int
	shedLog            lograte.Limit // of shed connections
	refusedLog         lograte.Limit // of refused handshakes (see warnRefused)
}

// NewServer returns a Server.
func NewServer(opts ServerOptions) *Server {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{opts: opts, log: log, peers: make(map[string][]*Session),
		maxPerIP: cmp.Or(opts.maxHandshakesPerIP, DefaultMaxHandshakesPerIP),
		maxTotal: cmp.Or(opts.maxHandshakes, DefaultMaxHandshakes),
		hsByIP:   make(map[netip.Addr]int)}
}

// ServeHTTP upgrades a tunnel client and serves its session until it ends.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := r.Header.Get("Origin")
	log := s.log.With("peer", name, "remote", r.RemoteAddr)
	inst, err := s.checkHandshake(r, name)
	if err != nil {
		s.warnRefused(log, "tunnel handshake refused", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	rechecks := s.rechecks
	s.mu.Unlock()
	if s.opts.Admit != nil {
		if err := s.opts.Admit(r, name); err != nil {
			s.warnRefused(log, "tunnel client not admitted", err)
			http.Error(w, "west: "+err.Error(), http.StatusForbidden)
			return
		}
	}
	var answer http.Header
	peerHops := !s.opts.Mux.NoHops && announcesHops(r.Header)
	if peerHops {
		answer = http.Header{HopsHeader: {"1"}}
	}
	c, err := upgrader.Upgrade(w, r, answer)
	if err != nil {
		// Upgrade has answered the client with the reason.
		s.warnRefused(log, "tunnel upgrade failed", err)
		return
	}
	if peerGone(c.NetConn()) {
		// A handshake its client gave up on and closed, read late: this
		// server was stopped or paused, and its kernel kept the backlog.
		// Registered, it would take the name from the tunnel the client,
		// or the west restarted in its place, has brought up since.
		log.Info("tunnel handshake from a client already gone; dropped")
		c.Close()
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	sess, err := startSession(c, false, name, r.RemoteAddr, s.opts.Mux, log)
	if err != nil {
		log.Error("start tunnel session", "err", err)
		return
	}
	sess.peerHops = peerHops
	sess.onPeerDraining = s.opts.OnPeerDraining
	sess.onOverloaded = s.opts.OnOverloaded
	sess.instance = inst
	// What Admit reads of the request, without its body or context.
	hs := &http.Request{Method: r.Method, URL: r.URL, Host: r.Host, Header: r.Header.Clone(), RemoteAddr: r.RemoteAddr, TLS: r.TLS}
	registered, later := s.register(sess, hs, rechecks)
	if later != nil {
		// A handshake its client gave up on, read late (this server was
		// stopped or paused): the client's later attempt keeps the name.
		log.Info("tunnel handshake outlived by a later one of its client; closed", "later_remote", later.remote)
		sess.closeFor(closeReplaced, "replaced by a newer tunnel under this name, from "+later.remote)
		return
	}
	if !registered {
		// Closed between the upgrade and now: the client has its tunnel
		// up already, and learns why it ends as those registered do.
		sess.closeFor(closeStopping, stoppingReason)
		return
	}
	defer s.unregister(sess)
	log.Info("tunnel client connected")
	sess.serve(ctx, s.opts.Handler)
	if _, reason := sess.peerClosed(); reason != "" {
		log = log.With("reason", reason)
	}
	log.Info("tunnel client disconnected", "after", time.Since(sess.since).Round(time.Millisecond))
}

// warnRefused logs a refused handshake, at most once a second with how
// many were left out since: anyone who reaches the server can send them,
// on one kept-alive connection, as fast as it likes.
func (s *Server) warnRefused(log *slog.Logger, msg string, err error) {
	if ok, skipped := s.refusedLog.Allow(); ok {
		log.Warn(msg, "err", err, "not_logged_since", skipped)
	}
}

// checkHandshake checks a client's handshake before the upgrade, and
// returns its InstanceHeader.
func (s *Server) checkHandshake(r *http.Request, name string) (instance, error) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		return instance{}, fmt.Errorf("%w: not a WebSocket upgrade", errHandshake)
	}
	switch {
	case name == "":
		return instance{}, fmt.Errorf("%w: no Origin header naming the peer", errHandshake)
	case len(name) > wire.MaxNameLen:
		return instance{}, fmt.Errorf("%w: a peer name (Origin) of %d bytes; at most %d", errHandshake, len(name), wire.MaxNameLen)
	case !utf8.ValidString(name):
		return instance{}, fmt.Errorf("%w: a peer name (Origin) that is not UTF-8", errHandshake)
	}
	var offered []string
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(v, ",") {
			offered = append(offered, strings.TrimSpace(p))
		}
	}
	if !slices.Contains(offered, wire.Subprotocol) {
		return instance{}, fmt.Errorf("%w: subprotocols %q offered, this west speaks %q", errHandshake, offered, wire.Subprotocol)
	}
	inst, err := parseInstance(r.Header.Get(InstanceHeader))
	if v := r.Header.Get(AttemptHeader); err == nil && v != "" {
		if inst.attempt, err = strconv.ParseUint(v, 10, 64); err != nil {
			return instance{}, fmt.Errorf("%w: a %s header of %q; want a decimal count", errHandshake, AttemptHeader, truncate(v, 80))
		}
	}
	return inst, err
}

// register makes sess the newest session under its name. It replaces
// the older ones at once, so that a client that reconnects is never
// locked out by its own dead session, but for those of its west's other
// clients (one server reached by two URLs; see InstanceHeader), which it
// keeps, up to maxSessionsPerName. It registers nothing when the server
// has closed, nor a handshake outlived by a later one of its client: it
// returns that one's session then.
func (s *Server) register(sess *Session, handshake *http.Request, rechecks int) (registered bool, later *Session) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false, nil
	}
	for _, o := range s.peers[sess.peer] {
		if sess.instance.outlivedBy(o.instance) {
			s.mu.Unlock()
			return false, o
		}
	}
	var judge func(r *http.Request, name string) error
	if s.rechecks != rechecks {
		judge = s.judge
	}
	var kept, replaced []*Session
	for _, o := range s.peers[sess.peer] {
		if o.instance.sibling(sess.instance) {
			kept = append(kept, o)
		} else {
			replaced = append(replaced, o)
		}
	}
	if extra := len(kept) - (maxSessionsPerName - 1); extra > 0 {
		// A copy, which does not keep those replaced reachable.
		replaced, kept = append(replaced, kept[:extra]...), slices.Clone(kept[extra:])
	}
	if len(replaced) > 0 {
		sess.tookOver = time.Now()
	}
	sess.admitted = handshake
	s.peers[sess.peer] = append(kept, sess)
	s.sessions.Add(1)
	if s.opts.OnSession != nil {
		s.opts.OnSession(sess, true)
	}
	s.mu.Unlock()
	if judge != nil {
		// Admitted by the rules a Recheck has replaced since, and
		// missed by it.
		if err := judge(handshake, sess.peer); err != nil {
			s.log.Warn("tunnel client no longer admitted; closing its tunnel", "peer", sess.peer, "remote", sess.remote, "err", err)
			sess.closeFor(closeRevoked, "no longer admitted: "+err.Error())
		}
	}
	if len(kept) > 0 {
		s.log.Info("tunnel client's west has another tunnel under this name (it reaches this server by two URLs); both kept",
			"peer", sess.peer, "remote", sess.remote, "other_remote", kept[len(kept)-1].remote, "tunnels", len(kept)+1)
	}
	for _, old := range replaced {
		s.replace(old, sess)
	}
	return true, nil
}

// replace closes old, which sess has taken the name from.
func (s *Server) replace(old, sess *Session) {
	// A client that reconnects replaces its own dead session now and then,
	// one that has heard nothing since the client lost it; a name that
	// changes hands again and again from sessions still heard, which a
	// live peer pings every keepalive, has two live owners; a client that
	// replaces its own (one it gave up on, read late) is never two.
	live := old.silent(sess.tookOver) < 2*s.opts.Mux.withDefaults().KeepAliveInterval
	if live && !old.instance.sameClient(sess.instance) && !old.tookOver.IsZero() && sess.tookOver.Sub(old.tookOver) < tradeWindow {
		s.log.Warn("tunnel name changes hands again: two tunnel clients use it, and each replaces the other; "+
			"give each west its own name, or spell each tunnel server one way (not both 127.0.0.1 and localhost)",
			"peer", sess.peer, "remote", sess.remote, "old_remote", old.remote)
	} else {
		s.log.Info("tunnel client replaces its older session", "peer", sess.peer, "remote", sess.remote, "old_remote", old.remote,
			"old_silent", old.silent(sess.tookOver).Round(time.Millisecond))
	}
	// In the background: the old peer is most likely gone, and its close
	// waits up to closeLinger for an answer.
	go old.closeFor(closeReplaced, "replaced by a newer tunnel under this name, from "+sess.remote)
}

// stoppingReason is what a stopping tunnel server tells its clients.
const stoppingReason = "the tunnel server is stopping"

// tradeWindow is how soon a name taken over is taken over again before
// the server warns that two clients share it.
const tradeWindow = time.Minute

func (s *Server) unregister(sess *Session) {
	s.mu.Lock()
	if rest := slices.DeleteFunc(s.peers[sess.peer], func(o *Session) bool { return o == sess }); len(rest) > 0 {
		s.peers[sess.peer] = rest
	} else {
		delete(s.peers, sess.peer)
	}
	s.mu.Unlock()
	sess.Close()
	if s.opts.OnSession != nil {
		s.opts.OnSession(sess, false)
	}
	s.sessions.Done()
}

// Recheck judges every session up by admit, as if its client had just
// sent its handshake again, and closes those admit refuses: a reload that
// revokes a peer's token or address ends the tunnel it already has, not
// only its next one. It returns the names of the peers it disconnected.
func (s *Server) Recheck(admit func(r *http.Request, name string) error) []string {
	s.mu.Lock()
	s.rechecks++
	s.judge = admit
	sessions := s.allLocked()
	s.mu.Unlock()
	var closed []string
	var closing sync.WaitGroup
	for _, sess := range sessions {
		if err := admit(sess.admitted, sess.peer); err != nil {
			s.log.Warn("tunnel client no longer admitted; closing its tunnel", "peer", sess.peer, "remote", sess.remote, "err", err)
			// Each may wait a moment for a frame being written: at once.
			closing.Go(func() { sess.closeFor(closeRevoked, "no longer admitted: "+err.Error()) })
			closed = append(closed, sess.peer)
		}
	}
	closing.Wait()
	slices.Sort(closed)
	return slices.Compact(closed) // a west's tunnels under one name, once
}

// Dial opens a stream to the tunnel client named peer: on its newest
// tunnel that is neither draining nor closed, when its west holds several
// (a west retiring one of them tells us so), else on its newest.
func (s *Server) Dial(ctx context.Context, peer string, h wire.Header) (net.Conn, error) {
	s.mu.Lock()
	var sess *Session
	if list := s.peers[peer]; len(list) > 0 {
		sess = list[len(list)-1]
		for _, o := range slices.Backward(list) {
			if !o.PeerDraining() && !o.mux.IsClosed() {
				sess = o
				break
			}
		}
	}
	s.mu.Unlock()
	if sess == nil {
		return nil, fmt.Errorf("tunnel client %q: %w", peer, ErrPeerDown)
	}
	return sess.Open(ctx, h)
}

// Session returns the newest live session of the named peer, or nil.
func (s *Server) Session(peer string) *Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	if list := s.peers[peer]; len(list) > 0 {
		return list[len(list)-1]
	}
	return nil
}

// Sessions returns the live sessions, sorted by peer name, the oldest of
// a name first.
func (s *Server) Sessions() []*Session {
	s.mu.Lock()
	out := s.allLocked()
	s.mu.Unlock()
	slices.SortStableFunc(out, func(a, b *Session) int { return strings.Compare(a.peer, b.peer) })
	return out
}

// allLocked returns every live session; s.mu must be held.
func (s *Server) allLocked() []*Session {
	var out []*Session
	for _, list := range s.peers {
		out = append(out, list...)
	}
	return out
}

// Close ends every session, refuses new ones, and waits until all have
// stopped. It is safe to call more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	var closing sync.WaitGroup
	for _, sess := range s.allLocked() {
		// Each waits a moment for a frame being written, so at once.
		closing.Go(func() { sess.closeFor(closeStopping, stoppingReason) })
	}
	s.mu.Unlock()
	closing.Wait()
	s.sessions.Wait()
	return nil
}

var upgrader = websocket.Upgrader{
	ReadBufferSize:  wsReadBufferSize,
	WriteBufferSize: wsWriteBufferSize,
	WriteBufferPool: wsWriteBuffers,
	Subprotocols:    []string{wire.Subprotocol},
	// The Origin header carries the peer's name, not a web origin.
	CheckOrigin: func(*http.Request) bool { return true },
}

// startSession puts a multiplexer on an established WebSocket; the
// session's serve closes both when its context ends.
func startSession(c *websocket.Conn, client bool, peer, remote string, mo MuxOptions, log *slog.Logger) (*Session, error) {
	// A frame is one message; allow a little beyond the largest frame.
	c.SetReadLimit(maxFrame + 1024)
	limitUnsent(c.NetConn())
	queue := newSendQueue()
	conn := &wsConn{ws: c, sent: queue}
	conn.heard.Store(monotime.Now())
	cfg := mo.yamuxConfig(log)
	var mux *yamux.Session
	var err error
	if client {
		mux, err = yamux.Client(conn, cfg, nil)
	} else {
		mux, err = yamux.Server(conn, cfg, nil)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("start multiplexer: %w", err)
	}
	sess := newSession(mux, conn, client, peer, remote, mo.MaxStreams, log)
	sess.readsHops = !mo.NoHops
	mo = mo.withDefaults()
	go sess.watch(&conn.heard, &queue.lastWrite, mo.KeepAliveInterval, mo.KeepAliveTimeout)
	return sess, nil
}
