//go:build linux

package main

import (
	"context"
	"errors"
	"net"
	"sync"
	"syscall"
	"time"
)

// relay forwards loopback TCP connections to a target, delaying each
// direction by half the round-trip time. It models a path with a fixed
// window: at most window bytes are in flight in a direction, and sent
// bytes leave the window only when their acknowledgement would have come
// back, one RTT after they were read. A direct TCP connection over such a
// path reaches window/RTT, as a real one limited by its socket buffers
// would.
type relay struct {
	ln     net.Listener
	target string
	oneWay time.Duration
	window int

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func startRelay(target string, rtt time.Duration, window int) (*relay, error) {
	ln, err := (&net.ListenConfig{Control: smallReceiveBuffer}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &relay{ln: ln, target: target, oneWay: rtt / 2, window: window, conns: map[net.Conn]struct{}{}}
	r.wg.Add(1)
	go r.serve()
	return r, nil
}

func (r *relay) addr() string { return r.ln.Addr().String() }

func (r *relay) serve() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.wg.Add(1)
		go r.forward(c)
	}
}

func (r *relay) track(c net.Conn, add bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if add {
		r.conns[c] = struct{}{}
	} else {
		delete(r.conns, c)
	}
}

func (r *relay) forward(client net.Conn) {
	defer r.wg.Done()
	defer client.Close()
	server, err := (&net.Dialer{Control: smallReceiveBuffer}).Dial("tcp", r.target)
	if err != nil {
		return
	}
	defer server.Close()
	r.track(client, true)
	r.track(server, true)
	defer r.track(client, false)
	defer r.track(server, false)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); r.delay(server, client) }()
	go func() { defer wg.Done(); r.delay(client, server) }()
	wg.Wait()
}

// relayReceiveBuffer is the receive buffer of the relay's sockets. The
// relay stands for the network, which holds only what is in flight (the
// window); with the kernel's own, loopback would buffer megabytes more
// before the path's bottleneck, where no real path has room for them, and
// hide how much the sender itself holds back.
const relayReceiveBuffer = 64 << 10

func smallReceiveBuffer(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, relayReceiveBuffer)
	})
	if err != nil {
		return err
	}
	return serr
}

// packet is a read waiting for its time to be written.
type packet struct {
	data []byte  // nil at EOF
	buf  *[]byte // data's buffer, to return to bufPool
	due  time.Time
}

// delay copies src to dst, each read written oneWay after it was read.
func (r *relay) delay(dst, src net.Conn) {
	q := make(chan packet, 1<<16)
	win := newWindow(r.window)
	go func() {
		defer close(q)
		for {
			n := win.acquire(relayBuf)
			if n == 0 {
				return
			}
			buf := bufPool.Get().(*[]byte)
			k, err := src.Read((*buf)[:n])
			if k > 0 {
				win.release(n - k)
				q <- packet{data: (*buf)[:k], buf: buf, due: time.Now().Add(r.oneWay)}
			} else {
				win.release(n)
				bufPool.Put(buf)
			}
			if err != nil {
				q <- packet{due: time.Now().Add(r.oneWay)}
				return
			}
		}
	}()
	for p := range q {
		if d := time.Until(p.due); d > 0 {
			time.Sleep(d)
		}
		if p.data == nil {
			if tc, ok := dst.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
			continue
		}
		_, err := dst.Write(p.data)
		bufPool.Put(p.buf)
		if err != nil {
			src.Close()
			win.close()
			for range q {
			}
			return
		}
		// The acknowledgement takes another one-way trip back.
		n := len(p.data)
		time.AfterFunc(r.oneWay, func() { win.release(n) })
	}
}

func (r *relay) close() error {
	err := r.ln.Close()
	r.mu.Lock()
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

const relayBuf = 64 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, relayBuf); return &b }}

// window is a byte budget.
type window struct {
	mu     sync.Mutex
	cond   *sync.Cond
	free   int
	closed bool
}

// close makes acquire return 0 from now on.
func (w *window) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.cond.Broadcast()
}

func newWindow(n int) *window {
	w := &window{free: n}
	w.cond = sync.NewCond(&w.mu)
	return w
}

// acquire waits for free bytes and takes up to max of them, or returns 0
// once the window is closed.
func (w *window) acquire(max int) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.free == 0 && !w.closed {
		w.cond.Wait()
	}
	if w.closed {
		return 0
	}
	n := min(max, w.free)
	w.free -= n
	return n
}

func (w *window) release(n int) {
	if n == 0 {
		return
	}
	w.mu.Lock()
	w.free += n
	w.mu.Unlock()
	w.cond.Broadcast()
}
