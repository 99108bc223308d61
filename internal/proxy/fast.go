package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// The loop's own request path, for what most clients send most: an
// HTTP/1.1 GET or HEAD without a body, on a route to an http:// target.
// It reads the request head in place, writes the outgoing head straight
// from it, and writes the response head itself. Whatever it would have to
// judge (an unusual header, a body, an upgrade, a 404 or 403 to answer)
// goes to net/http instead, which answers it with the same handler.

// serveRequest answers the request at the head of c's buffer. It reports
// whether the connection may carry another, or, before reading anything
// of the request, that it is one for net/http.
func (c *serverConn) serveRequest() (keep, handOff bool) {
	head, err := c.readRequestHead()
	if err != nil {
		return false, false // the client left, or stalled mid-head
	}
	var req fastRequest
	// net/http answers a path with a NUL 400 (nulPath).
	if head == nil || !req.parse(head) || nulPath(req.path) {
		return false, true
	}
	// Noted before the routes are read: see followHandedOver.
	c.setRequest(req.path)
	defer c.setRequest("")
	h := c.s.current()
	rt := h.match(req.path)
	if rt == nil || h.tooLong(req.path) || !h.allows(rt, req.path, c.addr) || rt.Target.Scheme != "http" {
		return false, true
	}
	if len(rt.via) > 0 && bytes.Contains(head, rt.via) {
		return false, true // perhaps a loop, which net/http answers
	}
	c.br.Discard(len(head))
	return h.serveFast(c, rt, &req), false
}

// readRequestHead returns the request head at the front of c's buffer, through
// the blank line that ends it, without consuming it. It returns nil for a
// head that does not fit in the buffer or ends its lines in a bare LF,
// which net/http accepts and the loop leaves to it.
func (c *serverConn) readRequestHead() ([]byte, error) {
	slow := false
	for {
		buf, _ := c.br.Peek(c.br.Buffered())
		if i := bytes.Index(buf, []byte("\n\r\n")); i > 0 && buf[i-1] == '\r' && !bytes.Contains(buf[:i], []byte("\n\n")) {
			return buf[:i+3], nil
		}
		if len(buf) == connReadBuf || bytes.Contains(buf, []byte("\n\n")) || bytes.Contains(buf, []byte("\n\r\n")) {
			return nil, nil
		}
		if wait := c.s.headerTimeout(); !slow && wait > 0 {
			// The head came in pieces: the rest gets the header timeout,
			// not what is left of the idle one.
			slow = true
			c.conn.SetReadDeadline(time.Now().Add(wait))
			c.armed = time.Time{}
		}
		if _, err := c.br.Peek(len(buf) + 1); err != nil {
			return nil, err
		}
	}
}

// fastRequest is a request head the loop understood.
type fastRequest struct {
	method string
	path   string // escaped, as sent
	query  string // raw, without "?"
	host   string
	close  bool // the client asked to close after the answer
	lines  []byte
}

// parse reads an HTTP/1.1 GET or HEAD head with no body, no upgrade and
// nothing the loop would have to judge; false for anything else.
func (r *fastRequest) parse(head []byte) bool {
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	method, line, ok1 := bytes.Cut(line, []byte(" "))
	target, proto, ok2 := bytes.Cut(line, []byte(" "))
	if !ok1 || !ok2 || string(proto) != "HTTP/1.1" {
		return false
	}
	switch string(method) {
	case http.MethodGet:
		r.method = http.MethodGet
	case http.MethodHead:
		r.method = http.MethodHead
	default:
		return false
	}
	path, query, _ := bytes.Cut(target, []byte("?"))
	if len(path) == 0 || path[0] != '/' || !validPath(path) || !validQuery(query) {
		return false
	}
	r.path, r.query = string(path), string(query)
	r.lines = rest
	hosts := 0
	for len(rest) > 2 {
		var line []byte
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || !validName(name) || !validValue(value) {
			return false
		}
		value = bytes.Trim(value, " \t")
		switch headerKind(name) {
		case hdrHost:
			hosts++
			r.host = string(value)
		case hdrConnection:
			closes, ok := connectionClose(value)
			if !ok {
				return false // names another hop-by-hop header
			}
			r.close = r.close || closes
		case hdrBody, hdrUpgrade:
			return false
		}
	}
	return hosts == 1 && validHost(r.host)
}

