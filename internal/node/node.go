package node

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/west-tunnel/west/internal/acl"
	"github.com/west-tunnel/west/internal/config"
	"github.com/west-tunnel/west/internal/control"
	"github.com/west-tunnel/west/internal/lograte"
	"github.com/west-tunnel/west/internal/proxy"
	"github.com/west-tunnel/west/internal/sockio"
	"github.com/west-tunnel/west/internal/tunnel"
	"github.com/west-tunnel/west/internal/wire"
	"golang.org/x/sync/errgroup"
)

// Options are a node's runtime knobs that are not part of the config file.
type Options struct {
	// Logger receives all logs; nil discards them.
	Logger *slog.Logger
	// Listen opens the node's listeners; nil means net.Listen. Tests use it
	// to hand a node listeners they already hold.
	Listen func(network, addr string) (net.Listener, error)
	// ShutdownGrace is how long in-flight requests may take to finish once
	// Run's context ends. Zero means 5s.
	ShutdownGrace time.Duration
	// Mux tunes every tunnel's multiplexer.
	Mux tunnel.MuxOptions
	// ConfigPath is the file the config came from; with it, ReloadFile and
	// the control port's POST /api/reload read it anew.
	ConfigPath string
	// OnReloadFile, if set, is called as each ReloadFile begins, whether
	// a SIGHUP or the control port asked for it, and the function it
	// returns with the outcome: how cmd/west tells systemd of reloads.
	OnReloadFile func() (done func(error))
}

// Node is one running west.
type Node struct {
	cfg  *config.Config
	opts Options
	log  *slog.Logger
	id   string // sent by its tunnel clients (tunnel.ClientOptions.West)

	far     *proxy.Far
	locals  proxy.Locals              // proxy listeners, which streams for them are handed to
	gate    atomic.Pointer[gate]      // nil without wsts.sp; Reload may replace it
	server  *tunnel.Server            // nil without wsts.sp
	clients map[string]*tunnel.Client // by server URL
	servers []*listener               // tunnel server, proxy listeners, control port
	metrics *control.Metrics          // fed by the engines' hooks; see control.go
	// unopened are the proxy listeners of cfg that the last reload could
	// not open, by name, with why. Reload replaces the map, never changes
	// it: a reader may keep it past n.mu.
	unopened map[string]error

	// tunnelTLS is the tunnel server's TLS configuration in force, nil
	// for ws://; Reload replaces it with the files read anew.
	tunnelTLS atomic.Pointer[tls.Config]
	// controlAllow is west.control_ca in force; Reload replaces it.
	controlAllow atomic.Pointer[func(netip.Addr) bool]
	// drainCtx is set once the node begins to drain, and bounds the drain
	// notices sent to tunnels that come up during the drain (the tunnel
	// server still admits them, and clients still redial).
	drainCtx atomic.Pointer[context.Context]
	// stopping is closed as the tunnel server closes, ending the waits of
	// the handshakes it refuses (gate.admit).
	stopping chan struct{}

	startOnce sync.Once
	startErr  error

	// fileMu makes ReloadFile's read and apply one step: of two that
	// overlap (SIGHUP and POST /api/reload), the later read is applied
	// last.
	fileMu sync.Mutex

	// mu guards cfg, clients and servers against Reload, and the fields
	// below, which Run sets so that Reload can start and stop parts.
	mu          sync.Mutex
	group       *errgroup.Group
	groupCtx    context.Context
	clientStops map[string]context.CancelFunc // by server URL
	// retiring are the clients a reload replaced that still carry
	// streams (retireClient): a shutdown waits for their send queues too.
	retiring  map[*tunnel.Client]struct{}
	running   bool
	runningCh chan struct{} // closed once Run has set running
	// drains counts the listeners Reload stopped that are still
	// draining; a shutdown waits for them as for its own.
	drains sync.WaitGroup
}

// server is what serves a listening socket: an *http.Server, a
// *proxy.Server (http:// listeners) or a *proxy.TCP.
type server interface {
	Shutdown(context.Context) error
	Close() error
}

// streamServer serves a listening socket; *proxy.UDP serves a packet one.
type streamServer interface {
	Serve(net.Listener) error
}

// listener is one listening socket and the server behind it.
type listener struct {
	role string // "tunnel", "proxy" or "control", for logs and Addrs
	name string // the config key or address it came from
	addr string // the configured address
	srv  server
	ln   net.Listener   // stream listeners
	pc   net.PacketConn // udp:// listeners
	// after runs once the server has stopped, to release what it used.
	after func()
	// tls, if set, makes the listener speak TLS; maxConns > 0 limits the
	// connections it serves at once.
	tls      *tls.Config
	maxConns int
	limit    *proxy.Limited // the bound on a proxy listener's socket, unbounded when maxConns is 0
	// For proxy listeners: the config they were built from, and for HTTP
	// ones the handler Reload can swap without closing the socket.
	proxy   config.Proxy
	handler *swapHandler
}

