package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/west-tunnel/west/internal/acl"
	"github.com/west-tunnel/west/internal/tunnel"
	"github.com/west-tunnel/west/internal/wire"
)

// Far is the far side of a tunnel: it serves streams a peer opens by
// dialling their target and piping bytes both ways.
type Far struct {
	// DialTimeout bounds the connection to a target. Zero means 10s.
	DialTimeout time.Duration
	// Allow decides whether peer may make this west dial h.Target; a
	// non-nil error refuses the stream with its text. Nil allows all.
	Allow func(peer string, h wire.Header) error
	// Targets is the dial policy: a target passes when a name rule admits
	// it as asked for, or an address rule admits the address actually
	// dialled (so a name cannot resolve its way past the policy). Nil
	// allows every target.
	Targets *acl.Targets
	// Logger receives logs; nil discards them.
	Logger *slog.Logger
	// OnDialError, if set, is told of every failed dial, for metrics.
	OnDialError func(code wire.Code)
}

var _ tunnel.StreamHandler = (*Far)(nil)

// ServeStream dials the stream's target and pipes until both sides close.
func (f *Far) ServeStream(ctx context.Context, req *tunnel.Request) {
	log := f.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("peer", req.Peer, "target", req.Header.Target, "kind", req.Header.Kind)
	if f.Allow != nil {
		if err := f.Allow(req.Peer, req.Header); err != nil {
			log.Warn("stream refused by dial policy", "err", err)
			f.reject(req, wire.CodeForbidden, err.Error())
			return
		}
	}
	timeout := f.DialTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	dialer := &net.Dialer{}
	if !f.Targets.Empty() {
		host, portStr, err := net.SplitHostPort(req.Header.Target)
		port, perr := strconv.Atoi(portStr)
		if err != nil || perr != nil {
			log.Warn("stream refused: target is not host:port")
			f.reject(req, wire.CodeForbidden, fmt.Sprintf("target %q is not host:port", req.Header.Target))
			return
		}
		if !f.Targets.AllowName(host, port) {
			dialer.Control = func(_, address string, _ syscall.RawConn) error {
				if ap, err := netip.ParseAddrPort(address); err == nil && f.Targets.AllowAddr(ap) {
					return nil
				}
				return fmt.Errorf("%w: %s", errPolicy, address)
			}
		}
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	backend, err := dialer.DialContext(dctx, "tcp", req.Header.Target)
	cancel()
	if err != nil {
		code := wire.CodeDialFailed
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			code = wire.CodeTimeout
		}
		if errors.Is(err, errPolicy) {
			code = wire.CodeForbidden
			err = fmt.Errorf("target %s is outside this west's dial policy (dial_allow)", req.Header.Target)
		}
		log.Info("dial failed", "err", err)
		f.reject(req, code, err.Error())
		return
	}
	stream, err := req.Accept()
	if err != nil {
		backend.Close()
		log.Info("stream gone before reply", "err", err)
		return
	}
	log.Debug("stream connected")
	Pipe(ctx, stream, backend)
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
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			a.Close()
			b.Close()
		})
	}
	stop := context.AfterFunc(ctx, closeBoth)
	defer stop()

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		aToB = copyHalf(b, a, closeBoth)
	}()
	bToA = copyHalf(a, b, closeBoth)
	wg.Wait()
	closeBoth()
	return aToB, bToA
}

// copyHalf copies src to dst; at src's end it half-closes dst, and on an
// error it closes both sides so the other direction ends too.
func copyHalf(dst, src net.Conn, closeBoth func()) int64 {
	n, err := io.Copy(dst, src)
	if err != nil {
		closeBoth()
		return n
	}
	if cw, ok := dst.(closeWriter); ok {
		if cw.CloseWrite() == nil {
			return n
		}
	}
	closeBoth()
	return n
}
