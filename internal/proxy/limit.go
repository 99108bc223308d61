package proxy

import (
	"net"
	"sync"
	"sync/atomic"
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
}

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
	// wait in the kernel's backlog rather than here.
	if err := l.waitRoom(1); err != nil {
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
	if err := l.waitRoom(0); err != nil {
		c.Close()
		l.release()
		return nil, err
	}
	return &limitConn{Conn: c, l: l}, nil
}

// waitRoom waits until the connections open, and n more, are within the
// bound, or the listener closes.
func (l *Limited) waitRoom(n int64) error {
	woken := false
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
		select {
		case <-l.wake:
			woken = true
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