// New builds a node from cfg without opening any socket.
func New(cfg *config.Config, opts Options) (*Node, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Listen == nil {
		opts.Listen = net.Listen
	}
	if opts.ShutdownGrace <= 0 {
		opts.ShutdownGrace = cmp.Or(cfg.West.ShutdownGrace, 5*time.Second)
	}
	if opts.Mux.KeepAliveInterval == 0 && opts.Mux.KeepAliveTimeout == 0 {
		opts.Mux.KeepAliveInterval, opts.Mux.KeepAliveTimeout = cfg.West.KeepAlive, cfg.West.DeadAfter
	}
	if opts.Mux.StreamWindow == 0 {
		opts.Mux.StreamWindow = cfg.West.StreamWindow
	}
	n := &Node{cfg: cfg, opts: opts, log: opts.Logger, id: tunnel.NewID(), clients: make(map[string]*tunnel.Client), runningCh: make(chan struct{}), stopping: make(chan struct{})}
	targets, err := acl.ParseTargets(cfg.West.DialAllow)
	if err != nil {
		return nil, fmt.Errorf("west.dial_allow: %w", err)
	}
	n.metrics = control.NewMetrics()
	n.metrics.WatchHealth(func() int { return len(n.State().Problems()) })
	n.far = &proxy.Far{Targets: targets, Logger: n.log.With("part", "far"), OnDialError: n.onDialError, Locals: &n.locals,
		OnDatagramDropped: func(why proxy.DropReason) { n.metrics.UDPDropped("", string(why), 1) }}

	if s := cfg.Server; s != nil {
		if err := n.addTunnelServer(s); err != nil {
			return nil, err
		}
	}
	for _, c := range cfg.Clients {
		cl, err := n.buildClient(c)
		if err != nil {
			return nil, err
		}
		n.clients[c.URL.String()] = cl
	}
	for _, p := range cfg.Proxies {
		if err := n.addProxy(p); err != nil {
			return nil, err
		}
	}
	if cfg.West.ControlAddr != "" {
		n.addServer("control", cfg.West.ControlAddr, cfg.West.ControlAddr, n.controlHandler(), nil)
	}
	n.warnConfig(cfg)
	n.recordCerts(cfg)
	return n, nil
}

// buildClient builds the tunnel client of one wstc entry.
func (n *Node) buildClient(c config.TunnelClient) (*tunnel.Client, error) {
	tc, err := clientTLS(c)
	if err != nil {
		return nil, err
	}
	header, err := tokenHeader(c)
	if err != nil {
		return nil, err
	}
	// The server opens streams towards its client too, and without a
	// limit a tcp:// route that leads back to its own listener through
	// this west's own tunnel took streams, and goroutines, without end.
	mo := n.opts.Mux
	mo.MaxStreams = cmp.Or(c.MaxStreams, mo.MaxStreams, defaultMaxStreams)
	return tunnel.NewClient(tunnel.ClientOptions{
		URL:       c.URL.String(),
		Name:      c.Name,
		West:      n.id,
		Lazy:      !c.Early,
		Handler:   n.far,
		TLSConfig: tc,
		Header:    header,
		Mux:       mo,
		Logger:    n.log.With("part", "tunnel-client"),
		OnSession: n.onSession(control.RoleClient), // metrics; see control.go

		OnPeerDraining: n.peerDraining,
		// As the tunnel server's are (see addTunnelServer).
		OnOverloaded: func() { n.onDialError(wire.CodeOverloaded) },
	}), nil
}

// DefaultMaxStreams is how many streams one tunnel client may have open
// towards the tunnel server when wsts.max_streams is not set, and a
// tunnel server towards a tunnel client.
const DefaultMaxStreams = 8192

// defaultMaxStreams is DefaultMaxStreams, which tests lower: the race
// detector allows no more than 8128 goroutines.
var defaultMaxStreams = DefaultMaxStreams

