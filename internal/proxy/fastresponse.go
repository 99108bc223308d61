package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"time"
)

// The request loop's response side: it passes a response head on line by
// line when it can read it itself, and writes one from http.ReadResponse's
// Header otherwise.

// fastWriter writes one response on a loop connection.
type fastWriter struct {
	conn       *serverConn
	method     string
	head       []byte // the client's response head, if readResponseHead wrote it
	headBuf    []byte // where readResponseHead writes it
	status     int
	keep       bool      // the connection may carry another request
	clientGone bool      // a write to the client failed
	brief      bool      // errors without why (HTTPOptions.BriefErrors)
	vec        [2][]byte // writeBoth's buffers, kept here so that a write allocates nothing
}

// informational passes a 1xx answer on to the client at once.
func (w *fastWriter) informational(code int, h textproto.MIMEHeader) error {
	b := appendStatusLine(nil, code)
	b = appendHeader(b, http.Header(h))
	b = append(b, "\r\n"...)
	return w.write(b)
}

// vectorWriter writes several buffers in one system call (sockio.Conn).
type vectorWriter interface {
	WriteVec(bufs [][]byte) (int64, error)
}

func (w *fastWriter) write(b []byte) error { return w.writeBoth(nil, b) }

// writeBoth writes head, which may be empty, then body, in one system
// call where the connection takes a vector: an empty write would still
// cost one. A client that takes some of it before the write deadline is
// slow, not gone: the rest gets a deadline of its own (armWrite).
func (w *fastWriter) writeBoth(head, body []byte) error {
	for {
		w.conn.armWrite()
		n, err := w.writeOnce(head, body)
		if err == nil {
			return nil
		}
		if n == 0 || !isTimeout(err) {
			w.clientGone = true
			return err
		}
		w.conn.writeArmed.Store(0)
		if n < int64(len(head)) {
			head = head[n:]
		} else {
			body, head = body[n-int64(len(head)):], nil
		}
	}
}

func (w *fastWriter) writeOnce(head, body []byte) (int64, error) {
	if len(head) == 0 {
		n, err := w.conn.conn.Write(body)
		return int64(n), err
	}
	if vw, ok := w.conn.conn.(vectorWriter); ok {
		w.vec = [2][]byte{head, body}
		n, err := vw.WriteVec(w.vec[:])
		w.vec = [2][]byte{}
		return n, err
	}
	bufs := net.Buffers{head, body}
	return bufs.WriteTo(w.conn.conn)
}

