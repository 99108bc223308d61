package testutil

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Relay is a TCP relay on loopback that forwards every connection it
// accepts to a target and can inject faults on the path: abrupt resets,
// a black hole that keeps connections open but moves no bytes, refused
// connections and added latency.
type Relay struct {
	ln net.Listener

	accepted atomic.Int64
	refused  atomic.Int64
	dropped  atomic.Int64
	bytes    atomic.Int64

	mu      sync.Mutex // guards the fields below
	target  string
	conns   map[*relayConn]struct{}
	flowing chan struct{} // closed while bytes flow, open while stalled
	delay   time.Duration
	rate    int // bytes per second each way; 0 for no limit
	refuse  bool
	closed  bool

	wg sync.WaitGroup // the accept loop and every connection's goroutines
}

// NewRelay starts a relay on 127.0.0.1:0 forwarding to target.
func NewRelay(target string) (*Relay, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	flowing := make(chan struct{})
	close(flowing)
	r := &Relay{ln: ln, target: target, conns: make(map[*relayConn]struct{}), flowing: flowing}
	r.wg.Add(1)
	go r.acceptLoop()
	return r, nil
}

// StartRelay starts a relay to target and closes it when t ends.
func StartRelay(t testing.TB, target string) *Relay {
	t.Helper()
	r, err := NewRelay(target)
	if err != nil {
		t.Fatalf("start relay: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// Addr is the relay's listening address.
func (r *Relay) Addr() string { return r.ln.Addr().String() }

// Drop resets every current connection on both sides (RST, through
// SO_LINGER 0) and returns how many there were. New connections are
// accepted as before.
func (r *Relay) Drop() int {
	r.mu.Lock()
	conns := r.connsLocked()
	r.mu.Unlock()
	for _, c := range conns {
		c.abort()
	}
	r.dropped.Add(int64(len(conns)))
	return len(conns)
}

// Stall stops moving bytes, in both directions and on every connection,
// current or new, without closing anything: the path is black-holed and
// each end sees a half-open connection. Bytes already read wait in the
// relay and are delivered after Resume, as over a healed network.
func (r *Relay) Stall() {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.flowing:
		r.flowing = make(chan struct{})
	default: // already stalled
	}
}

// Resume ends a Stall.
func (r *Relay) Resume() {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.flowing:
	default:
		close(r.flowing)
	}
}

// Refuse makes the relay accept and at once reset new connections while
// on is true.
func (r *Relay) Refuse(on bool) {
	r.mu.Lock()
	r.refuse = on
	r.mu.Unlock()
}

// Delay adds d of latency to every chunk forwarded in either direction;
// zero removes it.
func (r *Relay) Delay(d time.Duration) {
	r.mu.Lock()
	r.delay = d
	r.mu.Unlock()
}

// Rate limits each direction of every connection to bytesPerSec, as a
// slow link would, and shrinks the relay's receive buffers to 64 KiB so
// that what the link cannot take yet stays with the sender, as on a real
// path, not in megabytes of loopback buffer. Zero removes the limit (the
// buffers stay small).
func (r *Relay) Rate(bytesPerSec int) {
	r.mu.Lock()
	r.rate = bytesPerSec
	conns := r.connsLocked()
	r.mu.Unlock()
	for _, c := range conns {
		c.shrinkBuffers()
	}
}

// connsLocked lists the current connections; r.mu must be held.
func (r *Relay) connsLocked() []*relayConn {
	conns := make([]*relayConn, 0, len(r.conns))
	for c := range r.conns {
		conns = append(conns, c)
	}
	return conns
}

// relayReadBuffer is a rate-limited relay's receive buffer.
const relayReadBuffer = 64 << 10

// RelayStats counts what a Relay has done.
type RelayStats struct {
	Accepted int64 // connections accepted, refused ones included
	Refused  int64 // connections reset at once by Refuse
	Dropped  int64 // connections reset by Drop
	Active   int   // connections open now
	Bytes    int64 // bytes forwarded, both directions
}

// Stats returns the relay's counters.
func (r *Relay) Stats() RelayStats {
	r.mu.Lock()
	active := len(r.conns)
	r.mu.Unlock()
	return RelayStats{
		Accepted: r.accepted.Load(), Refused: r.refused.Load(), Dropped: r.dropped.Load(),
		Active: active, Bytes: r.bytes.Load(),
	}
}

// Close stops accepting, resets every connection, and returns once all
// the relay's goroutines have ended. It is safe to call more than once.
func (r *Relay) Close() error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	err := r.ln.Close()
	r.Drop()
	r.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

func (r *Relay) acceptLoop() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.accepted.Add(1)
		rc := &relayConn{r: r, client: c, done: make(chan struct{})}
		// Checked and registered in one step, so that a Close between
		// them cannot miss the connection and wait for its ends.
		r.mu.Lock()
		refuse, closed, target := r.refuse, r.closed, r.target
		if !refuse && !closed {
			r.conns[rc] = struct{}{}
		}
		r.mu.Unlock()
		if refuse || closed {
			r.refused.Add(1)
			reset(c)
			continue
		}
		r.wg.Add(1)
		go rc.run(target)
	}
}