func (n *Node) addTunnelServer(s *config.TunnelServer) error {
	tc, err := serverTLS(s)
	if err != nil {
		return err
	}
	g, err := newGate(s, n.log.With("part", "tunnel-server"))
	if err != nil {
		return err
	}
	n.useGate(g)
	n.warnGate(s, g)
	mo := n.opts.Mux
	mo.MaxStreams = cmp.Or(s.MaxStreams, defaultMaxStreams)
	n.server = tunnel.NewServer(tunnel.ServerOptions{
		Handler: n.far,
		Admit:   func(r *http.Request, name string) error { return n.gate.Load().admit(r, name) },
		Mux:     mo,
		Logger:  n.log.With("part", "tunnel-server"),

		OnSession:      n.onSession(control.RoleServer), // metrics; see control.go
		OnShed:         n.metrics.TunnelShed,
		OnPeerDraining: n.peerDraining,
		// Refused before the far side sees them, but refused by this
		// west all the same, as a stopping west's are.
		OnOverloaded: func() { n.onDialError(wire.CodeOverloaded) },
	})
	n.addServer("tunnel", s.URL.String(), s.Addr, onlyPath(s.Path, n.server), nil)
	l := n.servers[len(n.servers)-1]
	srv := l.srv.(*http.Server)
	// Connections leave the server's count of handshakes when upgraded
	// or closed; listen puts its Listener under TLS.
	srv.ConnState = n.server.ConnState
	// A tunnel server answers only upgrades; any other answer (a refusal,
	// a 404) closes the connection, which would otherwise hold a place
	// among the handshakes (see tunnel.Server.Listener) until it idled out.
	srv.SetKeepAlivesEnabled(false)
	if tc != nil {
		srv.ErrorLog = log.New(&tlsErrorLog{log: n.log.With("part", "tunnel-server"), onFail: n.metrics.TunnelTLSFailed}, "", 0)
		n.tunnelTLS.Store(tc)
		// Each handshake takes the configuration in force, so that a
		// certificate renewed on disk is served from the next reload on.
		l.tls = &tls.Config{
			GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return n.tunnelTLS.Load(), nil },
		}
	}
	return nil
}

// onlyPath serves h at path p alone. A ServeMux pattern ending in a slash
// would take every path below it, so that the default "/" took any: a
// client whose ea names the wrong path must be told, not connected. The
// path is compared decoded, as ServeMux compares it, but an escaped slash
// is no separator, as it is none for ServeMux: "/t%2Fx" is not "/t/x".
func onlyPath(p string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// RawPath is set when the path was escaped otherwise than net/url
		// would, which an escaped slash always is.
		raw := r.URL.RawPath
		if r.URL.Path != p || strings.Contains(raw, "%2F") || strings.Contains(raw, "%2f") {
			http.Error(w, "no tunnel server at this path", http.StatusNotFound)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// useGate makes g the tunnel server's admission, counting its refusals
// and ending their waits when the node stops.
func (n *Node) useGate(g *gate) {
	g.onRefuse = n.metrics.TunnelRefused
	g.stop = n.stopping
	n.gate.Store(g)
}

// warnGate says, at start and at each reload (which may take wsts.tokens
// or client_ca_file away), which tokens are short, and loudly when anyone
// who reaches the tunnel server may connect.
func (n *Node) warnGate(s *config.TunnelServer, g *gate) {
	for _, w := range g.weak {
		n.log.Warn("tunnel token: " + w)
	}
	if w := g.openWarning(s); w != "" {
		n.log.Warn(w, "sp", s.URL.String())
	}
}

func (n *Node) addServer(role, name, addr string, h http.Handler, after func()) {
	n.servers = append(n.servers, &listener{role: role, name: name, addr: addr, after: after, srv: n.httpServer(h)})
}

func (n *Node) httpServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelDebug),
		// "OPTIONS *" goes to the handler too, whose access lists and
		// methods hold for it as for any path; net/http's server would
		// answer it 200 itself.
		DisableGeneralOptionsHandler: true,
	}
}

// tcpOptions are the options of tcp:// listener p.
func (n *Node) tcpOptions(p config.Proxy, clients map[string]*tunnel.Client) (proxy.TCPOptions, error) {
	dialer, peer, allow, err := n.rawProxyParts(p, clients)
	return proxy.TCPOptions{
		Name: p.URL.String(), Peer: peer, Target: p.Target.Host,
		Dialer: dialer, Allow: allow, Logger: n.log.With("part", "proxy"),
		Observe: n.observeTCP, // metrics; see control.go
	}, err
}

// udpOptions are the options of udp:// listener p.
func (n *Node) udpOptions(p config.Proxy, clients map[string]*tunnel.Client) (proxy.UDPOptions, error) {
	dialer, peer, allow, err := n.rawProxyParts(p, clients)
	return proxy.UDPOptions{
		Name: p.URL.String(), Peer: peer, PeerDialed: p.ServerURL != nil, Target: p.Target.Host,
		Dialer: dialer, Allow: allow, Logger: n.log.With("part", "proxy"),
		OnDialError: n.countPeerDown, // metrics; see control.go
		OnDropped:   n.udpDropped(p.URL.String()),
		MaxFlows:    p.MaxConns,
	}, err
}

