package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// streamTransport is a listener's HTTP/1.1 client for the common request:
// a replayable one (GET, HEAD, OPTIONS, TRACE) with no body to an http://
// target, not an upgrade. It writes the request on a tunnel stream kept
// for reuse and reads the response in the handler's own goroutine.
// http.Transport runs a reader and a writer goroutine per connection and
// hands every request and response between them and the handler; on a
// tunnel those hand-offs cost more than the request itself. Every other
// request goes to fallback, whose pool of streams is its own. The
// listener's request loop sends through the same pool (send), with its
// own request and response heads.
//
// Without a reader goroutine an idle stream cannot notice that the far
// side has closed it (the backend ended its keep-alive connection). A
// request that finds its reused stream closed before any byte of the
// response is therefore sent again on a new stream, which is why only
// replayable requests without a body take this path.
type streamTransport struct {
	dial     func(ctx context.Context, addr string) (net.Conn, error)
	fallback http.RoundTripper
	// headerTimeout bounds the wait for the response headers.
	headerTimeout time.Duration
	// idleTimeout is how long a stream may sit in the pool.
	idleTimeout time.Duration
	// maxIdle is how many idle streams are kept for each target.
	maxIdle int

	mu      sync.Mutex
	idle    map[string][]*streamConn // by target host:port, most recent last
	sweep   *time.Timer              // armed while the pool holds streams
	retired bool                     // pool no more: see retire
}

// maxResponseHeader bounds a response's header block, as http.Transport's
// MaxResponseHeaderBytes does, so that a backend cannot grow the
// listener's memory with endless header lines.
const maxResponseHeader = 1 << 20

var errHeaderTooLarge = errors.New("response headers exceed 1 MiB")

// errBogusStatus is why a response whose status is below 100 is refused.
func errBogusStatus(code int) error {
	return fmt.Errorf("backend answered with status %03d", code)
}

// streamConn is one stream carrying requests to one target in turn.
type streamConn struct {
	conn net.Conn
	// drains, nil when conn cannot tell, reports whether the far west
	// has told us that it drains: it then waits for its HTTP streams to
	// end, so none is kept idle. Looked up once per stream, not per use.
	drains    interface{ PeerDraining() bool }
	addr      string
	read      int64     // bytes read from conn since the request began
	limit     int64     // while positive, reads beyond it fail
	idleSince time.Time // when it last went back to the pool
	// headTimer ends a wait for a response head longer than the
	// transport's headerTimeout by passing the stream's read deadline.
	// Made once per stream and armed per request: setting the deadline
	// itself per request made a timer each time, 2.5 % of a busy
	// listener's CPU.
	headTimer *time.Timer
}

// armHeadTimer starts the wait for a response head, of at most d.
func (c *streamConn) armHeadTimer(d time.Duration) {
	if c.headTimer == nil {
		c.headTimer = time.AfterFunc(d, func() { c.conn.SetReadDeadline(aLongTimeAgo) })
		return
	}
	c.headTimer.Reset(d)
}

// headInTime ends the wait for a response head and reports whether the
// head came in time. If not, the stream's read deadline has passed or is
// about to, and the stream can carry no more.
func (c *streamConn) headInTime() bool { return c.headTimer.Stop() }

func (c *streamConn) Read(b []byte) (int, error) {
	if c.limit > 0 {
		if c.read >= c.limit {
			return 0, errHeaderTooLarge
		}
		b = b[:min(int64(len(b)), c.limit-c.read)]
	}
	n, err := c.conn.Read(b)
	c.read += int64(n)
	return n, err
}

// Reading and writing buffers are lent per request: an idle stream holds
// neither.
var (
	readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}
	writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}
)

