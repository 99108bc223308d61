package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/west-tunnel/west/internal/acl"
	"github.com/west-tunnel/west/internal/lograte"
	"github.com/west-tunnel/west/internal/wire"
)

// TCPOptions configures a raw TCP listener.
type TCPOptions struct {
	Name   string // labels the listener in logs (its listen URL)
	Peer   string // labels the tunnel peer in logs
	Target string // host:port the far side connects each connection to
	Dialer Dialer // opens tunnel streams. Required.
	// Allow decides whether a client at addr may connect; nil allows all.
	Allow func(addr netip.Addr) bool
	// DialTimeout bounds opening the tunnel stream. Zero means 15s.
	DialTimeout time.Duration
	// Logger receives logs; nil discards them.
	Logger *slog.Logger
	// Observe, if set, is told of every finished connection.
	Observe func(Record)
}

// TCP serves a tcp:// listener: each accepted connection becomes one
// tunnel stream, piped with half-close until both sides end. It has the
// Serve/Shutdown/Close shape of http.Server.
type TCP struct {
	route atomic.Pointer[tcpRoute] // Reroute replaces it

	ctx    context.Context // ends every connection on Close
	cancel context.CancelFunc
	conns  sync.WaitGroup

	mu  sync.Mutex
	lns []net.Listener
	// open holds the clients' connections being served, each with what
	// ends it: closing a client's socket alone would leave the pipe of a
	// client that had half-closed waiting on its stream.
	open map[net.Conn]context.CancelFunc
	// warnLog passes one warning a second (see serveConn).
	warnLog lograte.Limit
	// closed is set once Shutdown or Close begins. Connections are
	// counted in conns only before it, under mu, so that no count is
	// added while Shutdown or Close waits for it to reach zero.
	closed bool
}

// tcpRoute is what a TCP listener's new connections are served by.
type tcpRoute struct {
	opts TCPOptions
	log  *slog.Logger
}

func newTCPRoute(opts TCPOptions) *tcpRoute {
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 15 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &tcpRoute{opts: opts, log: log.With("listener", opts.Name, "peer", opts.Peer)}
}

// NewTCP returns a TCP listener's server.
func NewTCP(opts TCPOptions) *TCP {
	ctx, cancel := context.WithCancel(context.Background())
	t := &TCP{ctx: ctx, cancel: cancel, open: make(map[net.Conn]context.CancelFunc)}
	t.route.Store(newTCPRoute(opts))
	return t
}

// Reroute serves the connections that come after by opts (a reload
// changed the listener's target, peer or access list) on the same socket.
// Connections open stay on their streams, but for those whose client
// opts.Allow now refuses: they are closed, with their streams.
func (t *TCP) Reroute(opts TCPOptions) {
	t.route.Store(newTCPRoute(opts))
	if opts.Allow == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for c, end := range t.open {
		if !opts.Allow(acl.PeerAddr(c.RemoteAddr().String())) {
			end()
		}
	}
}

// Serve accepts connections on ln until it is closed. Like http.Server's,
// it returns net.ErrClosed once Shutdown or Close closed the listener, and
// at once, closing ln, when called after them.
func (t *TCP) Serve(ln net.Listener) error {
	t.mu.Lock()
	closed := t.closed
	if !closed {
		t.lns = append(t.lns, ln)
	}
	t.mu.Unlock()
	if closed {
		ln.Close()
		return net.ErrClosed
	}
	var delay time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || t.ctx.Err() != nil {
				return net.ErrClosed
			}
			// Out of descriptors and the like: wait a little, as
			// http.Server does, rather than spin. The node's listener
			// logs the error, as it does for every listener, and has
			// turned away the clients waiting (sockio.ShedListener).
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			time.Sleep(delay)
			continue
		}
		delay = 0
		ctx, ok := t.track(conn)
		if !ok {
			// Accepted as the listener closed: shutting down, we
			// serve it no more than one still in the backlog.
			conn.Close()
			return net.ErrClosed
		}
		go t.serveConn(ctx, conn)
	}
}

// track counts a connection about to be served, unless the server is
// closing, and returns the context that ends it.
func (t *TCP) track(conn net.Conn) (context.Context, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, false
	}
	t.conns.Add(1)
	ctx, end := context.WithCancel(t.ctx)
	t.open[conn] = end
	return ctx, true
}

// serveConn serves conn until it ends, or ctx does.
func (t *TCP) serveConn(ctx context.Context, conn net.Conn) {
	defer t.conns.Done()
	defer func() {
		t.mu.Lock()
		t.open[conn]()
		delete(t.open, conn)
		t.mu.Unlock()
	}()
	r := t.route.Load()
	o := &r.opts
	start := time.Now()
	rec := Record{Listener: o.Name, Method: "TCP", Path: o.Target}
	defer func() {
		rec.Duration = time.Since(start)
		// A client makes a refused connection (outside ca, peer down)
		// as often as it likes: one a second goes at Warn, the others
		// as access lines, which a verbose logger still shows.
		level, skipped := LevelAccess, 0
		if rec.Err != nil {
			if ok, n := t.warnLog.Allow(); ok {
				level, skipped = slog.LevelWarn, n
			}
		}
		args := []any{"client", conn.RemoteAddr().String(),
			"bytes_in", rec.BytesIn, "bytes_out", rec.BytesOut, "duration", rec.Duration, "err", rec.Err}
		if skipped > 0 {
			args = append(args, "not_logged_since", skipped)
		}
		r.log.Log(context.Background(), level, "connection", args...)
		if o.Observe != nil {
			o.Observe(rec)
		}
	}()
	if o.Allow != nil {
		if !o.Allow(acl.PeerAddr(conn.RemoteAddr().String())) {
			rec.Err = fmt.Errorf("client %s not in the access list", conn.RemoteAddr())
			rec.Status = 403
			conn.Close()
			return
		}
	}
	dctx, cancel := context.WithTimeout(ctx, o.DialTimeout)
	stream, err := o.Dialer.Dial(dctx, wire.Header{Kind: wire.KindTCP, Target: o.Target, Hops: nextHops(conn)})
	cancel()
	if err != nil {
		rec.Err, rec.Status = err, statusFor(err)
		refuseConn(conn, err)
		return
	}
	rec.Status = 200
	// A client that resets, or a connection this listener ends, ends the
	// far side's connection to the target too.
	rec.BytesIn, rec.BytesOut = pipe(ctx, conn, stream, true)
}

func (t *TCP) closeListeners() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	for _, ln := range t.lns {
		ln.Close()
	}
}

// Shutdown stops accepting and waits for open connections to end, until
// ctx ends; then it closes them and returns ctx's error.
func (t *TCP) Shutdown(ctx context.Context) error {
	t.closeListeners()
	done := make(chan struct{})
	go func() { t.conns.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		t.Close()
		return ctx.Err()
	}
}

// Close stops accepting, closes every connection, and waits for them.
func (t *TCP) Close() error {
	t.closeListeners()
	t.cancel()
	t.conns.Wait()
	return nil
}