// rawProxyParts are what a tcp:// or udp:// listener's options share.
func (n *Node) rawProxyParts(p config.Proxy, clients map[string]*tunnel.Client) (proxy.Dialer, string, func(netip.Addr) bool, error) {
	dialer, peer, err := n.dialerFor(p, clients)
	if err != nil {
		return nil, "", nil, err
	}
	allow, err := allowFunc(p.ACL, fmt.Sprintf("proxy[%q].ca", p.URL.String()))
	return dialer, peer, allow, err
}

// dialerFor returns how proxy p reaches its peer.
func (n *Node) dialerFor(p config.Proxy, clients map[string]*tunnel.Client) (proxy.Dialer, string, error) {
	if p.ServerURL != nil {
		c := clients[p.ServerURL.String()]
		if c == nil {
			return nil, "", fmt.Errorf("proxy %s: no tunnel client for %s", p.URL, p.ServerURL)
		}
		return c, p.ServerURL.String(), nil
	}
	if n.server == nil {
		return nil, "", fmt.Errorf("proxy %s: en %q needs a tunnel server (wsts.sp) for the peer to connect to", p.URL, p.Peer)
	}
	peer := p.Peer
	return proxy.DialerFunc(func(ctx context.Context, h wire.Header) (net.Conn, error) {
		return n.server.Dial(ctx, peer, h)
	}), peer, nil
}

func (n *Node) addProxy(p config.Proxy) error {
	l, err := n.buildProxy(p, n.clients)
	if err != nil {
		return err
	}
	n.servers = append(n.servers, l)
	return nil
}

// buildProxy builds the listener of proxy p, reaching its peer through
// clients, without opening its socket.
func (n *Node) buildProxy(p config.Proxy, clients map[string]*tunnel.Client) (*listener, error) {
	l := &listener{role: "proxy", name: p.URL.String(), addr: p.Addr, maxConns: p.MaxConns, proxy: p}
	switch p.Kind {
	case config.KindUDP:
		o, err := n.udpOptions(p, clients)
		if err != nil {
			return nil, err
		}
		l.srv = proxy.NewUDP(o)
		return l, nil
	case config.KindTCP:
		o, err := n.tcpOptions(p, clients)
		if err != nil {
			return nil, err
		}
		l.srv = proxy.NewTCP(o)
		return l, nil
	}
	h, err := n.buildHTTP(p, clients)
	if err != nil {
		return nil, err
	}
	l.handler = &swapHandler{}
	l.handler.h.Store(h)
	l.srv = proxy.NewServer(l.handler.current, n.httpServer(l.handler))
	l.after = func() { l.handler.current().Retire() }
	return l, nil
}

// buildHTTP builds the handler of an http:// proxy listener.
func (n *Node) buildHTTP(p config.Proxy, clients map[string]*tunnel.Client) (*proxy.HTTP, error) {
	dialer, peer, err := n.dialerFor(p, clients)
	if err != nil {
		return nil, err
	}
	routes := make([]proxy.Route, 0, len(p.Routes))
	for _, r := range p.Routes {
		allow, err := allowFunc(r.ACL, fmt.Sprintf("proxy[%q][%q].ca", p.URL.String(), r.Path))
		if err != nil {
			return nil, err
		}
		routes = append(routes, proxy.Route{Path: r.Path, Target: r.Outgoing, Allow: allow})
	}
	tc, err := backendTLS(p)
	if err != nil {
		return nil, err
	}
	return proxy.NewHTTP(proxy.HTTPOptions{
		Name:        p.URL.String(),
		Peer:        peer,
		PeerDialed:  p.ServerURL != nil, // as dialerFor chose
		Routes:      routes,
		Dialer:      dialer,
		Timeout:     p.Timeout,
		TLSConfig:   tc,
		Logger:      n.log.With("part", "proxy"),
		Observe:     n.observeHTTP, // metrics; see control.go
		BriefErrors: p.BriefErrors,
		// Its routes' names in West-Via, by which each knows a request
		// that comes back to it around a loop of wests, derive from this
		// (see proxy.HTTPOptions.Via): the same for the listener's life,
		// and no other west's or listener's.
		Via: n.id + " " + p.URL.String(),
	}), nil
}

// swapHandler is an HTTP listener's handler that Reload can replace while
// the listener keeps its socket and its connections.
type swapHandler struct{ h atomic.Pointer[proxy.HTTP] }