// Header names the loop treats apart, by what it does with them.
const (
	hdrOther      = iota // passed on
	hdrHost              // replaced by the target's
	hdrConnection        // hop by hop, and may name more
	hdrHop               // hop by hop: dropped
	hdrForwarded         // replaced by the listener's own
	hdrBody              // a body or an expectation of one: net/http's
	hdrUpgrade           // net/http's
	hdrTE                // hop by hop, but "trailers" passes on
	// In responses only:
	hdrContentLength // the body's length
)

func headerKind(name []byte) int {
	if len(name) < 2 || len(name) > 19 {
		return hdrOther
	}
	// The first letter picks few candidates; most headers match none.
	switch name[0] | 0x20 {
	case 'h':
		if bytes.EqualFold(name, []byte("Host")) {
			return hdrHost
		}
	case 'c':
		switch {
		case bytes.EqualFold(name, []byte("Connection")):
			return hdrConnection
		case bytes.EqualFold(name, []byte("Content-Length")):
			return hdrBody
		}
	case 'k':
		if bytes.EqualFold(name, []byte("Keep-Alive")) {
			return hdrHop
		}
	case 'p':
		if bytes.EqualFold(name, []byte("Proxy-Connection")) || bytes.EqualFold(name, []byte("Proxy-Authenticate")) ||
			bytes.EqualFold(name, []byte("Proxy-Authorization")) {
			return hdrHop
		}
	case 't':
		switch {
		case bytes.EqualFold(name, []byte("Te")):
			return hdrTE
		case bytes.EqualFold(name, []byte("Trailer")):
			return hdrHop
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return hdrBody
		}
	case 'e':
		if bytes.EqualFold(name, []byte("Expect")) {
			return hdrBody
		}
	case 'u':
		if bytes.EqualFold(name, []byte("Upgrade")) {
			return hdrUpgrade
		}
	case 'f':
		if bytes.EqualFold(name, []byte("Forwarded")) {
			return hdrForwarded
		}
	case 'x':
		if bytes.EqualFold(name, []byte("X-Forwarded-For")) || bytes.EqualFold(name, []byte("X-Forwarded-Host")) ||
			bytes.EqualFold(name, []byte("X-Forwarded-Proto")) {
			return hdrForwarded
		}
	}
	return hdrOther
}

// validPath accepts the escaped paths that net/url keeps as they are, so
// that the loop sends the same bytes the reverse proxy would.
func validPath(p []byte) bool {
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("-_.~$&+,/:;=@", c) >= 0:
		case c == '%':
			if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
				return false
			}
			i += 2
		default:
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func validQuery(q []byte) bool {
	for _, c := range q {
		if c <= ' ' || c >= 0x7f || c == '#' {
			return false
		}
	}
	return true
}

func validName[T string | []byte](n T) bool {
	if len(n) == 0 {
		return false
	}
	for i := range len(n) {
		if c := n[i]; c >= 0x80 || !isToken[c] {
			return false
		}
	}
	return true
}

var isToken = func() (t [128]bool) {
	for c := byte('0'); c <= '9'; c++ {
		t[c] = true
	}
	for c := byte('a'); c <= 'z'; c++ {
		t[c], t[c-32] = true, true
	}
	for _, c := range []byte("!#$%&'*+-.^_`|~") {
		t[c] = true
	}
	return t
}()

// validValue refuses control characters other than tab, and bytes beyond
// ASCII, which net/http would judge on its own terms.
func validValue(v []byte) bool {
	for _, c := range v {
		if c < ' ' && c != '\t' || c >= 0x7f {
			return false
		}
	}
	return true
}

// validHost accepts a plain host[:port]: letters, digits, dots, dashes,
// colons and an IPv6 literal's brackets.
func validHost(h string) bool {
	if h == "" {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte(".-:[]_", c) >= 0) {
			return false
		}
	}
	return true
}

// hostHeader is a URL's host as a Host header: without the zone of an
// IPv6 literal ("[fe80::1%eth0]:80"), which names an interface of the
// far west and is no part of a Host; net/http's path leaves it out too.
func hostHeader(host string) string {
	i := strings.IndexByte(host, '%')
	if j := strings.LastIndexByte(host, ']'); i >= 0 && j > i {
		return host[:i] + host[j:]
	}
	return host
}