// takesFastPath reports whether req can go through the stream transport.
func takesFastPath(req *http.Request) bool {
	if req.URL.Scheme != "http" || req.Body != nil && req.Body != http.NoBody || req.Header.Get("Upgrade") != "" {
		return false
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

func (t *streamTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !takesFastPath(req) {
		return t.fallback.RoundTrip(req)
	}
	r := &streamRequest{req: req, write: req.Write}
	if trace := httptrace.ContextClientTrace(req.Context()); trace != nil {
		r.on1xx = trace.Got1xxResponse
	}
	return t.send(req.Context(), canonicalAddr(req.URL), r)
}

// streamRequest is a request as the stream transport sends it.
type streamRequest struct {
	// req gives the method, which tells how the response is framed.
	req *http.Request
	// write writes the request on the stream.
	write func(io.Writer) error
	// readHead, if set, reads the response head instead of
	// http.ReadResponse, for a caller that writes it on in its own way.
	readHead func(*bufio.Reader, *http.Request) (*http.Response, error)
	// on1xx, if set, is given informational answers; the final one is
	// returned.
	on1xx func(int, textproto.MIMEHeader) error
	// abandon, if set, closes the stream when the request is abandoned,
	// in place of a hook on the context for each request.
	abandon *abandonHook
}

// abandonHook closes the stream of a client connection's request in
// progress when the connection's context ends: one context.AfterFunc for
// the connection's life, where one per request cost the listener's west
// 3.6 % of its CPU and a third of its allocations at 64 connections. A
// connection has one request in progress at a time.
type abandonHook struct {
	mu     sync.Mutex
	stream net.Conn // the request's stream; nil between requests
	ended  bool     // the context ended: every stream is closed at once
}

// hold makes c the stream to close when the context ends, and closes it
// now if the context has ended already.
func (h *abandonHook) hold(c net.Conn) {
	h.mu.Lock()
	ended := h.ended
	if !ended {
		h.stream = c
	}
	h.mu.Unlock()
	if ended {
		c.Close()
	}
}

// release lets go of the stream held, and reports whether the context
// ended before it was let go, in which case the stream is closed or
// closing.
func (h *abandonHook) release() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stream = nil
	return !h.ended
}

// end is the hook: it closes the stream held, and any held later.
func (h *abandonHook) end() {
	h.mu.Lock()
	h.ended = true
	c := h.stream
	h.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// abandonment watches a request in progress for its abandonment, with
// the connection's hook or with one on the request's context.
type abandonment struct {
	hook *abandonHook
	stop func() bool // context.AfterFunc's, when there is no hook
}

// watchAbandonment starts watching for the end of ctx while sc carries r.
func watchAbandonment(ctx context.Context, sc *streamConn, r *streamRequest) abandonment {
	if r.abandon != nil {
		r.abandon.hold(sc.conn)
		return abandonment{hook: r.abandon}
	}
	return abandonment{stop: context.AfterFunc(ctx, func() { sc.conn.Close() })}
}

// done ends the watch, and reports whether it ended before the stream was
// closed for the request's abandonment.
func (a abandonment) done() bool {
	if a.hook != nil {
		return a.hook.release()
	}
	return a.stop()
}

// send sends r on a stream to addr and reads the response head. The end
// of ctx abandons the request.
func (t *streamTransport) send(ctx context.Context, addr string, r *streamRequest) (*http.Response, error) {
	for {
		sc, reused := t.get(addr)
		if sc == nil {
			conn, err := t.dial(ctx, addr)
			if err != nil {
				return nil, err
			}
			sc = &streamConn{conn: conn, addr: addr}
			sc.drains, _ = conn.(interface{ PeerDraining() bool })
		}
		resp, err := t.roundTrip(ctx, sc, r)
		if err == nil {
			return resp, nil
		}
		sc.conn.Close()
		// A reused stream that ended before answering was closed by the
		// far side while it sat idle: the request never reached a
		// backend that would answer it, so it goes again on a new one.
		if !reused || sc.read > 0 || ctx.Err() != nil || isTimeout(err) {
			return nil, err
		}
	}
}

// headTimeoutError is why a request failed whose response head did not
// come within the listener's timeout. It is a net.Error that timed out,
// as the read deadline's error was, so the client gets 504.
type headTimeoutError struct{ timeout time.Duration }

func (e headTimeoutError) Error() string {
	return fmt.Sprintf("timeout awaiting response headers (the listener's timeout is %v)", e.timeout)
}
func (headTimeoutError) Timeout() bool   { return true }
func (headTimeoutError) Temporary() bool { return true }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// roundTrip sends r on sc and reads the response headers. The body, when
// there is one, reads from sc until it ends, and then gives sc back to the
// pool.
func (t *streamTransport) roundTrip(ctx context.Context, sc *streamConn, r *streamRequest) (*http.Response, error) {
	sc.read = 0
	// A client that goes away abandons the request: closing the stream
	// ends any wait on it.
	abandoned := watchAbandonment(ctx, sc, r)
	bw := writers.Get().(*bufio.Writer)
	bw.Reset(sc.conn)
	err := r.write(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		// A write the multiplexer gave up on may still be read from this
		// buffer by its send loop: leave it to the collector.
		abandoned.done()
		return nil, err
	}
	bw.Reset(nil)
	writers.Put(bw)
	br := readers.Get().(*bufio.Reader)
	br.Reset(sc)
	sc.armHeadTimer(t.headerTimeout)
	fail := func(err error) (*http.Response, error) {
		abandoned.done()
		if !sc.headInTime() && isTimeout(err) {
			// The head timer passed the stream's read deadline: say
			// so, as the fallback transport does, rather than "i/o
			// deadline reached".
			err = headTimeoutError{t.headerTimeout}
		}
		br.Reset(nil)
		readers.Put(br)
		return nil, err
	}
	sc.limit = maxResponseHeader
	readHead := r.readHead
	if readHead == nil {
		readHead = http.ReadResponse
	}
	var resp *http.Response
	for {
		resp, err = readHead(br, r.req)
		if err != nil {
			return fail(err)
		}
		if resp.StatusCode < 100 {
			// "099" reads as a number, but is no status: taken for an
			// informational answer, it reached the client as "99", and
			// net/http's server panics on it.
			return fail(errBogusStatus(resp.StatusCode))
		}
		// Informational answers (103 Early Hints) go to the client as the
		// reverse proxy asks, and the final one follows.
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		if r.on1xx != nil {
			if err := r.on1xx(resp.StatusCode, textproto.MIMEHeader(resp.Header)); err != nil {
				return fail(err)
			}
		}
	}
	if !sc.headInTime() {
		// It came just as the time ran out.
		return fail(os.ErrDeadlineExceeded)
	}
	sc.limit = 0
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// Not asked for: nothing on this path requests an upgrade.
		return fail(errors.New("backend switched protocols unasked"))
	}
	body := &streamBody{t: t, sc: sc, br: br, body: resp.Body, abandoned: abandoned,
		reusable: !resp.Close && !r.req.Close}
	if resp.Body == http.NoBody {
		body.finish(true) // nothing to read: the stream is free now
	} else {
		resp.Body = body
	}
	return resp, nil
}

// streamBody is a response body that returns its stream to the pool once
// read to its end, and closes it if abandoned before that.
type streamBody struct {
	t         *streamTransport
	sc        *streamConn
	br        *bufio.Reader
	body      io.ReadCloser
	abandoned abandonment
	reusable  bool
	done      atomic.Bool
}

func (b *streamBody) Read(p []byte) (int, error) {
	if b.done.Load() {
		return 0, http.ErrBodyReadAfterClose
	}
	n, err := b.body.Read(p)
	if err == io.EOF {
		b.finish(true)
	}
	return n, err
}

// Close abandons the rest of the body, if any, with its stream.
func (b *streamBody) Close() error {
	b.finish(false)
	return nil
}

// finish ends the request once: the stream goes back to the pool if the
// whole response was read and nothing follows it, and is closed
// otherwise. Only a complete read, which happens in Read, can be sure no
// Read still uses the buffer; an abandoned one leaves it to the collector.
func (b *streamBody) finish(complete bool) {
	if !b.done.CompareAndSwap(false, true) {
		return
	}
	stopped := b.abandoned.done() // false: the client left and the stream is closing
	if complete {
		keep := stopped && b.reusable && b.br.Buffered() == 0
		b.br.Reset(nil)
		readers.Put(b.br)
		if keep {
			b.t.put(b.sc)
			return
		}
	}
	b.sc.conn.Close()
}

// get takes the most recently idle stream to addr, if there is one young
// enough and quiet.
func (t *streamTransport) get(addr string) (sc *streamConn, reused bool) {
	for {
		sc = t.pop(addr)
		if sc == nil {
			return nil, false
		}
		if quiet(sc.conn) && !sc.peerDraining() {
			return sc, true
		}
		sc.conn.Close()
	}
}

// pop takes the most recently idle stream to addr, if there is one young
// enough.
func (t *streamTransport) pop(addr string) *streamConn {
	t.mu.Lock()
	defer t.mu.Unlock()
	for {
		list := t.idle[addr]
		if len(list) == 0 {
			return nil
		}
		sc := list[len(list)-1]
		list[len(list)-1] = nil
		t.idle[addr] = list[:len(list)-1]
		if time.Since(sc.idleSince) < t.idleTimeout {
			return sc
		}
		sc.conn.Close()
	}
}

// quiet reports whether an idle stream has nothing waiting to be read.
// Bytes there came after the last response ended (a body on a 204, or on
// the answer to a HEAD): the next request would read them as its own
// response, perhaps another client's. An end there means the backend
// closed the connection while idle, and a new stream saves a retry. A
// conn that cannot tell (a plain TCP connection, in tests) counts as
// quiet.
func quiet(c net.Conn) bool {
	q, ok := c.(interface{ Quiet() bool })
	return !ok || q.Quiet()
}

func (c *streamConn) peerDraining() bool { return c.drains != nil && c.drains.PeerDraining() }

func (t *streamTransport) put(sc *streamConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.idle == nil {
		t.idle = make(map[string][]*streamConn)
	}
	list := t.idle[sc.addr]
	if len(list) >= t.maxIdle || t.retired || sc.peerDraining() {
		sc.conn.Close()
		return
	}
	sc.idleSince = time.Now()
	t.idle[sc.addr] = append(list, sc)
	if t.sweep == nil {
		t.sweep = time.AfterFunc(t.idleTimeout, t.closeExpired)
	}
}

// closeExpired closes the streams idle for longer than idleTimeout, and
// comes back while any remain.
func (t *streamTransport) closeExpired() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sweep = nil
	expired := func(sc *streamConn) bool { return time.Since(sc.idleSince) >= t.idleTimeout }
	if t.closeIdleLocked(expired) {
		t.sweep = time.AfterFunc(t.idleTimeout/2, t.closeExpired)
	}
}