func (s *swapHandler) current() *proxy.HTTP { return s.h.Load() }

func (s *swapHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.h.Load().ServeHTTP(w, r)
}

// boundAddr is the address s listens on, "" before it does.
func (s *listener) boundAddr() string {
	switch {
	case s.ln != nil:
		return s.ln.Addr().String()
	case s.pc != nil:
		return s.pc.LocalAddr().String()
	}
	return ""
}

// closeSocket stops s accepting connections or datagrams.
func (s *listener) closeSocket() {
	if s.ln != nil {
		s.ln.Close()
	}
	if s.pc != nil {
		s.pc.Close()
	}
}

// allowFunc turns an access list into a check of client addresses; nil
// when the list is empty.
func allowFunc(entries []string, path string) (func(netip.Addr) bool, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	l, err := acl.Parse(entries, false)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return l.AllowAddr, nil
}

// Start opens every listener. It fails at once, naming the address, if
// one cannot be opened; nothing is left open then.
func (n *Node) Start() error {
	n.startOnce.Do(func() {
		for _, s := range n.servers {
			if err := n.listen(s); err != nil {
				n.closeListeners()
				n.startErr = err
				return
			}
		}
	})
	return n.startErr
}

// listen opens the socket of s.
func (n *Node) listen(s *listener) error {
	if err := n.openSocket(s); err != nil {
		return listenFailed(s, heldBy(s, err, n.servers))
	}
	return nil
}

// listenFailed says which listener err, from openSocket, kept closed.
func listenFailed(s *listener, err error) error {
	if _, ok := s.srv.(*proxy.UDP); ok {
		return fmt.Errorf("listen for %s %s on udp %s: %w", s.role, s.name, s.addr, err)
	}
	return fmt.Errorf("listen for %s %s on %s: %w", s.role, s.name, s.addr, err)
}

// openSocket is listen without naming s in its error, which the control
// port shows beside the listener's name already.
func (n *Node) openSocket(s *listener) error {
	if _, ok := s.srv.(*proxy.UDP); ok {
		pc, err := net.ListenPacket("udp", s.addr)
		if err != nil {
			return err
		}
		s.pc = pc
		return nil
	}
	ln, err := n.opts.Listen("tcp", s.addr)
	if err != nil {
		return err
	}
	// Out of descriptors, a client is turned away at once. A listener
	// that speaks plain HTTP answers 503, without why if its
	// error_detail says so. One under TLS closes the connection: an
	// answer the client could read needs a handshake, and crypto/tls a
	// net.Conn, which takes a descriptor more. A tcp:// listener closes
	// it too: its protocol is not west's to answer in.
	var answer func() []byte
	if _, raw := s.srv.(*proxy.TCP); s.tls == nil && !raw {
		answer = func() []byte {
			// The handler in force: a reload may change error_detail
			// on the same socket.
			if s.handler != nil && s.handler.current().BriefErrors() {
				return outOfFilesBrief
			}
			return outOfFiles
		}
	}
	ln = sockio.ShedListener(ln, answer)
	ln = &acceptLogger{Listener: ln, log: n.log.With("role", s.role, "name", s.name)}
	ln = sockio.WrapListener(ln) // first, so that the wrappers below keep its connections
	if s.role == "proxy" {
		ln = proxy.NewLocalListener(ln, &n.locals) // inside its limit, which counts streams too
		// Every http:// and tcp:// listener has a limit, unbounded without
		// max_conns, so that a reload can add or take away the bound in place.
		s.limit = proxy.LimitListener(ln, s.maxConns)
		if ps, ok := s.srv.(*proxy.Server); ok {
			// At max_conns, a new client takes the place of the one
			// idle longest between requests.
			s.limit.SetReclaim(ps.CloseIdlest)
		}
		ln = s.limit
	}
	if s.role == "tunnel" {
		// Under TLS, so that a connection shed costs no TLS handshake.
		ln = n.server.Listener(ln)
	}
	if s.tls != nil {
		ln = tls.NewListener(ln, s.tls)
	}
	s.ln = ln
	return nil
}

// outOfFiles is the answer of a listener that speaks plain HTTP to a
// client it turns away for want of a file descriptor (see openSocket),
// and outOfFilesBrief that of an http:// listener whose error_detail is
// "no", which gives the status alone, as its other error answers do.
var outOfFiles, outOfFilesBrief = serviceUnavailable(": the server is out of file descriptors"), serviceUnavailable("")