// outgoingHead writes the request head that goes through the tunnel: the
// request line and Host of the route's target, the client's end-to-end
// headers in their order, and the listener's X-Forwarded headers, as the
// reverse proxy's Rewrite with SetXForwarded would; or, for a client
// that is a west's listener (fromWest), that listener's; and the route's
// West-Via entry, if it has one, after any the client sent.
func (r *fastRequest) outgoingHead(b []byte, rt *route, clientIP string, fromWest bool) []byte {
	b = append(b, r.method...)
	b = append(b, ' ')
	b = append(b, joinPath(r.path, rt.Path, rt.Target)...)
	if q := joinQuery(r.query, rt.Target.RawQuery); q != "" {
		b = append(b, '?')
		b = append(b, q...)
	}
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, hostHeader(rt.Target.Host)...)
	b = append(b, "\r\n"...)
	rest := r.lines
	for len(rest) > 2 {
		var line []byte
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, _ := bytes.Cut(line, []byte(":"))
		switch headerKind(name) {
		case hdrOther:
			b = append(b, line...)
			b = append(b, "\r\n"...)
		case hdrTE:
			if containsToken(value, "trailers") {
				b = append(b, "Te: trailers\r\n"...)
			}
		case hdrForwarded:
			if fromWest {
				b = append(b, line...)
				b = append(b, "\r\n"...)
			}
		}
	}
	if len(rt.via) > 0 {
		b = append(b, "West-Via: "...)
		b = append(b, rt.via...)
		b = append(b, "\r\n"...)
	}
	if fromWest {
		return append(b, "\r\n"...)
	}
	if clientIP != "" {
		b = append(b, "X-Forwarded-For: "...)
		b = append(b, clientIP...)
		b = append(b, "\r\n"...)
	}
	b = append(b, "X-Forwarded-Host: "...)
	b = append(b, r.host...)
	b = append(b, "\r\nX-Forwarded-Proto: http\r\n\r\n"...)
	return b
}

// connectionClose reads a Connection header's value: whether it says
// close, and false if it names anything but close and keep-alive (a
// header to drop), which the loop leaves to net/http.
func connectionClose(value []byte) (closes, ok bool) {
	for _, tok := range bytes.Split(value, []byte(",")) {
		switch tok = bytes.TrimSpace(tok); {
		case len(tok) == 0, bytes.EqualFold(tok, []byte("keep-alive")):
		case bytes.EqualFold(tok, []byte("close")):
			closes = true
		default:
			return false, false
		}
	}
	return closes, true
}

func containsToken(v []byte, token string) bool {
	for _, tok := range bytes.Split(v, []byte(",")) {
		if bytes.EqualFold(bytes.TrimSpace(tok), []byte(token)) {
			return true
		}
	}
	return false
}

// Requests for http.ReadResponse, which needs only the method.
var (
	getRequest  = &http.Request{Method: http.MethodGet}
	headRequest = &http.Request{Method: http.MethodHead}
)

// heads lends the buffers request and response heads are written in.
var heads = sync.Pool{New: func() any { b := make([]byte, 0, 8<<10); return &b }}

