package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/west-tunnel/west/internal/acl"
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
	opts TCPOptions
	log  *slog.Logger

	ctx    context.Context // ends every connection on Close
	cancel context.CancelFunc
	conns  sync.WaitGroup

	mu  sync.Mutex
	lns []net.Listener
	// closed is set once Shutdown or Close begins. Connections are
	// counted in conns only before it, under mu, so that no count is
	// added while Shutdown or Close waits for it to reach zero.
	closed bool
}

// NewTCP returns a TCP listener's server.
func NewTCP(opts TCPOptions) *TCP {
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 15 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &TCP{opts: opts, log: log.With("listener", opts.Name, "peer", opts.Peer), ctx: ctx, cancel: cancel}
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
			// http.Server does, rather than spin.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			t.log.Warn("accept failed", "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		if !t.track() {
			// Accepted as the listener closed: shutting down, we
			// serve it no more than one still in the backlog.
			conn.Close()
			return net.ErrClosed
		}
		go t.serveConn(conn)
	}
}

// track counts a connection about to be served, unless the server is
// closing.
func (t *TCP) track() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.conns.Add(1)
	return true
}

func (t *TCP) serveConn(conn net.Conn) {
	defer t.conns.Done()
	start := time.Now()
	rec := Record{Listener: t.opts.Name, Method: "TCP", Path: t.opts.Target}
	defer func() {
		rec.Duration = time.Since(start)
		level := LevelAccess
		if rec.Err != nil {
			level = slog.LevelWarn
		}
		t.log.Log(context.Background(), level, "connection", "client", conn.RemoteAddr().String(),
			"bytes_in", rec.BytesIn, "bytes_out", rec.BytesOut, "duration", rec.Duration, "err", rec.Err)
		if t.opts.Observe != nil {
			t.opts.Observe(rec)
		}
	}()
	if t.opts.Allow != nil {
		if !t.opts.Allow(acl.PeerAddr(conn.RemoteAddr().String())) {
			rec.Err = fmt.Errorf("client %s not in the access list", conn.RemoteAddr())
			rec.Status = 403
			conn.Close()
			return
		}
	}
	ctx, cancel := context.WithTimeout(t.ctx, t.opts.DialTimeout)
	stream, err := t.opts.Dialer.Dial(ctx, wire.Header{Kind: wire.KindTCP, Target: t.opts.Target})
	cancel()
	if err != nil {
		rec.Err, rec.Status = err, statusFor(err)
		// A reset tells the client at once that nothing is behind us.
		if l, ok := conn.(interface{ SetLinger(int) error }); ok {
			l.SetLinger(0)
		}
		conn.Close()
		return
	}
	rec.Status = 200
	rec.BytesIn, rec.BytesOut = Pipe(t.ctx, conn, stream)
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