// closeIdleLocked closes the idle streams drop picks, and reports whether
// any remain. t.mu must be held.
func (t *streamTransport) closeIdleLocked(drop func(*streamConn) bool) (remain bool) {
	for addr, list := range t.idle {
		kept := list[:0]
		for _, sc := range list {
			if drop(sc) {
				sc.conn.Close()
			} else {
				kept = append(kept, sc)
			}
		}
		clear(list[len(kept):])
		if len(kept) == 0 {
			delete(t.idle, addr)
		} else {
			t.idle[addr] = kept
			remain = true
		}
	}
	return remain
}

// CloseIdleConnections closes every idle stream, its own and fallback's.
func (t *streamTransport) CloseIdleConnections() {
	t.mu.Lock()
	for _, list := range t.idle {
		for _, sc := range list {
			sc.conn.Close()
		}
	}
	t.idle = nil
	if t.sweep != nil {
		t.sweep.Stop()
		t.sweep = nil
	}
	t.mu.Unlock()
	if ci, ok := t.fallback.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// closeIdleToDraining closes the idle streams whose far west drains, and
// every idle connection of fallback, whose pool cannot be sorted that way.
func (t *streamTransport) closeIdleToDraining() {
	t.mu.Lock()
	t.closeIdleLocked((*streamConn).peerDraining)
	t.mu.Unlock()
	if ci, ok := t.fallback.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// retire closes the idle streams, and from now on each stream that a
// request in flight gives back, for a transport that takes no new
// requests: nothing would draw from its pool again.
func (t *streamTransport) retire() {
	t.mu.Lock()
	t.retired = true
	t.mu.Unlock()
	t.CloseIdleConnections()
}

// canonicalAddr is the host:port a URL's requests go to, its port spelt
// one way ("https://h" and "https://h:0443" are both h:443), so that
// routes to one backend compare equal (see matchSent).
func canonicalAddr(u *url.URL) string {
	port := u.Port()
	switch {
	case len(port) > 1 && port[0] == '0':
		// Only leading zeros spell a port another way; the usual
		// spelling is kept as it is, without an allocation per request.
		if n, err := strconv.ParseUint(port, 10, 16); err == nil {
			port = strconv.FormatUint(n, 10)
		}
	case port != "":
	case u.Scheme == "https":
		port = "443"
	default:
		port = "80"
	}
	return net.JoinHostPort(u.Hostname(), port)
}