// serviceUnavailable is a 503 answer whose body says why after the status.
func serviceUnavailable(why string) []byte {
	body := "west: 503 Service Unavailable" + why + "\n"
	return fmt.Appendf(nil, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"+
		"Content-Length: %d\r\nConnection: close\r\nRetry-After: 1\r\n\r\n%s", len(body), body)
}

// acceptLogger logs the errors its listener's Accept returns, at most one
// a second with a count of those held back. The servers behind it wait
// and retry, as net/http does, but say nothing, or only at debug: a west
// out of file descriptors would leave its clients waiting in the backlog
// with no word of why, or, since it turns them away (sockio.ShedListener),
// refuse them with none. The first accept that succeeds after failures
// says so, with the clients turned away that no line has counted yet, at
// most once a second too: at its descriptor limit, a listener fails and
// succeeds in turn, as often as every 5ms. One held back is logged by an
// accept that succeeds a second or more after the last.
type acceptLogger struct {
	net.Listener
	log      *slog.Logger
	warnLog  lograte.Limit
	againLog lograte.Limit
	shed     atomic.Int64 // clients turned away since the last line
	failed   atomic.Int64 // accepts failed since the last "accepting again"
}

func (l *acceptLogger) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		if l.failed.Load() != 0 {
			l.recovered()
		}
		return c, nil
	}
	if !errors.Is(err, net.ErrClosed) {
		l.failed.Add(1)
		var shed *sockio.ShedError
		if errors.As(err, &shed) {
			l.shed.Add(int64(shed.Clients))
		}
		if ok, skipped := l.warnLog.Allow(); ok {
			msg := "accept failed; clients wait until it succeeds"
			args := []any{"err", err, "not_logged_since", skipped}
			if n := l.shed.Swap(0); n > 0 {
				msg = "accept failed; clients are turned away until it succeeds"
				args = append(args, "turned_away", n)
			}
			if hint := sockio.LimitHint(err); hint != "" {
				args = append(args, "hint", hint)
			}
			l.log.Warn(msg, args...)
		}
		if retryAccept(err) {
			err = temporaryError{err}
		}
	}
	return c, err
}

// recovered logs the end of a run of failed accepts, or of those since
// the last line that said so, if a line may pass.
func (l *acceptLogger) recovered() {
	if ok, _ := l.againLog.Allow(); !ok {
		return
	}
	args := []any{"failed", l.failed.Swap(0)}
	if n := l.shed.Swap(0); n > 0 {
		args = append(args, "turned_away", n)
	}
	l.log.Info("accepting again", args...)
}

// retryAccept reports whether err, from accept(2), passes as EMFILE does,
// though net.Error does not call it temporary: short of socket memory, or
// one of the errors of the connection accepted that accept(2) reports in
// its stead, for which the Linux manual says to retry. The servers behind
// the listener retry only what is temporary, and end on the rest, and
// with them this west.
func retryAccept(err error) bool {
	for _, e := range []syscall.Errno{syscall.ENOBUFS, syscall.ENOMEM, syscall.EPERM, syscall.EPROTO,
		syscall.ENETDOWN, syscall.ENETUNREACH, syscall.EHOSTDOWN, syscall.EHOSTUNREACH, syscall.ENOPROTOOPT} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// temporaryError is an accept error that the servers retry after a wait.
type temporaryError struct{ error }

func (e temporaryError) Unwrap() error   { return e.error }
func (e temporaryError) Timeout() bool   { return false }
func (e temporaryError) Temporary() bool { return true }

func (n *Node) closeListeners() {
	for _, s := range n.servers {
		s.closeSocket()
	}
}

// Run starts the node if Start has not, serves until ctx ends, then drains:
// it stops accepting, lets requests in flight finish for ShutdownGrace
// (tunnels stay up meanwhile, since they carry those requests), closes the
// tunnels, and returns once everything has stopped.
func (n *Node) Run(ctx context.Context) error {
	if err := n.Start(); err != nil {
		return err
	}
	// Requests and tunnels live on hard, which ends only after the drain,
	// not on ctx, which ends when the drain begins.
	hard, stopHard := context.WithCancel(context.Background())
	defer stopHard()
	g, gctx := errgroup.WithContext(hard)
	n.mu.Lock()
	n.group, n.groupCtx, n.running = g, gctx, true
	close(n.runningCh)
	n.clientStops = make(map[string]context.CancelFunc)
	for _, s := range n.servers {
		n.serveLocked(s)
	}
	for url, c := range n.clients {
		n.startClientLocked(url, c)
	}
	n.mu.Unlock()
	g.Go(func() error {
		select {
		case <-ctx.Done():
		case <-gctx.Done(): // a listener failed
		}
		n.mu.Lock()
		n.running = false // no more reloads
		n.mu.Unlock()
		n.shutdown()
		stopHard()
		return nil
	})
	return g.Wait()
}

// Running is closed once Run serves, from when Reload applies.
func (n *Node) Running() <-chan struct{} { return n.runningCh }

// serveLocked serves s in the run group. n.mu must be held.
func (n *Node) serveLocked(s *listener) {
	gctx := n.groupCtx
	hs, ok := s.srv.(*http.Server)
	if ps, isProxy := s.srv.(*proxy.Server); isProxy {
		hs, ok = ps.HTTPServer(), true
	}
	if ok {
		hs.BaseContext = func(net.Listener) context.Context { return gctx }
	}
	n.log.Info("listening", "role", s.role, "name", s.name, "addr", s.boundAddr())
	n.group.Go(func() error {
		var err error
		if u, ok := s.srv.(*proxy.UDP); ok {
			err = u.ServePacket(s.pc)
		} else {
			err = s.srv.(streamServer).Serve(s.ln)
		}
		if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
			return nil
		}
		return fmt.Errorf("serve %s %s: %w", s.role, s.name, err)
	})
}

