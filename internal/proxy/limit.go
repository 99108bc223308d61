package proxy

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// LimitListener returns a listener that has at most n accepted connections
// open at once; n <= 0 means no bound. Beyond the bound it stops
// accepting, so further clients wait in the kernel's backlog instead of
// costing this process memory.
func LimitListener(ln net.Listener, n int) *Limited {
	l := &Limited{Listener: ln, wake: make(chan struct{}, 1), done: make(chan struct{})}
	l.max.Store(int64(max(n, 0)))
	return l
}

// Limited is a listener made by LimitListener. It counts the connections
// it has accepted and not yet closed even without a bound, so that a bound
// set later (SetLimit) counts those already open; without one, an accept
// costs an uncontended lock, two atomic loads and an atomic add.
type Limited struct {
	net.Listener
	max, open atomic.Int64 // max 0: no bound
	// accepting lets one Accept at a time count itself in open and wait
	// in the socket: two at once would both pass the look at the count,
	// and each would hold what it accepted for the other's slot.
	accepting sync.Mutex
	wake      chan struct{} // holds a token once a slot frees or the bound changes
	done      chan struct{}
	closeOnce sync.Once
	reclaim   atomic.Pointer[func() bool] // see SetReclaim
}

// SetReclaim gives l a way to make room at the bound: f closes the
// connection idle longest (an http:// listener's kept alive between
// requests) and reports whether there was one. Without it, idle
// connections would hold every slot and keep new clients in the backlog
// until the idle timeout, 120 s; with it, l accepts one client beyond the
// bound and closes an idle connection for it, as nginx reuses its idle
// keep-alive connections when it runs short of them.
func (l *Limited) SetReclaim(f func() bool) { l.reclaim.Store(&f) }

// reclaimRetry is how often a client accepted at the bound looks again
// for an idle connection to take the place of, while all are busy.
const reclaimRetry = 50 * time.Millisecond

// SetLimit changes the bound for the connections accepted from now on;
// 0 takes it away. Those open above a lowered bound stay, and count.
func (l *Limited) SetLimit(n int) {
	l.max.Store(int64(max(n, 0)))
	l.signal()
}

// signal wakes an Accept waiting for a slot, or the next one to wait.
// The token is kept in the channel's buffer, so that a wake-up sent
// between an Accept's look at the count and its wait is not lost.
func (l *Limited) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *Limited) Accept() (net.Conn, error) {
	l.accepting.Lock()
	defer l.accepting.Unlock()
	// Wait for a slot before accepting, so that clients beyond the bound
	// wait in the kernel's backlog rather than here; with a way to make
	// room, one waits here, holding a slot beyond the bound, while an idle
	// connection is closed for it.
	var reclaim func() bool
	ahead := int64(1)
	if f := l.reclaim.Load(); f != nil {
		reclaim, ahead = *f, 0
	}
	if err := l.waitRoom(ahead, nil); err != nil {
		return nil, err
	}
	l.open.Add(1)
	c, err := l.Listener.Accept()
	if err != nil {
		l.release()
		return nil, err
	}
	// A bound set or lowered while that accept waited in the kernel holds
	// the connection until it has a slot, as the backlog would have.
	if err := l.waitRoom(0, reclaim); err != nil {
		c.Close()
		l.release()
		return nil, err
	}
	return &limitConn{Conn: c, l: l}, nil
}

// waitRoom waits until the connections open, and n more, are within the
// bound, or the listener closes. reclaim, if not nil, is called to close
// an idle connection meanwhile.
func (l *Limited) waitRoom(n int64, reclaim func() bool) error {
	woken := false
	var retry <-chan time.Time
	for {
		bound := l.max.Load()
		if bound == 0 {
			return nil
		}
		if open := l.open.Load() + n; open <= bound {
			if woken && open < bound {
				l.signal() // room for another Accept waiting, if any
			}
			return nil
		}
		// A connection reclaimed wakes this wait as its close releases
		// its slot; with none idle, one may turn idle without a wake-up.
		if retry = nil; reclaim != nil && !reclaim() {
			retry = time.After(reclaimRetry)
		}
		select {
		case <-l.wake:
			woken = true
		case <-retry:
		case <-l.done:
			return net.ErrClosed
		}
	}
}

func (l *Limited) release() {
	l.open.Add(-1)
	// Unbounded, no Accept waits; one that SetLimit bounds after this
	// load is woken by SetLimit's own signal.
	if l.max.Load() > 0 {
		l.signal()
	}
}

func (l *Limited) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	closed atomic.Bool
	l      *Limited
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	if c.closed.CompareAndSwap(false, true) {
		c.l.release()
	}
	return err
}

// CloseWrite keeps half-close working through the limit.
func (c *limitConn) CloseWrite() error {
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

var _ vectorWriter = (*limitConn)(nil)

// WriteVec keeps the request loop's head and body leaving in one system
// call (fastWriter.writeBoth) through the limit, which every http://
// listener's socket goes through.
func (c *limitConn) WriteVec(bufs [][]byte) (int64, error) {
	if vw, ok := c.Conn.(vectorWriter); ok {
		return vw.WriteVec(bufs)
	}
	b := net.Buffers(bufs)
	return b.WriteTo(c.Conn)
}