// response writes resp's head and body. The head waits for the body's
// first bytes, so that both usually leave in one write, and a body that
// breaks off before it begins becomes a 502; but not for a body of unknown
// length that has not begun (server-sent events, a long poll), whose head
// goes at once, as the reverse proxy flushes it.
func (w *fastWriter) response(resp *http.Response, b []byte) (int64, error) {
	buf := bodyBufs.Get()
	defer bodyBufs.Put(buf)
	body := resp.Body
	defer body.Close()
	var n int
	var err error
	if w.head != nil || resp.ContentLength >= 0 || bodyBegun(body) {
		n, err = body.Read(buf)
		if err != nil && err != io.EOF {
			if w.conn.ctx.Err() != nil {
				// The request was abandoned: its client was seen to
				// leave (or only half-closed, which the watch takes for
				// the same), or its connection is being ended. It gets
				// no answer, as on net/http's path, rather than a 502
				// blaming the backend.
				w.clientGone = true
				return 0, err
			}
			w.error(http.StatusBadGateway, errBrokeOff, b)
			return 0, err
		}
	}
	w.status = resp.StatusCode
	chunked := false
	if w.head != nil {
		b = append(b, w.head...) // readResponseHead wrote it from the backend's
	} else {
		b, chunked = w.appendHead(b, resp)
	}
	var written int64
	for {
		if err == io.EOF {
			// The whole response is in hand, one write from its client:
			// a client that reads it may ask again at once, on a
			// connection Recheck must then see idle, not end.
			w.conn.setRequest("")
		}
		if n > 0 {
			if chunked {
				b = strconv.AppendInt(b, int64(n), 16)
				b = append(b, "\r\n"...)
			}
			if len(b)+n <= cap(b) {
				b = append(b, buf[:n]...)
			} else {
				if err := w.writeBoth(b, buf[:n]); err != nil {
					return written, err
				}
				b = b[:0]
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
			if len(b) == 0 {
				return written, nil
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

// bodyBegun reports whether some of a response body from the stream
// transport has come, so that reading it will not wait for the backend.
func bodyBegun(body io.Reader) bool {
	sb, ok := body.(*streamBody)
	return !ok || sb.br.Buffered() > 0
}

// appendHead appends the head of resp for the client, from its parsed
// header, and reports whether the body goes out chunked.
func (w *fastWriter) appendHead(b []byte, resp *http.Response) ([]byte, bool) {
	bodyless := hasNoBody(resp.Request.Method, resp.StatusCode)
	chunked := !bodyless && resp.ContentLength < 0
	b = appendStatusLine(b, resp.StatusCode)
	b = appendHeader(b, resp.Header)
	if _, ok := resp.Header["Date"]; !ok {
		b = appendDate(b)
	}
	if len(resp.Trailer) > 0 && chunked {
		listed := 0
		conn := resp.Trailer["Connection"]
		for name := range resp.Trailer {
			if !passedOn(name, conn) {
				// appendHeader leaves it out. Read ahead of the head, a
				// trailer the backend did not list may be one a client
				// refuses to see listed (Content-Length).
				continue
			}
			if listed == 0 {
				b = append(b, "Trailer: "...)
			} else {
				b = append(b, ", "...)
			}
			b = append(b, name...)
			listed++
		}
		if listed > 0 {
			b = append(b, "\r\n"...)
		}
	}
	switch {
	case bodyless:
		// A HEAD's answer and a 304 may give the length a GET's would
		// have; a 204 must not give one.
		if cl := resp.Header["Content-Length"]; len(cl) == 1 && resp.StatusCode != http.StatusNoContent {
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

// hasNoBody reports whether a response with code to a method request
// carries no body, whatever its header says.
func hasNoBody(method string, code int) bool {
	return method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified
}

// endHead ends a response head for the client.
func (w *fastWriter) endHead(b []byte) []byte {
	if !w.keep {
		b = append(b, "Connection: close\r\n"...)
	}
	return append(b, "\r\n"...)
}

// readResponseHead reads a response head the loop can pass on line by
// line: an HTTP/1.1 final answer framed by Content-Length or without a
// body, whose Connection names nothing but close. It writes the client's
// head into w.head as it goes, and returns a Response without a Header.
// Any other head, or one not whole in br's buffer, is left to
// http.ReadResponse.
func (w *fastWriter) readResponseHead(br *bufio.Reader, req *http.Request) (*http.Response, error) {
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
	resp.Body = http.NoBody
	if resp.ContentLength > 0 {
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
	dated := false
	for len(rest) > 0 {
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || !validName(name) || !validValue(value) {
			return nil, false
		}
		switch responseHeaderKind(name) {
		case hdrOther:
			dated = dated || len(name) == 4 && bytes.EqualFold(name, []byte("Date"))
			b = append(b, line...)
			b = append(b, "\r\n"...)
		case hdrContentLength:
			n, err := strconv.ParseUint(string(bytes.Trim(value, " \t")), 10, 63)
			if err != nil || resp.ContentLength >= 0 {
				return nil, false
			}
			resp.ContentLength = int64(n)
			if code != http.StatusNoContent { // which must not send one
				b = append(b, line...)
				b = append(b, "\r\n"...)
			}
		case hdrConnection:
			closes, ok := connectionClose(value)
			if !ok {
				return nil, false
			}
			resp.Close = resp.Close || closes
		case hdrBody:
			return nil, false // Transfer-Encoding or Trailer
		}
	}
	if hasNoBody(req.Method, code) {
		resp.ContentLength = 0
	} else if resp.ContentLength < 0 {
		return nil, false // chunked or until close
	}
	if !dated {
		b = appendDate(b)
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
	text := errorText(status, err, w.brief)
	b = appendStatusLine(b, status)
	b = fmt.Appendf(b, "Content-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nContent-Length: %d\r\n", len(text))
	b = w.endHead(b)
	if w.method != http.MethodHead {
		b = append(b, text...)
	}
	w.write(b)
}

// appendDate appends a Date field of now, for a response the backend left
// undated: a proxy with a clock dates what it forwards (RFC 9110, 6.6.1),
// as net/http's server does.
func appendDate(b []byte) []byte {
	b = append(b, "Date: "...)
	b = time.Now().UTC().AppendFormat(b, http.TimeFormat)
	return append(b, "\r\n"...)
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
// not those its Connection names, not Content-Length, which the writer
// sets from the framing it chose, and not those whose name is no token:
// textproto reads "Transfer-Encoding : chunked" as a field of its own
// (Go issue 34540), which net/http's server would not write either.
func appendHeader(b []byte, h http.Header) []byte {
	conn := h["Connection"]
	for name, values := range h {
		if !passedOn(name, conn) {
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

// passedOn reports whether appendHeader writes the field name of a
// header whose Connection values are conn.
func passedOn(name string, conn []string) bool {
	return !isHopHeader(name) && name != "Content-Length" && validName(name) && (len(conn) == 0 || !tokenIn(conn, name))
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