// startClientLocked runs tunnel client c in the run group until the node
// stops or Reload removes it. n.mu must be held.
func (n *Node) startClientLocked(url string, c *tunnel.Client) {
	ctx, cancel := context.WithCancel(n.groupCtx)
	n.clientStops[url] = cancel
	n.log.Debug("starting tunnel client", "server", url)
	n.group.Go(func() error {
		err := c.Run(ctx) // returns once its tunnel has closed
		n.forgetRemovedClient(url)
		return err
	})
}

// forgetRemovedClient drops the metric series of the tunnel client of
// server url, which has stopped, unless the configuration names url: a
// client a reload removed would otherwise show down, as one that should
// be up, until 256 other peers had gone down after it. A client a reload
// kept, replaced or added back keeps them.
func (n *Node) forgetRemovedClient(url string) {
	// Under the lock, as a reload sets the configuration: one that adds
	// url back comes wholly before this or after it.
	n.mu.Lock()
	defer n.mu.Unlock()
	if slices.ContainsFunc(n.cfg.Clients, func(c config.TunnelClient) bool { return c.URL.String() == url }) {
		return
	}
	n.metrics.ForgetTunnel(control.RoleClient, url)
}

func (n *Node) shutdown() {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), n.opts.ShutdownGrace)
	defer cancel()
	n.log.Info("draining", "grace", n.opts.ShutdownGrace)
	// Before the sessions are read: one that registers meanwhile is read,
	// or sees drainCtx (onSession), or both.
	n.drainCtx.Store(&ctx)
	n.locals.Stop() // before the listeners close
	noticed := n.noticeDrain(ctx, n.sessions()...)
	n.mu.Lock()
	servers := slices.Clone(n.servers)
	n.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range servers {
		if s.role == "tunnel" || s.role == "control" {
			// Tunnels carry the requests being drained; the control port
			// shows the drain (health 503, metrics) until it ends.
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.srv.Shutdown(ctx); err != nil {
				s.srv.Close()
			}
			if s.after != nil {
				s.after()
			}
		}()
	}
	wg.Wait()
	// So do the listeners a reload removed, whose requests the tunnels
	// carry as well.
	drained := make(chan struct{})
	go func() {
		n.drains.Wait()
		close(drained)
	}()
	select {
	case <-drained:
	case <-ctx.Done():
	}
	// Streams our peers opened through us finish too, within the grace:
	// HTTP ones end as their exchanges do, once the peers have our notice.
	// New ones are taken for half the grace at most, so that those taken
	// have time to finish.
	<-noticed
	if err := n.far.Wait(ctx, start.Add(n.opts.ShutdownGrace/2)); err != nil {
		n.log.Warn("drain deadline reached with streams still open; closing them")
	}
	// Their last bytes may still wait in a tunnel's send queue, of a
	// retiring client's tunnel too.
	n.mu.Lock()
	sessions := n.sessionsLocked()
	for c := range n.retiring {
		if sess := c.Status().Session; sess != nil {
			sessions = append(sessions, sess)
		}
	}
	n.mu.Unlock()
	for _, sess := range sessions {
		sess.WaitSent(ctx)
	}
	close(n.stopping)
	for _, s := range servers {
		if s.role == "tunnel" || s.role == "control" {
			s.srv.Close()
		}
	}
	if n.server != nil {
		n.server.Close()
	}
	n.log.Info("stopped", "drain", time.Since(start).Round(time.Millisecond))
}