// serveFast sends req through the route's tunnel and writes the response
// on c. It reports whether the connection may carry another request.
func (h *HTTP) serveFast(c *serverConn, rt *route, req *fastRequest) bool {
	h.active.Add(1)
	defer h.leave()
	start := time.Now()
	bp := heads.Get().(*[]byte)
	defer heads.Put(bp)
	out := req.outgoingHead((*bp)[:0], rt, c.ip, c.fromWest)
	*bp = out
	rreq := getRequest
	if req.method == http.MethodHead {
		rreq = headRequest
	}
	hp := heads.Get().(*[]byte)
	defer heads.Put(hp)
	// The writer and the request live in c, made once per connection, so
	// that a request does not allocate them and their method values.
	w := &c.w
	*w = fastWriter{conn: c, method: req.method, keep: !req.close, headBuf: (*hp)[:0], brief: h.opts.BriefErrors}
	if c.sreq.write == nil {
		c.sreq = streamRequest{write: c.writeOut, readHead: w.readResponseHead, on1xx: w.informational,
			abandon: &abandonHook{}}
		context.AfterFunc(c.ctx, c.sreq.abandon.end)
	}
	c.sreq.req, c.out = rreq, out
	c.startWatch()
	resp, err := h.transport.send(c.ctx, rt.addr, &c.sreq)
	c.out = nil
	var n int64
	if err == nil {
		// The watch goes on while the body passes, as net/http's
		// background read does: a client that leaves while the backend
		// has nothing to send (an event stream between events, a long
		// poll) ends the exchange now, not when the backend next writes.
		n, err = w.response(resp, (*bp)[:0])
		if c.stopWatch() && err != nil {
			w.clientGone, err = true, errClientGone
		}
	} else if c.stopWatch() {
		// The client left while the response was awaited: the failure
		// is its own, not the backend's, and net/http's path tells it
		// nothing either.
		w.clientGone, w.status = true, statusFor(err)
	} else {
		w.error(statusFor(err), err, (*bp)[:0])
	}
	record := Record{
		Listener: h.opts.Name, Route: rt.Path, Method: req.method, Path: unescapedPath(req.path),
		Status: w.status, BytesOut: n, Duration: time.Since(start), Err: err,
	}
	if w.clientGone {
		record.Status = statusClientGone
	}
	h.report(record)
	// A client that left just after the whole response has no more to ask.
	return w.keep && !w.clientGone && !c.watch.left
}

// writeOut writes the request head of the request in progress.
func (c *serverConn) writeOut(w io.Writer) error {
	_, err := w.Write(c.out)
	return err
}

// clientWatchDelay is how long a response may take before the loop
// watches the client's connection for its going away, as net/http does
// from the start of every request. Most answers come sooner, and cost no
// watching.
const clientWatchDelay = 20 * time.Millisecond

var errClientGone = errors.New("the client went away")

// clientWatch reads from a loop connection while a response is awaited,
// to see its client go away. There is one per connection, armed for each
// request.
type clientWatch struct {
	c     *serverConn
	timer *time.Timer
	done  chan struct{} // gets one value each time the watch has run
	left  bool          // set by the watch before it sends on done
	// stopping is set by stopWatch, under mu, as it ends the watch's
	// read; the watch lifts any other deadline under mu.
	mu       sync.Mutex
	stopping bool
}

// startWatch arms c's watch to start after clientWatchDelay. Bytes the
// client sends meanwhile (a pipelined request) stay in c's buffer.
func (c *serverConn) startWatch() {
	if c.watch == nil {
		c.watch = &clientWatch{c: c, done: make(chan struct{}, 1)}
		c.watch.timer = time.AfterFunc(clientWatchDelay, c.watch.run)
		return
	}
	c.watch.timer.Reset(clientWatchDelay)
}

func (w *clientWatch) run() {
	// Buffered bytes are a pipelined request: the client is there.
	for w.c.br.Buffered() == 0 {
		_, err := w.c.br.Peek(1)
		if err == nil {
			break
		}
		if !isTimeout(err) {
			w.left = true
			w.c.cancel() // abandons the request
			break
		}
		// The wait for the request head ran out, not the watch: the
		// client is still there, and the response may be long in
		// coming (a long poll). Watch on with no deadline.
		w.mu.Lock()
		stopping := w.stopping
		if !stopping {
			w.c.conn.SetReadDeadline(time.Time{})
		}
		w.mu.Unlock()
		if stopping {
			break
		}
	}
	w.done <- struct{}{}
}

// stopWatch ends the watch and reports whether the client went away.
func (c *serverConn) stopWatch() bool {
	if c.watch.timer.Stop() {
		return false
	}
	c.watch.mu.Lock()
	c.watch.stopping = true
	c.conn.SetReadDeadline(aLongTimeAgo)
	c.watch.mu.Unlock()
	<-c.watch.done
	c.watch.stopping = false
	c.conn.SetReadDeadline(time.Time{})
	c.armed = time.Time{}
	return c.watch.left
}

// aLongTimeAgo is a deadline that has passed, to end a blocked read.
var aLongTimeAgo = time.Unix(1, 0)

func unescapedPath(p string) string {
	if strings.IndexByte(p, '%') < 0 {
		return p
	}
	if u, err := url.PathUnescape(p); err == nil {
		return u
	}
	return p
}
