package proxy

import (
	"errors"
	"net"
	"sync"
)

// LimitListener returns a listener that has at most n accepted connections
// open at once. Beyond that it stops accepting, so further clients wait in
// the kernel's backlog instead of costing this process memory.
func LimitListener(ln net.Listener, n int) *Limited {
	return &Limited{Listener: ln, max: n, wake: make(chan struct{}), done: make(chan struct{})}
}

// Limited is a listener made by LimitListener.
type Limited struct {
	net.Listener
	mu        sync.Mutex
	max, open int
	wake      chan struct{} // closed, and replaced, when a slot frees or max grows
	done      chan struct{}
	closeOnce sync.Once
}

// SetLimit changes the bound for the connections accepted from now on;
// those open above a lowered bound stay.
func (l *Limited) SetLimit(n int) {
	l.mu.Lock()
	l.max = n
	l.wakeLocked()
	l.mu.Unlock()
}

func (l *Limited) wakeLocked() {
	close(l.wake)
	l.wake = make(chan struct{})
}

func (l *Limited) Accept() (net.Conn, error) {
	for {
		l.mu.Lock()
		if l.open < l.max {
			l.open++
			l.mu.Unlock()
			break
		}
		wake := l.wake
		l.mu.Unlock()
		select {
		case <-wake:
		case <-l.done:
			return nil, net.ErrClosed
		}
	}
	c, err := l.Listener.Accept()
	if err != nil {
		l.release()
		return nil, err
	}
	return &limitConn{Conn: c, release: l.release}, nil
}

func (l *Limited) release() {
	l.mu.Lock()
	l.open--
	l.wakeLocked()
	l.mu.Unlock()
}

func (l *Limited) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// CloseWrite keeps half-close working through the limit.
func (c *limitConn) CloseWrite() error {
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

// SetLinger keeps a TCP listener's reset for a client it cannot serve
// working through the limit (see TCP.serveConn).
func (c *limitConn) SetLinger(sec int) error {
	if l, ok := c.Conn.(interface{ SetLinger(int) error }); ok {
		return l.SetLinger(sec)
	}
	return errors.ErrUnsupported
}