// drainNoticeWait bounds the wait for the peers' answers to a drain
// notice; a peer that does not answer in time has its HTTP streams judged
// by their silence instead.
const drainNoticeWait = 2 * time.Second

// noticeDrain tells the peers of sessions, in the background, that this
// west drains (tunnel.Session.NoticeDrain); the channel closes once all
// have answered or drainNoticeWait has passed.
func (n *Node) noticeDrain(ctx context.Context, sessions ...*tunnel.Session) <-chan struct{} {
	ctx, cancel := context.WithTimeout(ctx, drainNoticeWait)
	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, sess := range sessions {
		wg.Go(func() {
			if err := sess.NoticeDrain(ctx); err != nil {
				// An older west: its HTTP streams through us are judged
				// by their silence, and those it keeps idle may hold a
				// retiring client for the grace.
				n.log.Info("peer not told of the drain",
					"peer", sess.Peer(), "err", err)
			}
		})
	}
	go func() {
		wg.Wait()
		cancel()
		close(done)
	}()
	return done
}

// peerDraining is told that a peer drains: the HTTP listeners that send
// to it stop keeping streams to it idle.
func (n *Node) peerDraining(sess *tunnel.Session) {
	n.mu.Lock()
	servers := slices.Clone(n.servers)
	n.mu.Unlock()
	for _, s := range servers {
		if s.handler != nil {
			s.handler.current().PeerDraining(sess.Peer(), sess.Dialed(), sess.Done())
		}
		if u, ok := s.srv.(*proxy.UDP); ok && !sess.Dialed() {
			u.PeerDraining(sess.Peer(), false, sess.Done(), func() bool { return n.liveTunnel(sess.Peer()) })
		}
	}
}

// liveTunnel reports whether the tunnel server has a tunnel up under
// peer whose west does not drain: where its new streams go.
func (n *Node) liveTunnel(peer string) bool {
	for _, s := range n.server.Sessions() {
		if s.Peer() != peer || s.PeerDraining() {
			continue
		}
		select {
		case <-s.Done():
		default:
			return true
		}
	}
	return false
}

// tellDrainingLocked tells handlers and udps, new to their listeners, of
// the peers that have begun to drain, as peerDraining told those before
// them: a UDP flow may start on a draining tunnel, the only one to its
// peer (tunnel.Server.Dial), and must leave it once another is up.
// n.mu must be held.
func (n *Node) tellDrainingLocked(handlers []*proxy.HTTP, udps []*proxy.UDP) {
	if len(handlers) == 0 && len(udps) == 0 {
		return
	}
	for _, sess := range n.sessionsLocked() {
		if !sess.PeerDraining() {
			continue
		}
		for _, h := range handlers {
			h.PeerDraining(sess.Peer(), sess.Dialed(), sess.Done())
		}
		if sess.Dialed() {
			continue // as peerDraining
		}
		for _, u := range udps {
			u.PeerDraining(sess.Peer(), false, sess.Done(), func() bool { return n.liveTunnel(sess.Peer()) })
		}
	}
}

// sessions returns the tunnels up now: the server's and the clients'.
func (n *Node) sessions() []*tunnel.Session {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.sessionsLocked()
}

// sessionsLocked is sessions with n.mu held.
func (n *Node) sessionsLocked() []*tunnel.Session {
	var all []*tunnel.Session
	if n.server != nil {
		all = n.server.Sessions()
	}
	for _, c := range n.clients {
		if sess := c.Status().Session; sess != nil {
			all = append(all, sess)
		}
	}
	return all
}

// Addrs are the addresses a started node listens on, by role and config
// key, so that tests can configure port 0 and find the real ports.
type Addrs struct {
	Tunnel  string            // the tunnel server, "" without one
	Control string            // the control port, "" without one
	Proxies map[string]string // listen URL as configured -> bound address
}

// Addrs returns the bound addresses; call it after Start.
func (n *Node) Addrs() Addrs {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.addrsLocked()
}

// addrsLocked is Addrs with n.mu held.
func (n *Node) addrsLocked() Addrs {
	a := Addrs{Proxies: make(map[string]string)}
	for _, s := range n.servers {
		addr := s.boundAddr()
		if addr == "" {
			continue
		}
		switch s.role {
		case "tunnel":
			a.Tunnel = addr
		case "control":
			a.Control = addr
		case "proxy":
			a.Proxies[s.name] = addr
		}
	}
	return a
}

// Client returns the tunnel client for a server URL, or nil.
func (n *Node) Client(url string) *tunnel.Client {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.clients[url]
}

// Server returns the tunnel server, or nil.
func (n *Node) Server() *tunnel.Server { return n.server }
