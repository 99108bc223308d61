package proxy

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	head, err := c.readHead()
	if err != nil {
		return false, false // the client left, or stalled mid-head
	}
	var req fastRequest
	if head == nil || !req.parse(head) {
		return false, true
	}
	h := c.s.current()
	rt := h.match(req.path)
	if rt == nil || rt.Allow != nil && !rt.Allow(c.addr) || rt.Target.Scheme != "http" {
		return false, true
	}
	c.br.Discard(len(head))
	return h.serveFast(c, rt, &req), false
}

// readHead returns the request head at the front of c's buffer, through
// the blank line that ends it, without consuming it. It returns nil for a
// head that does not fit in the buffer or ends its lines in a bare LF,
// which net/http accepts and the loop leaves to it.
func (c *serverConn) readHead() ([]byte, error) {
	slow := false
	for {
		buf, _ := c.br.Peek(c.br.Buffered())
		if i := bytes.Index(buf, []byte("\n\r\n")); i > 0 && buf[i-1] == '\r' && !bytes.Contains(buf[:i], []byte("\n\n")) {
			return buf[:i+3], nil
		}
		if len(buf) == connReadBuf || bytes.Contains(buf, []byte("\n\n")) || bytes.Contains(buf, []byte("\n\r\n")) {
			return nil, nil
		}
		if !slow && c.s.fallback.ReadHeaderTimeout > 0 {
			// The head came in pieces: the rest gets the header timeout,
			// not what is left of the idle one.
			slow = true
			c.conn.SetReadDeadline(time.Now().Add(c.s.fallback.ReadHeaderTimeout))
		}
		if _, err := c.br.Peek(len(buf) + 1); err != nil {
			return nil, err
		}
	}
}

