package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/west-tunnel/west/internal/config"
	"github.com/west-tunnel/west/internal/proxy"
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
}

// Node is one running west.
type Node struct {
	cfg  *config.Config
	opts Options
	log  *slog.Logger

	far     *proxy.Far
	server  *tunnel.Server            // nil without wsts.sp
	clients map[string]*tunnel.Client // by server URL
	servers []*listener               // tunnel server, proxy listeners, control port

	startOnce sync.Once
	startErr  error
}

// server is what serves a listening socket: an *http.Server or a
// *proxy.TCP.
type server interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
	Close() error
}

// listener is one listening socket and the server behind it.
type listener struct {
	role string // "tunnel", "proxy" or "control", for logs and Addrs
	name string // the config key or address it came from
	addr string // the configured address
	srv  server
	ln   net.Listener
	// after runs once the server has stopped, to release what it used.
	after func()
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
		opts.ShutdownGrace = 5 * time.Second
	}
	n := &Node{cfg: cfg, opts: opts, log: opts.Logger, clients: make(map[string]*tunnel.Client)}
	n.far = &proxy.Far{Logger: n.log.With("part", "far")}

	if s := cfg.Server; s != nil {
		n.server = tunnel.NewServer(tunnel.ServerOptions{
			Handler: n.far,
			Mux:     opts.Mux,
			Logger:  n.log.With("part", "tunnel-server"),
		})
		mux := http.NewServeMux()
		mux.Handle(s.Path, n.server)
		n.addServer("tunnel", s.URL.String(), s.Addr, mux, nil)
	}
	for _, c := range cfg.Clients {
		n.clients[c.URL.String()] = tunnel.NewClient(tunnel.ClientOptions{
			URL:     c.URL.String(),
			Name:    c.Name,
			Lazy:    !c.Early,
			Handler: n.far,
			Mux:     opts.Mux,
			Logger:  n.log.With("part", "tunnel-client"),
		})
	}
	for _, p := range cfg.Proxies {
		if err := n.addProxy(p); err != nil {
			return nil, err
		}
	}
	if cfg.West.ControlAddr != "" {
		n.addServer("control", cfg.West.ControlAddr, cfg.West.ControlAddr, n.controlHandler(), nil)
	}
	return n, nil
}

func (n *Node) addServer(role, name, addr string, h http.Handler, after func()) {
	n.servers = append(n.servers, &listener{
		role: role, name: name, addr: addr, after: after,
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       120 * time.Second,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelDebug),
		},
	})
}

// dialerFor returns how proxy p reaches its peer.
func (n *Node) dialerFor(p config.Proxy) (proxy.Dialer, string, error) {
	if p.ServerURL != nil {
		c := n.clients[p.ServerURL.String()]
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
	dialer, peer, err := n.dialerFor(p)
	if err != nil {
		return err
	}
	if p.Kind == config.KindTCP {
		n.servers = append(n.servers, &listener{
			role: "proxy", name: p.URL.String(), addr: p.Addr,
			srv: proxy.NewTCP(proxy.TCPOptions{
				Name:   p.URL.String(),
				Peer:   peer,
				Target: p.Target.Host,
				Dialer: dialer,
				Logger: n.log.With("part", "proxy"),
			}),
		})
		return nil
	}
	routes := make([]proxy.Route, 0, len(p.Routes))
	for _, r := range p.Routes {
		routes = append(routes, proxy.Route{Path: r.Path, Target: r.Outgoing})
	}
	h := proxy.NewHTTP(proxy.HTTPOptions{
		Name:    p.URL.String(),
		Peer:    peer,
		Routes:  routes,
		Dialer:  dialer,
		Timeout: p.Timeout,
		Logger:  n.log.With("part", "proxy"),
	})
	n.addServer("proxy", p.URL.String(), p.Addr, h, h.CloseIdleConnections)
	return nil
}

// Start opens every listener. It fails at once, naming the address, if
// one cannot be opened; nothing is left open then.
func (n *Node) Start() error {
	n.startOnce.Do(func() {
		for _, s := range n.servers {
			ln, err := n.opts.Listen("tcp", s.addr)
			if err != nil {
				n.closeListeners()
				n.startErr = fmt.Errorf("listen for %s %s on %s: %w", s.role, s.name, s.addr, err)
				return
			}
			s.ln = ln
		}
	})
	return n.startErr
}

func (n *Node) closeListeners() {
	for _, s := range n.servers {
		if s.ln != nil {
			s.ln.Close()
		}
	}
}

// Run starts the node if Start has not, serves until ctx ends, then stops
// accepting, lets requests in flight finish for ShutdownGrace, closes the
// tunnels, and returns once everything has stopped.
func (n *Node) Run(ctx context.Context) error {
	if err := n.Start(); err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, s := range n.servers {
		if hs, ok := s.srv.(*http.Server); ok {
			hs.BaseContext = func(net.Listener) context.Context { return gctx }
		}
		n.log.Info("listening", "role", s.role, "name", s.name, "addr", s.ln.Addr().String())
		g.Go(func() error {
			err := s.srv.Serve(s.ln)
			if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("serve %s %s: %w", s.role, s.name, err)
		})
	}
	for url, c := range n.clients {
		n.log.Debug("starting tunnel client", "server", url)
		g.Go(func() error { return c.Run(gctx) })
	}
	g.Go(func() error {
		<-gctx.Done()
		n.shutdown()
		return nil
	})
	return g.Wait()
}

func (n *Node) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), n.opts.ShutdownGrace)
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range n.servers {
		if s.role == "tunnel" {
			continue // tunnels carry the requests being drained
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
	for _, s := range n.servers {
		if s.role == "tunnel" {
			s.srv.Close()
		}
	}
	if n.server != nil {
		n.server.Close()
	}
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
	a := Addrs{Proxies: make(map[string]string)}
	for _, s := range n.servers {
		if s.ln == nil {
			continue
		}
		addr := s.ln.Addr().String()
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
func (n *Node) Client(url string) *tunnel.Client { return n.clients[url] }

// Server returns the tunnel server, or nil.
func (n *Node) Server() *tunnel.Server { return n.server }

func (n *Node) controlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprint(w, n.cfg.Render())
	})
	return mux
}