// relayConn is one relayed connection.
type relayConn struct {
	r        *Relay
	client   net.Conn
	upstream net.Conn // set before done can close, read only after
	mu       sync.Mutex
	done     chan struct{} // closed by abort
	once     sync.Once
}

func (c *relayConn) run(target string) {
	defer c.r.wg.Done()
	defer func() {
		c.r.mu.Lock()
		delete(c.r.conns, c)
		c.r.mu.Unlock()
	}()
	d := net.Dialer{Timeout: 5 * time.Second}
	up, err := d.Dial("tcp", target)
	if err != nil {
		c.abort()
		return
	}
	c.mu.Lock()
	c.upstream = up
	c.mu.Unlock()
	c.r.mu.Lock()
	limited := c.r.rate > 0
	c.r.mu.Unlock()
	if limited {
		c.shrinkBuffers()
	}
	select {
	case <-c.done: // dropped while dialling
		reset(up)
		return
	default:
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.pump(up, c.client)
	}()
	c.pump(c.client, up)
	wg.Wait()
	c.client.Close()
	up.Close()
}

// pump copies src to dst chunk by chunk, waiting while the relay is
// stalled and adding its delay. At src's end it half-closes dst; on any
// error it resets both sides.
func (c *relayConn) pump(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !c.wait() {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				c.abort()
				return
			}
			c.r.bytes.Add(int64(n))
			if !c.pace(n) {
				return
			}
		}
		if err == io.EOF {
			if tc, ok := dst.(*net.TCPConn); ok && tc.CloseWrite() == nil {
				return
			}
			c.abort()
			return
		}
		if err != nil {
			c.abort()
			return
		}
	}
}

// wait blocks while the relay is stalled, then sleeps its delay. It
// reports false if the connection was aborted meanwhile.
func (c *relayConn) wait() bool {
	c.r.mu.Lock()
	flowing, delay := c.r.flowing, c.r.delay
	c.r.mu.Unlock()
	select {
	case <-flowing:
	case <-c.done:
		return false
	}
	return c.sleep(delay)
}

// pace sleeps for the time n bytes take at the relay's rate, if it has
// one. It reports false if the connection was aborted meanwhile.
func (c *relayConn) pace(n int) bool {
	c.r.mu.Lock()
	rate := c.r.rate
	c.r.mu.Unlock()
	if rate <= 0 {
		return true
	}
	return c.sleep(time.Duration(n) * time.Second / time.Duration(rate))
}

// sleep waits for d, or less if the connection is aborted meanwhile, and
// reports whether it was not.
func (c *relayConn) sleep(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.done:
		return false
	}
}

// shrinkBuffers gives both of the connection's sockets the small receive
// buffer of a rate-limited relay.
func (c *relayConn) shrinkBuffers() {
	c.mu.Lock()
	up := c.upstream
	c.mu.Unlock()
	for _, conn := range []net.Conn{c.client, up} {
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.SetReadBuffer(relayReadBuffer)
		}
	}
}

// abort resets both sides of the connection.
func (c *relayConn) abort() {
	c.once.Do(func() {
		close(c.done)
		c.mu.Lock()
		up := c.upstream
		c.mu.Unlock()
		reset(c.client)
		if up != nil {
			reset(up)
		}
	})
}

// reset closes c so that the peer sees a RST rather than a FIN.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}