// fastRequest is a request head the loop understood.
type fastRequest struct {
	head   []byte
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
	r.head = head
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
			for _, tok := range bytes.Split(value, []byte(",")) {
				switch tok = bytes.TrimSpace(tok); {
				case len(tok) == 0, bytes.EqualFold(tok, []byte("keep-alive")):
				case bytes.EqualFold(tok, []byte("close")):
					r.close = true
				default:
					return false // names another hop-by-hop header
				}
			}
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

func validName(n []byte) bool {
	if len(n) == 0 {
		return false
	}
	for _, c := range n {
		if c >= 0x80 || !isToken[c] {
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

// outgoingHead writes the request head that goes through the tunnel: the
// request line and Host of the route's target, the client's end-to-end
// headers in their order, and the listener's X-Forwarded headers, as the
// reverse proxy's Rewrite with SetXForwarded would.
func (r *fastRequest) outgoingHead(b []byte, rt *route, clientIP string) []byte {
	b = append(b, r.method...)
	b = append(b, ' ')
	b = append(b, joinPath(r.path, rt.Path, rt.Target)...)
	if q := joinQuery(r.query, rt.Target.RawQuery); q != "" {
		b = append(b, '?')
		b = append(b, q...)
	}
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, rt.Target.Host...)
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
		}
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
	start := time.Now()
	bp := heads.Get().(*[]byte)
	defer heads.Put(bp)
	out := req.outgoingHead((*bp)[:0], rt, c.ip)
	*bp = out
	rreq := getRequest
	if req.method == http.MethodHead {
		rreq = headRequest
	}
	hp := heads.Get().(*[]byte)
	defer heads.Put(hp)
	w := &fastWriter{conn: c, method: req.method, keep: !req.close, headBuf: (*hp)[:0]}
	watch := c.watchAfter(clientWatchDelay, c.cancel)
	resp, err := h.transport.send(c.ctx, rt.addr, &streamRequest{
		req:      rreq,
		write:    func(w io.Writer) error { _, err := w.Write(out); return err },
		readHead: w.readHead,
		on1xx:    w.informational,
	})
	if watch() {
		// The client left while the response was awaited.
		w.clientGone = true
		if err == nil {
			resp.Body.Close()
		}
		err = cmp.Or(err, errClientGone)
	}
	var n int64
	if err == nil {
		n, err = w.response(resp, (*bp)[:0])
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
	h.logRecord(record)
	if h.opts.Observe != nil {
		h.opts.Observe(record)
	}
	return w.keep && !w.clientGone
}

// clientWatchDelay is how long a response may take before the loop
// watches the client's connection for its going away, as net/http does
// from the start of every request. Most answers come sooner, and cost no
// watching.
const clientWatchDelay = 20 * time.Millisecond

var errClientGone = errors.New("the client went away")

// watchAfter starts, after delay, to read from c for its end, and calls
// gone if the client closes the connection. The returned stop ends the
// watch and reports whether the client went away; bytes the client sent
// meanwhile (a pipelined request) stay in c's buffer.
func (c *serverConn) watchAfter(delay time.Duration, gone func()) (stop func() bool) {
	var left atomic.Bool
	done := make(chan struct{})
	t := time.AfterFunc(delay, func() {
		defer close(done)
		if c.br.Buffered() > 0 {
			return // a pipelined request: the client is there
		}
		if _, err := c.br.Peek(1); err != nil && !isTimeout(err) {
			left.Store(true)
			gone()
		}
	})
	return func() bool {
		if t.Stop() {
			return false
		}
		c.conn.SetReadDeadline(aLongTimeAgo)
		<-done
		c.conn.SetReadDeadline(time.Time{})
		return left.Load()
	}
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

// fastWriter writes one response on a loop connection.
type fastWriter struct {
	conn       *serverConn
	method     string
	head       []byte // the response head for the client, if readHead wrote it
	headBuf    []byte // where readHead writes it
	status     int
	keep       bool // the connection may carry another request
	clientGone bool // a write to the client failed
}

// informational passes a 1xx answer on to the client at once.
func (w *fastWriter) informational(code int, h textproto.MIMEHeader) error {
	b := appendStatusLine(nil, code)
	b = appendHeader(b, http.Header(h))
	b = append(b, "\r\n"...)
	return w.write(b)
}

func (w *fastWriter) write(b []byte) error {
	_, err := w.conn.conn.Write(b)
	if err != nil {
		w.clientGone = true
	}
	return err
}

// response writes resp's head and body. The head waits for the body's
// first bytes, so that both usually leave in one write, and a body that
// breaks off before it begins becomes a 502.
func (w *fastWriter) response(resp *http.Response, b []byte) (int64, error) {
	buf := bodyBufs.Get()
	defer bodyBufs.Put(buf)
	body := resp.Body
	defer body.Close()
	n, err := body.Read(buf)
	if err != nil && err != io.EOF {
		w.error(http.StatusBadGateway, errBrokeOff, b)
		return 0, err
	}
	w.status = resp.StatusCode
	chunked := false
	if w.head != nil {
		b = append(b, w.head...) // readHead wrote it from the backend's
	} else {
		b, chunked = w.appendHead(b, resp)
	}
	var written int64
	for {
		if n > 0 {
			if chunked {
				b = strconv.AppendInt(b, int64(n), 16)
				b = append(b, "\r\n"...)
			}
			if len(b)+n <= cap(b) {
				b = append(b, buf[:n]...)
			} else {
				if err := w.write(b); err != nil {
					return written, err
				}
				b = b[:0]
				if err := w.write(buf[:n]); err != nil {
					return written, err
				}
			}
			if chunked {
				b = append(b, "\r\n"...)
			}
			written += int64(n)
		}
		if err == io.EOF {
			if chunked {
				b = append(b, "0\r\n"...)
				b = appendHeader(b, resp.Trailer)
				b = append(b, "\r\n"...)
			}
			return written, w.write(b)
		}
		if len(b) > 0 {
			if err := w.write(b); err != nil {
				return written, err
			}
			b = b[:0]
		}
		n, err = body.Read(buf)
		if err != nil && err != io.EOF {
			// Cut short: the client must see the response end early, so
			// the connection closes.
			w.keep = false
			w.write(b)
			return written, err
		}
	}
}

// appendHead appends the head of resp for the client, from its parsed
// header, and reports whether the body goes out chunked.
func (w *fastWriter) appendHead(b []byte, resp *http.Response) ([]byte, bool) {
	bodyless := resp.Request.Method == http.MethodHead || resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotModified
	chunked := !bodyless && resp.ContentLength < 0
	b = appendStatusLine(b, resp.StatusCode)
	b = appendHeader(b, resp.Header)
	if len(resp.Trailer) > 0 && chunked {
		b = append(b, "Trailer: "...)
		i := 0
		for name := range resp.Trailer {
			if i > 0 {
				b = append(b, ", "...)
			}
			b = append(b, name...)
			i++
		}
		b = append(b, "\r\n"...)
	}
	switch {
	case bodyless:
		if cl := resp.Header["Content-Length"]; len(cl) == 1 {
			b = append(b, "Content-Length: "...)
			b = append(b, cl[0]...)
			b = append(b, "\r\n"...)
		}
	case chunked:
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	default:
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, resp.ContentLength, 10)
		b = append(b, "\r\n"...)
	}
	return w.endHead(b), chunked
}

// endHead ends a response head for the client.
func (w *fastWriter) endHead(b []byte) []byte {
	if !w.keep {
		b = append(b, "Connection: close\r\n"...)
	}
	return append(b, "\r\n"...)
}

// readHead reads a response head the loop can pass on line by line: an
// HTTP/1.1 final answer framed by Content-Length or without a body, whose
// Connection names nothing but close. It writes the client's head into
// w.head as it goes, and returns a Response without a Header. Any other
// head, or one not whole in br's buffer, is left to http.ReadResponse.
func (w *fastWriter) readHead(br *bufio.Reader, req *http.Request) (*http.Response, error) {
	if _, err := br.Peek(1); err != nil {
		return http.ReadResponse(br, req) // which words the error
	}
	buf, _ := br.Peek(br.Buffered())
	end := bytes.Index(buf, []byte("\r\n\r\n"))
	if end < 0 || bytes.Contains(buf[:end], []byte("\n\n")) {
		return http.ReadResponse(br, req)
	}
	resp, ok := w.parseHead(buf[:end+2], req)
	if !ok {
		return http.ReadResponse(br, req)
	}
	br.Discard(end + 4)
	switch {
	case resp.ContentLength == 0 || resp.ContentLength < 0:
		resp.Body = http.NoBody
	default:
		resp.Body = &fixedBody{r: br, left: resp.ContentLength}
	}
	return resp, nil
}

// parseHead parses head, the status line and header lines each ending in
// CRLF, into a Response and w.head; false if it is not one for the loop.
func (w *fastWriter) parseHead(head []byte, req *http.Request) (*http.Response, bool) {
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	if len(line) < 12 || string(line[:9]) != "HTTP/1.1 " || len(line) > 12 && (line[12] != ' ' || !validValue(line[13:])) {
		return nil, false
	}
	code := 0
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return nil, false
		}
		code = code*10 + int(c-'0')
	}
	if code < 200 || code > 599 {
		return nil, false
	}
	resp := &http.Response{StatusCode: code, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Request: req, ContentLength: -1}
	b := appendStatusLine(w.headBuf[:0], code)
	for len(rest) > 0 {
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || !validName(name) || !validValue(value) {
			return nil, false
		}
		switch responseHeaderKind(name) {
		case hdrOther:
			b = append(b, line...)
			b = append(b, "\r\n"...)
		case hdrContentLength:
			n, err := strconv.ParseUint(string(bytes.Trim(value, " \t")), 10, 63)
			if err != nil || resp.ContentLength >= 0 {
				return nil, false
			}
			resp.ContentLength = int64(n)
			b = append(b, line...)
			b = append(b, "\r\n"...)
		case hdrConnection:
			for _, tok := range bytes.Split(value, []byte(",")) {
				switch tok = bytes.TrimSpace(tok); {
				case len(tok) == 0, bytes.EqualFold(tok, []byte("keep-alive")):
				case bytes.EqualFold(tok, []byte("close")):
					resp.Close = true
				default:
					return nil, false
				}
			}
		case hdrBody:
			return nil, false // Transfer-Encoding or Trailer
		}
	}
	bodyless := req.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified
	if bodyless {
		resp.ContentLength = 0
	} else if resp.ContentLength < 0 {
		return nil, false // chunked or until close
	}
	w.head = w.endHead(b)
	return resp, true
}

func responseHeaderKind(name []byte) int {
	switch headerKind(name) {
	case hdrConnection:
		return hdrConnection
	case hdrBody:
		if bytes.EqualFold(name, []byte("Content-Length")) {
			return hdrContentLength
		}
		return hdrBody // Transfer-Encoding
	case hdrHop, hdrTE, hdrUpgrade:
		if bytes.EqualFold(name, []byte("Trailer")) {
			return hdrBody
		}
		return hdrHop
	}
	return hdrOther // Host, Forwarded and Expect mean nothing here
}

// fixedBody is a response body of a known length, read from the stream's
// buffer.
type fixedBody struct {
	r    *bufio.Reader
	left int64
}

func (b *fixedBody) Read(p []byte) (int, error) {
	if b.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	switch {
	case b.left == 0:
		err = io.EOF
	case err == io.EOF:
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (b *fixedBody) Close() error { return nil }

// error answers status with err as the text, as writeError does.
func (w *fastWriter) error(status int, err error, b []byte) {
	w.status = status
	text := fmt.Sprintf("west: %d %s: %v\n", status, http.StatusText(status), err)
	b = appendStatusLine(b, status)
	b = fmt.Appendf(b, "Content-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nContent-Length: %d\r\n", len(text))
	b = w.endHead(b)
	if w.method != http.MethodHead {
		b = append(b, text...)
	}
	w.write(b)
}

// appendStatusLine appends the status line net/http would write for code.
func appendStatusLine(b []byte, code int) []byte {
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	if text := http.StatusText(code); text != "" {
		b = append(b, text...)
	} else {
		b = append(b, "status code "...)
		b = strconv.AppendInt(b, int64(code), 10)
	}
	return append(b, "\r\n"...)
}

// appendHeader appends h's end-to-end fields: not the hop-by-hop ones,
// not those its Connection names, and not Content-Length, which the
// writer sets from the framing it chose.
func appendHeader(b []byte, h http.Header) []byte {
	conn := h["Connection"]
	for name, values := range h {
		if isHopHeader(name) || name == "Content-Length" || len(conn) > 0 && tokenIn(conn, name) {
			continue
		}
		for _, v := range values {
			b = append(b, name...)
			b = append(b, ": "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	}
	return b
}

func isHopHeader(name string) bool {
	switch name {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

func tokenIn(values []string, name string) bool {
	for _, v := range values {
		for _, tok := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), name) {
				return true
			}
		}
	}
	return false
}
