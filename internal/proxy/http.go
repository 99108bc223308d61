package proxy

import (
	"bufio"
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/west-tunnel/west/internal/acl"
	"github.com/west-tunnel/west/internal/lograte"
	"github.com/west-tunnel/west/internal/tunnel"
	"github.com/west-tunnel/west/internal/wire"
)

// Dialer opens a stream through a tunnel to the far side, which connects
// it to h.Target. tunnel.Client and a peer of tunnel.Server both serve.
type Dialer interface {
	Dial(ctx context.Context, h wire.Header) (net.Conn, error)
}

// DialerFunc adapts a function to Dialer.
type DialerFunc func(ctx context.Context, h wire.Header) (net.Conn, error)

func (f DialerFunc) Dial(ctx context.Context, h wire.Header) (net.Conn, error) { return f(ctx, h) }

// Route maps a path prefix to an outgoing URL.
type Route struct {
	// Path is the prefix: it matches itself and paths below it at a "/".
	Path string
	// Target is the outgoing URL; the rest of the request path after Path
	// is appended to its path, and the request's query to its query.
	Target *url.URL
	// Allow decides whether an HTTP client at addr may use the route; nil
	// allows all.
	Allow func(addr netip.Addr) bool
}

// HTTPOptions configures an HTTP listener's handler.
type HTTPOptions struct {
	// Name labels the listener in logs (its listen URL).
	Name string
	// Peer labels the tunnel peer in logs, and names it to PeerDraining.
	Peer string
	// PeerDialed says that Peer is the URL of a tunnel server this west
	// dialed (ea), not the name of a client that dialed in (en): the two
	// can be spelled alike.
	PeerDialed bool
	// Routes is the path table; the longest matching Path wins.
	Routes []Route
	// Dialer opens tunnel streams. Required.
	Dialer Dialer
	// Timeout bounds the wait for a backend's response headers, not the
	// body, which may stream for as long as it needs. Zero means 60s.
	Timeout time.Duration
	// TLSConfig is used for https:// targets; nil means the system roots.
	TLSConfig *tls.Config
	// Logger receives an access-log line per request; nil discards them.
	Logger *slog.Logger
	// Observe, if set, is told of every finished request, for metrics.
	Observe func(Record)
	// BriefErrors keeps why out of the listener's own error answers: the
	// body gives the status alone, and why goes only to the log (Record's
	// Err), for clients who should not learn the tunnel's or a route's
	// names.
	BriefErrors bool
	// Via tells this listener apart from every other west's listener
	// (node gives the west's ID and the listener's URL). Each route
	// derives from it, and its Path, the name it adds to each request it
	// forwards in the West-Via header (routeVia), by which it knows a
	// request that has come back to it around a loop of wests: one whose
	// West-Via already names the route it would take is answered 508
	// Loop Detected rather than sent round again. One that comes back to
	// the listener for another route is no loop: a chain may leave the
	// listener and enter it again (a route whose ou, through a peer,
	// leads to another of its paths), and a loop, its routes being
	// finite, takes one of them twice. Empty adds none and checks none.
	// It is not the standard Via, which west does not add, as nginx and
	// Go's reverse proxy do not: a backend behind nginx would stop
	// compressing its answers (gzip_proxied takes a request with Via for
	// a proxy's).
	Via string
}

// Record describes one proxied request once it has finished.
type Record struct {
	Listener string
	Route    string // the matched Path, or "" when none matched
	Method   string
	Path     string
	Status   int // 499 when the client went away first
	// BytesIn is the request body's length, as its Content-Length gave
	// it; for an exchange upgraded (101), the bytes the client sent
	// after the 101. A tcp:// listener's is what its client sent.
	BytesIn int64
	// BytesOut is the response body's length, as sent; for an upgraded
	// exchange, the bytes sent to the client after the 101.
	BytesOut int64
	Duration time.Duration
	Err      error // why the proxy answered an error status, if it did
}

// HTTP is the handler of an http:// proxy listener.
type HTTP struct {
	opts      HTTPOptions
	log       *slog.Logger
	routes    []route // longest Path first
	guarded   bool    // a route has an access list
	transport *streamTransport

	// active counts the requests being served, so that a retired handler
	// can tell when it has finished them (Finished).
	active   atomic.Int64
	retired  atomic.Bool
	finished chan struct{}
	finish   sync.Once

	afterMu     sync.Mutex
	afterFinish []func() // see AfterFinish

	// warnLog passes one warning a second: a client causes a failed
	// request (peer down, backend gone) as often as it likes.
	warnLog lograte.Limit
}

type route struct {
	Route
	proxy *httputil.ReverseProxy
	addr  string // the target's host:port
	// sentDir is the target's path as its backend reads it, with no
	// final "/": where the access check finds what a path sent reaches.
	sentDir string
	// via is the route's name in West-Via (routeVia); empty for none.
	via []byte
}

// NewHTTP returns the handler for an HTTP listener.
func NewHTTP(opts HTTPOptions) *HTTP {
	if opts.Timeout <= 0 {
		opts.Timeout = 60 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &HTTP{opts: opts, log: log.With("listener", opts.Name, "peer", opts.Peer), finished: make(chan struct{})}
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		// The listener's timeout bounds the far side's answer to the
		// stream too, not only the backend's response headers.
		ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
		defer cancel()
		return opts.Dialer.Dial(ctx, wire.Header{Kind: wire.KindHTTP, Target: addr})
	}
	fallback := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return dial(ctx, addr)
		},
		TLSClientConfig: opts.TLSConfig,
		// An https:// backend's handshake is part of waiting for its
		// answer: without a bound, one that never completes it held the
		// request for as long as the client waited.
		TLSHandshakeTimeout:    opts.Timeout,
		ResponseHeaderTimeout:  opts.Timeout,
		MaxResponseHeaderBytes: maxResponseHeader,
		ExpectContinueTimeout:  time.Second,
		// Streams are cheap to keep; reusing them saves a tunnel round trip
		// per request.
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		// Request bodies leave through this buffer: at the default 4 KiB,
		// an upload crossed the tunnel in 4 KiB frames. One full
		// multiplexer frame instead.
		WriteBufferSize: tunnel.MaxPayload,
	}
	h.transport = &streamTransport{dial: dial, fallback: fallback, headerTimeout: opts.Timeout,
		idleTimeout: fallback.IdleConnTimeout, maxIdle: fallback.MaxIdleConnsPerHost}
	for _, r := range opts.Routes {
		via := routeVia(opts.Via, r.Path)
		rt := route{Route: r, proxy: h.newReverseProxy(r, via), via: []byte(via)}
		if r.Target != nil {
			rt.addr = canonicalAddr(r.Target)
			rt.sentDir = strings.TrimSuffix(cleanPath(r.Target.EscapedPath()), "/")
		}
		h.routes = append(h.routes, rt)
		h.guarded = h.guarded || r.Allow != nil
	}
	// Longest prefix first, so the first match is the best.
	for i := 1; i < len(h.routes); i++ {
		for j := i; j > 0 && len(h.routes[j].Path) > len(h.routes[j-1].Path); j-- {
			h.routes[j], h.routes[j-1] = h.routes[j-1], h.routes[j]
		}
	}
	return h
}

// routeVia is the name that the route of path gives itself in West-Via
// on a listener that HTTPOptions.Via is via for, "" without via: a hash,
// which tells the backends that read it nothing but that a west passed
// the request on.
func routeVia(via, path string) string {
	if via == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(via + " " + path))
	return "west-" + hex.EncodeToString(sum[:8])
}

func (h *HTTP) newReverseProxy(r Route, via string) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			rewriteURL(pr.Out.URL, pr.In.URL, r.Path, r.Target)
			pr.Out.Host = r.Target.Host
			if r.Target.Scheme == "https" {
				pr.Out = withHandshakeWatch(pr.Out)
			}
			if via != "" {
				pr.Out.Header.Add("West-Via", via)
			}
			if pr.In.Context().Value(fromWestKey{}) != nil {
				// The client is a west's listener: its X-Forwarded
				// headers name the client that reached it.
				for _, k := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded"} {
					if v := pr.In.Header[k]; v != nil {
						pr.Out.Header[k] = v
					}
				}
				return
			}
			pr.SetXForwarded()
		},
		Transport:  h.transport,
		BufferPool: bodyBufs,
		// The stream transport refuses such a status itself; this is for
		// fallback's, which passes it on, and net/http's server panics on it.
		ModifyResponse: func(resp *http.Response) error {
			if resp.StatusCode < 100 {
				return errBogusStatus(resp.StatusCode)
			}
			// The reverse proxy refuses a switch to a protocol other than
			// the one asked for, but leaves the backend's connection, the
			// tunnel stream, open for as long as the backend keeps it; an
			// error here has it closed.
			if resp.StatusCode == http.StatusSwitchingProtocols {
				if asked, got := upgradeType(resp.Request.Header), upgradeType(resp.Header); asked == "" || !strings.EqualFold(asked, got) {
					return fmt.Errorf("backend switched protocols to %q when %q was asked for", got, asked)
				}
				dropHopHeadersOf101(resp.Header)
			}
			return nil
		},
		ErrorHandler: h.serveError,
		ErrorLog:     slog.NewLogLogger(h.log.Handler(), slog.LevelWarn),
	}
}

// dropHopHeadersOf101 removes the hop-by-hop fields of a 101's header h
// but "Connection: Upgrade" and Upgrade, which the switch needs: the
// reverse proxy copies a 101's header to the client as it came, fields
// the backend's Connection names included (RFC 9110, 7.6.1).
func dropHopHeadersOf101(h http.Header) {
	upgrade := h["Upgrade"]
	dropHopHeaders(h)
	h["Connection"], h["Upgrade"] = []string{"Upgrade"}, upgrade
}

// upgradeType is the protocol a request or response with header h
// switches to, as the reverse proxy reads it: "" without "Connection:
// Upgrade".
func upgradeType(h http.Header) string {
	if !tokenIn(h["Connection"], "Upgrade") {
		return ""
	}
	return h.Get("Upgrade")
}

// rewriteURL points out at target, keeping the part of in's path below
// prefix and in's query.
func rewriteURL(out, in *url.URL, prefix string, target *url.URL) {
	path := joinPath(in.EscapedPath(), prefix, target)
	out.Scheme, out.Host = target.Scheme, target.Host
	out.Path, out.RawPath = path, ""
	if p, err := url.PathUnescape(path); err == nil {
		out.Path = p
		if p != path {
			out.RawPath = path
		}
	}
	out.RawQuery = joinQuery(in.RawQuery, target.RawQuery)
}

// joinPath is the escaped path a request for path goes to on target: the
// part of path below prefix, appended to target's path.
func joinPath(path, prefix string, target *url.URL) string {
	rest := strings.TrimPrefix(path, strings.TrimSuffix(prefix, "/"))
	out := target.EscapedPath()
	if rest != "" {
		out = strings.TrimSuffix(out, "/") + rest
	}
	if out == "" {
		out = "/"
	}
	return out
}

// joinQuery is the query a request with query in goes to target with.
func joinQuery(in, target string) string {
	switch {
	case target == "":
		return in
	case in == "":
		return target
	}
	return target + "&" + in
}

// match returns the route for path: the longest Path equal to it or
// above it at a "/" boundary.
func (h *HTTP) match(path string) *route {
	for i := range h.routes {
		// atOrUnder's test, written out: this runs for every request, and
		// atOrUnder is too large to inline.
		p := h.routes[i].Path
		if path == p || strings.HasPrefix(path, p) && (strings.HasSuffix(p, "/") || path[len(p)] == '/') {
			return &h.routes[i]
		}
	}
	return nil
}

// refusedFold returns the route whose access list refuses a client at
// addr path as a backend reads it in any case of its letters, or nil: the
// longest routes path lies at or under, letters compared without regard
// to case. Among routes of that length, one spelt as path is decides
// alone over those to its backend: routes "/Docs" and "/docs" tell that
// their backend reads case. They tell nothing of another backend: over
// a route to one, it decides only for a request that it serves itself,
// rt, which goes to its own backend.
func (h *HTTP) refusedFold(rt *route, path string, addr netip.Addr) *route {
	first, longest := -1, -1
	var exact *route
	for i := range h.routes {
		ft := &h.routes[i]
		p := ft.Path
		if len(p) < longest {
			break
		}
		if !atOrUnder(path, p, true) {
			continue
		}
		if first < 0 {
			first, longest = i, len(p)
		}
		if path[:len(p)] == p {
			exact = ft
			break
		}
	}
	if first < 0 {
		return nil
	}
	if exact != nil && exact.Allow != nil && !exact.Allow(addr) {
		return exact
	}
	for i := first; i < len(h.routes) && len(h.routes[i].Path) == longest; i++ {
		ft := &h.routes[i]
		if ft == exact || ft.Allow == nil || ft.Allow(addr) || !atOrUnder(path, ft.Path, true) {
			continue
		}
		if exact != nil && (rt == exact || sameBackend(exact, ft)) {
			continue
		}
		return ft
	}
	return nil
}

// refusedDir returns a route whose Path is path with a final "/" and
// whose access list refuses a client at addr, or nil. Such a route does
// not match path itself, but many backends serve "/docs" as "/docs/"
// (Express's mounted routers, Flask without strict slashes). A route
// of path's own, rt, serving the request tells that it is routed apart.
func (h *HTTP) refusedDir(rt *route, path string, addr netip.Addr) *route {
	var refused *route
	for i := range h.routes {
		dt := &h.routes[i]
		p := dt.Path
		if p == path && dt == rt {
			return nil
		}
		if refused == nil && len(p) == len(path)+1 && p[len(path)] == '/' && dt.Allow != nil && hasPrefixFold(p, path) && !dt.Allow(addr) {
			refused = dt
		}
	}
	return refused
}

// sameBackend reports whether routes a and b go to one backend.
func sameBackend(a, b *route) bool {
	// Host names are case-insensitive: "BE" and "be" are one backend.
	return a.Target != nil && b.Target != nil && strings.EqualFold(a.addr, b.addr) && a.Target.Scheme == b.Target.Scheme
}

// atOrUnder reports whether path is p or lies below it at a "/", p's own
// final "/" counting as one; with fold, ASCII letters in any case.
func atOrUnder(path, p string, fold bool) bool {
	if fold && !hasPrefixFold(path, p) || !fold && !strings.HasPrefix(path, p) {
		return false
	}
	return len(path) == len(p) || strings.HasSuffix(p, "/") || path[len(p)] == '/'
}

// hasPrefixFold reports whether s begins with prefix, ASCII letters
// compared without regard to case. Not strings.EqualFold, which made
// allows three times as slow for a plain path: refusedFold reads every one.
func hasPrefixFold(s, prefix string) bool {
	if len(s) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		if a, b := s[i]|0x20, prefix[i]|0x20; s[i] != prefix[i] && (a != b || a < 'a' || a > 'z') {
			return false
		}
	}
	return true
}

// allows reports whether a client at addr may have rt serve a request
// for escaped, the path as sent. A backend decodes and cleans the path it
// gets ("/%61dmin", "/x/../admin" and "//admin" all reach its /admin), so
// the client must also pass the list of the route the cleaned path
// matches; otherwise a route's ca could be passed through a wider route
// to the same backend.
//
// The backend cleans the path rt sends it, rt's outgoing path with the
// rest after it; where a route renames its prefix ("/app" sends to
// "/v1"), dot segments land elsewhere there than in this table:
// "/app/../v1/admin" is "/v1/admin" here, which no route takes, and
// "/v1/../v1/admin" there. So with dot segments the client must pass the
// list of the route whose outgoing path is the nearest above the path
// sent, as the backend will read it, too.
//
// All this holds for each reading (below) that reads escaped otherwise:
// which ways a backend reads paths, west cannot know.
func (h *HTTP) allows(rt *route, escaped string, addr netip.Addr) bool {
	return h.refusedBy(rt, escaped, addr) == nil
}

// refusedBy returns the route whose access list refuses a client at addr
// a request for escaped that rt serves, as allows judges it, or nil if
// none does: rt itself, or the route the path reaches once decoded and
// cleaned.
func (h *HTTP) refusedBy(rt *route, escaped string, addr netip.Addr) *route {
	if !h.guarded {
		// No list to get past: the common case reads no path.
		return nil
	}
	if rt.Allow != nil && !rt.Allow(addr) {
		return rt
	}
	ways := triggers(escaped)
	if ways != 0 && h.allowedByAll(addr) {
		// No reading can reach a route that refuses the client: spare
		// the readings, which a long path makes cost milliseconds, and
		// the decoding that finds those a "%25" calls for.
		return nil
	}
	ways = decodedTriggers(escaped, ways)
	for r := range ways + 1 {
		if r&^ways != 0 {
			continue
		}
		if by := h.refusedRead(rt, escaped, addr, r); by != nil {
			return by
		}
	}
	return nil
}

// allowedByAll reports whether every route's access list allows a
// client at addr.
func (h *HTTP) allowedByAll(addr netip.Addr) bool {
	for i := range h.routes {
		if allow := h.routes[i].Allow; allow != nil && !allow(addr) {
			return false
		}
	}
	return true
}

// refusedRead is refusedBy for a backend that reads paths r's way.
func (h *HTTP) refusedRead(rt *route, escaped string, addr netip.Addr, r reading) *route {
	clean, kept := readPath(escaped, r)
	// IIS, and a backend serving files from a case-insensitive file
	// system, reads "/ADMIN" and "/%41dmin" as /admin.
	if ft := h.refusedFold(rt, clean, addr); ft != nil {
		return ft
	}
	if st := h.refusedDir(rt, clean, addr); st != nil {
		return st
	}
	if clean == escaped {
		return nil
	}
	if ct := h.match(clean); ct != nil && ct.Allow != nil && !ct.Allow(addr) {
		return ct
	}
	if kept == "" {
		return nil
	}
	// A backend may decode a path and route it by its prefix with its dot
	// segments in place: WSGI servers pass Flask and Django "/%61dmin/../x"
	// as "/admin/../x" (PEP 3333), under /admin.
	if kt := h.match(kept); kt != nil && kt.Allow != nil && !kt.Allow(addr) {
		return kt
	}
	if rt.Target != nil {
		// A route that sends its path as it came ("/admin" to "/admin")
		// sends escaped, read as clean already: a long path is not read
		// twice.
		sent := clean
		if out := joinPath(escaped, rt.Path, rt.Target); out != escaped {
			sent, _ = readPath(out, r)
		}
		return h.refusedSent(rt, sent, addr)
	}
	return nil
}

// refusedSent returns the route to rt's backend whose access list refuses
// a client at addr sent, a path as the backend reads it, or nil: a route
// whose outgoing path is the longest that sent lies at or under
// (refusedTied), and in any case of its letters the longest such. Among
// these of one length, one spelt as sent decides alone, as in
// refusedFold: outgoing paths to one backend spelt in two cases tell
// that it reads case.
func (h *HTTP) refusedSent(rt *route, sent string, addr netip.Addr) *route {
	exactLen := h.matchSent(rt, sent, false)
	if by := h.refusedTied(rt, sent, exactLen, addr); by != nil {
		return by
	}
	if foldLen := h.matchSent(rt, sent, true); foldLen > exactLen {
		for i := range h.routes {
			ot := &h.routes[i]
			if ot.Allow == nil || !sameBackend(ot, rt) {
				continue
			}
			if dir := ot.sentDir; len(dir) == foldLen && atOrUnder(sent, dir, true) && !ot.Allow(addr) {
				return ot
			}
		}
	}
	return nil
}

// matchSent returns the length of the longest outgoing path to rt's
// backend that sent, a path as the backend reads it, lies at or under;
// with fold, in any case of its letters; -1 with none.
func (h *HTTP) matchSent(rt *route, sent string, fold bool) int {
	n := -1
	for i := range h.routes {
		ot := &h.routes[i]
		if !sameBackend(ot, rt) {
			continue
		}
		if dir := ot.sentDir; (dir == "" || atOrUnder(sent, dir, fold)) && len(dir) > n {
			n = len(dir)
		}
	}
	return n
}

// refusedTied returns the route whose access list refuses a client at
// addr among the routes to rt's backend whose outgoing path, n long,
// sent lies at or under, or nil. Routes that send to one path tell
// nothing of which of them the backend serves sent as: rt, if one of
// them, decides, as it passed its own list; otherwise any that refuses
// does, whatever the routes' order.
func (h *HTTP) refusedTied(rt *route, sent string, n int, addr netip.Addr) *route {
	var refused *route
	for i := range h.routes {
		ot := &h.routes[i]
		if !sameBackend(ot, rt) {
			continue
		}
		if dir := ot.sentDir; len(dir) != n || dir != "" && !atOrUnder(sent, dir, false) {
			continue
		}
		if ot == rt {
			return nil
		}
		if refused == nil && ot.Allow != nil && !ot.Allow(addr) {
			refused = ot
		}
	}
	return refused
}

// A reading is a way in which backends read a path otherwise than by
// decoding it and removing its dot segments (RFC 3986). Each lets other
// spellings reach a route, and its ca must hold for those too.
type reading uint8

const (
	// params: a segment's name ends at ";", as servlet containers
	// (Tomcat, Jetty, Spring) drop path parameters before removing dot
	// segments: "/admin;x" and "/x/..;/admin" are their /admin.
	params reading = 1 << iota
	// backslash: "\" and "%5C" separate segments as "/" does, on IIS
	// and wherever Windows paths are served: "/x%5C..%5Cadmin".
	backslash
	// rawSlash: "%2F" and "%5C" are part of a segment's name (Apache's
	// AllowEncodedSlashes NoDecode, Tomcat's encodedSolidusHandling
	// passthrough), so "/x/../admin/y%2F..%2F../.." is their /admin/.
	rawSlash
	// trailing: a segment's trailing dots and spaces are dropped, as
	// Windows drops them from file names (IIS serving files): "/admin./x",
	// "/admin%20/x" and "/admin..." are its /admin.
	trailing
	// double: the path is decoded twice, as IIS once did and as does a
	// framework that unescapes a path its server already unescaped:
	// "/%2561dmin" and "/x/%252e%252e/admin" are its /admin.
	double
)

// decodedTriggers is ways, the readings escaped's spelling calls for,
// with those its first decoding calls for when ways holds double (a path
// with no trigger of its own has none once decoded either).
func decodedTriggers(escaped string, ways reading) reading {
	if ways&double != 0 {
		// What the first decoding spells ("%255C" is "%5C") calls for
		// readings of its own; once, not again for each "%2525".
		if once, err := url.PathUnescape(escaped); err == nil {
			ways |= triggers(once) &^ double
		}
	}
	return ways
}

// triggers returns the readings that escaped's own spelling calls for.
func triggers(escaped string) reading {
	var ways reading
	for i := 0; i < len(escaped); i++ {
		switch escaped[i] {
		case ';':
			ways |= params
		case '\\':
			ways |= backslash
		case '.':
			if segmentEnds(escaped, i+1) && !dotSegment(escaped, i+1) {
				ways |= trailing
			}
		case ' ':
			// Only in a path decoded once (decodedTriggers): "%2520" is "%20"
			// there, but "%20%252F" is " %2F", its space ending a segment.
			if segmentEnds(escaped, i+1) {
				ways |= trailing
			}
		case '%':
			switch hex := escaped[i+1 : min(i+3, len(escaped))]; {
			case strings.EqualFold(hex, "2f"):
				ways |= rawSlash
			case strings.EqualFold(hex, "5c"):
				ways |= backslash | rawSlash
			case hex == "25":
				ways |= double
			case hex == "20":
				if segmentEnds(escaped, i+3) {
					ways |= trailing
				}
			case strings.EqualFold(hex, "2e"):
				if segmentEnds(escaped, i+3) && !dotSegment(escaped, i+3) {
					ways |= trailing
				}
			}
		}
	}
	return ways
}

// segmentEnds reports whether a segment of escaped may end at i, in some
// reading: at its end, a "/", "\", ";", or an encoded "/" or "\".
func segmentEnds(escaped string, i int) bool {
	if i == len(escaped) {
		return true
	}
	switch escaped[i] {
	case '/', '\\', ';':
		return true
	case '%':
		hex := escaped[i+1 : min(i+3, len(escaped))]
		return strings.EqualFold(hex, "2f") || strings.EqualFold(hex, "5c")
	}
	return false
}

// dotSegment reports whether the segment of escaped that ends at end is
// "." or "..", its dots encoded or not.
func dotSegment(escaped string, end int) bool {
	dots := 0
	for i := end - 1; i >= 0; i-- {
		switch {
		case escaped[i] == '/' || escaped[i] == '\\':
			return dots == 1 || dots == 2
		case escaped[i] == '.':
			dots++
		case i >= 2 && escaped[i-2] == '%' && escaped[i-1] == '2' && escaped[i]|0x20 == 'e':
			dots++
			i -= 2
		default:
			return false
		}
	}
	return false
}

// encodedSlashes keeps "%2F" and "%5C" encoded through url.PathUnescape.
var encodedSlashes = strings.NewReplacer("%2f", "%252f", "%2F", "%252F", "%5c", "%255c", "%5C", "%255C")

// readPath is escaped as a backend reading it r's way sees it: decoded,
// with its dot segments and repeated slashes gone, keeping a trailing
// slash; escaped itself when r is none and it has nothing to decode or
// clean. kept is the path decoded with its dot segments kept, "" if it
// has none.
func readPath(escaped string, r reading) (clean, kept string) {
	if r == 0 && !strings.Contains(escaped, "%") && !strings.Contains(escaped, "//") && !strings.Contains(escaped, "/.") {
		return escaped, ""
	}
	p := escaped
	if r&double != 0 {
		once, err := url.PathUnescape(p)
		if err != nil {
			return escaped, ""
		}
		p = escapeStrays(once)
	}
	if r&params != 0 {
		p = dropParams(p, r&backslash != 0)
	}
	if r&rawSlash != 0 {
		p = encodedSlashes.Replace(p)
	}
	p, err := url.PathUnescape(p)
	if err != nil {
		return escaped, ""
	}
	if r&backslash != 0 {
		p = strings.ReplaceAll(p, `\`, "/")
	}
	if r&trailing != 0 {
		p = trimSegments(p)
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "." || seg == ".." {
			kept = p
			break
		}
	}
	clean = path.Clean("/" + p)
	// A final "." or ".." leaves its slash, as RFC 3986 (5.2.4) removes
	// dot segments and backends read them: "/admin/." is "/admin/".
	if (strings.HasSuffix(p, "/") || strings.HasSuffix(p, "/.") || strings.HasSuffix(p, "/..")) && clean != "/" {
		clean += "/"
	}
	return clean, kept
}

// cleanPath is readPath's clean path for a backend that reads paths as
// RFC 3986 does.
func cleanPath(escaped string) string {
	clean, _ := readPath(escaped, 0)
	return clean
}

// escapeStrays is s with each "%" that begins no escape written "%25",
// so that it decodes as a backend that decodes leniently keeps it.
func escapeStrays(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && (i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2])) {
			if b.Len() == 0 {
				b.Grow(len(s) + 8)
			}
			b.WriteString(s[:i])
			b.WriteString("%25")
			s, i = s[i+1:], -1
		}
	}
	if b.Len() == 0 {
		return s
	}
	b.WriteString(s)
	return b.String()
}

// trimSegments is p, a decoded path, with its segments' trailing dots
// and spaces dropped, as Windows reads file names. A segment of dots and
// spaces only is "." or ".." if it is one but for its spaces, as for a
// backend that drops only those, and otherwise goes ("..." is "").
func trimSegments(p string) string {
	var b strings.Builder
	b.Grow(len(p))
	for {
		seg, rest, more := strings.Cut(p, "/")
		n := len(seg)
		if seg != "." && seg != ".." {
			for n > 0 && (seg[n-1] == '.' || seg[n-1] == ' ') {
				n--
			}
			if n == 0 {
				if t := strings.TrimRight(seg, " "); t == "." || t == ".." {
					seg, n = t, len(t)
				}
			}
		}
		b.WriteString(seg[:n])
		if !more {
			return b.String()
		}
		b.WriteByte('/')
		p = rest
	}
}

// dropParams is escaped without its segments' parameters: each ";" up to
// the next "/" (or "\" with backslash).
func dropParams(escaped string, backslash bool) string {
	seps := "/"
	if backslash {
		seps = `/\`
	}
	var b strings.Builder
	for {
		i := strings.IndexByte(escaped, ';')
		if i < 0 {
			b.WriteString(escaped)
			return b.String()
		}
		b.WriteString(escaped[:i])
		j := strings.IndexAny(escaped[i:], seps)
		if j < 0 {
			return b.String()
		}
		escaped = escaped[i+j:]
	}
}

// nulPath reports whether escaped holds a NUL once decoded ("%00"), or
// decoded twice ("%2500") as some backends do. A backend written in C
// ends the path there: "/admin%00.png" is its /admin. No name of a file
// or route holds a NUL, and nginx answers such a path 400 too; so every
// listener answers it 400, whatever its routes, rather than read each
// path ended at its NUL too.
func nulPath(escaped string) bool {
	i := strings.IndexByte(escaped, '%')
	if i < 0 {
		return false
	}
	if strings.Contains(escaped[i:], "%00") {
		return true
	}
	if !strings.Contains(escaped[i:], "%25") {
		return false
	}
	once, err := url.PathUnescape(escaped)
	return err == nil && strings.Contains(once, "%00")
}

// errNULPath is why a path with a NUL was answered 400.
var errNULPath = errors.New("a NUL in the path")

// maxGuardedPath is the longest path a listener with a route's access
// list reads, nginx's and Apache's default bound on a request line. Each
// way a backend may read a path costs a pass over it, and a path can
// call for 32 such readings: a 60 KiB one took 40 ms of CPU.
const maxGuardedPath = 8 << 10

// tooLong reports whether escaped is a path too long for h to read every
// way its routes' access lists need (maxGuardedPath).
func (h *HTTP) tooLong(escaped string) bool {
	return h.guarded && len(escaped) > maxGuardedPath
}

// bodyBufSize is the body copy buffer of the reverse proxy and of the
// request loop's responses. It was one multiplexer frame when frames
// were 64 KiB (32 KiB, the reverse proxy's own size, took two writes per
// frame); with 256 KiB frames, a 256 KiB buffer made downloads no faster
// (BENCHMARKS.md, stop 21) and would hold four times the memory per copy.
const bodyBufSize = 64 << 10

// bodyBufs lends the reverse proxy its body copy buffers, which it would
// otherwise allocate for every request.
var bodyBufs = &bufferPool{sync.Pool{New: func() any { return new([bodyBufSize]byte) }}}

type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte { return b.p.Get().(*[bodyBufSize]byte)[:] }

func (b *bufferPool) Put(buf []byte) {
	if cap(buf) == bodyBufSize {
		b.p.Put((*[bodyBufSize]byte)(buf[:bodyBufSize]))
	}
}

// looped reports whether the West-Via header values vias name route rt
// as one the request has passed already: it has come round a loop.
func looped(rt *route, vias []string) bool {
	if len(rt.via) == 0 {
		return false
	}
	for _, v := range vias {
		for entry := range strings.SplitSeq(v, ",") {
			if strings.TrimSpace(entry) == string(rt.via) {
				return true
			}
		}
	}
	return false
}

// ServeHTTP proxies one request.
func (h *HTTP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.active.Add(1)
	defer h.leave()
	start := time.Now()
	rec := &recorder{ResponseWriter: w, http10: !r.ProtoAtLeast(1, 1)}
	// Worked out once: EscapedPath checks RawPath against Path each call.
	escaped := r.URL.EscapedPath()
	nul := nulPath(escaped)
	long := !nul && h.tooLong(escaped)
	var rt, refused *route // refused: the route whose access list refuses the client
	if !nul && !long {
		rt = h.match(escaped)
	}
	if rt != nil {
		refused = h.refusedBy(rt, escaped, acl.PeerAddr(r.RemoteAddr))
	}
	brokeOff := false // the response broke off: see proxy
	switch {
	case nul:
		rec.err = errNULPath
		h.writeError(rec, http.StatusBadRequest, rec.err)
	case long:
		rec.err = fmt.Errorf("a path of %d bytes, over the %d a listener with an access list reads", len(escaped), maxGuardedPath)
		h.writeError(rec, http.StatusRequestURITooLong, rec.err)
	case rt == nil:
		rec.err = fmt.Errorf("no route for %s", escaped) // as routes match it
		h.writeError(rec, http.StatusNotFound, rec.err)
	case refused != nil:
		rec.err = fmt.Errorf("client %s not in the access list of %s", r.RemoteAddr, refused.Path)
		h.writeError(rec, http.StatusForbidden, rec.err)
	case looped(rt, r.Header["West-Via"]):
		rec.err = fmt.Errorf("request loop: the request has come through this listener's route %s before (its West-Via header names %s): "+
			"a route's ou leads back to it", rt.Path, rt.via)
		h.writeError(rec, http.StatusLoopDetected, rec.err)
	default:
		// A switch to h2c would turn the connection into HTTP/2 frames
		// passed on unread: requests for any path of the backend, past
		// the path table and its access lists (h2c smuggling). The
		// request goes on as HTTP/1.1, as a server may ignore an Upgrade;
		// the reverse proxy forwards it until golang/go#80416.
		if tokenIn(r.Header["Upgrade"], "h2c") {
			r.Header.Del("Upgrade")
			r.Header.Del("Http2-Settings")
		}
		// Let the request body keep streaming after the response starts
		// (an echo, a bidirectional stream); Go's HTTP/1 server otherwise
		// stops reading it then. HTTP/2 is always full duplex.
		http.NewResponseController(w).EnableFullDuplex()
		// With full duplex, the Transport may still read or close the body
		// after a failed round trip; be done with it before returning
		// (golang/go#68560), or net/http panics on the next request. Not
		// with the body's own Close, which reads what is left of it
		// before the answer goes out: a client that sent "Expect:
		// 100-continue" to a backend that answered without asking for the
		// body waited for an answer that waited for the body.
		if r.Body != http.NoBody {
			rec.body.r = r.Body
			// A client silent mid-body for as long as one may idle
			// between requests is gone: otherwise it would hold its
			// tunnel stream and the backend's connection for ever.
			if srv, ok := r.Context().Value(http.ServerContextKey).(*http.Server); ok && srv.IdleTimeout > 0 {
				rec.body.rc, rec.body.idle = http.NewResponseController(w), srv.IdleTimeout
			}
			r.Body = &rec.body
			defer rec.body.done(r)
		}
		if upgradeType(r.Header) != "" {
			// The backend's connection, so that a client lost with its
			// tunnel (the middle of a chain) resets it (upgradedConn).
			u := new(upgradedConn)
			rec.upgrade = u
			r = r.WithContext(httptrace.WithClientTrace(r.Context(), &httptrace.ClientTrace{
				GotConn: func(i httptrace.GotConnInfo) { u.backend = i.Conn },
			}))
		}
		brokeOff = h.proxy(rt, rec, r)
	}
	// A client that went away (or only half-closed its connection, which
	// net/http takes for the same) before any answer gets none: net/http
	// would otherwise send an empty 200 for the handler that wrote
	// nothing.
	abort := brokeOff || rec.status < 200 && rec.status != http.StatusSwitchingProtocols &&
		rec.err != nil && r.Context().Err() != nil
	if !abort {
		rec.commit() // a response without a body has its status sent now
	}
	status := rec.status
	if status == 0 {
		status = http.StatusOK
	}
	if r.Context().Err() != nil && rec.err != nil {
		status = statusClientGone
	}
	record := Record{
		Listener: h.opts.Name, Method: r.Method, Path: r.URL.Path,
		Status: status, BytesOut: rec.bytes, Duration: time.Since(start), Err: rec.err,
	}
	if rt != nil {
		record.Route = rt.Path
	}
	if r.ContentLength > 0 {
		record.BytesIn = r.ContentLength
	}
	if u := rec.upgrade; u != nil && u.Conn != nil { // upgraded: see Hijack
		record.BytesIn, record.BytesOut = u.in.Load(), u.out.Load()
	}
	h.report(record)
	if abort {
		panic(http.ErrAbortHandler)
	}
}

// report logs a finished request and tells Observe of it.
func (h *HTTP) report(record Record) {
	h.logRecord(record)
	if h.opts.Observe != nil {
		h.opts.Observe(record)
	}
}

// proxy runs the route's reverse proxy. When a response body breaks off,
// the reverse proxy aborts the client's connection, and whatever of the
// response sat in net/http's buffer was lost with it: the client saw no
// answer at all. Now a body that broke off before its first byte is
// answered 502 (rec held the status back), and one that broke off later
// is flushed before the abort, so the client sees it cut short. The abort
// itself is left to the caller, which reports whether it is due once it
// has counted the request: the reverse proxy's panic skipped that.
func (h *HTTP) proxy(rt *route, rec *recorder, r *http.Request) (abort bool) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		if v != http.ErrAbortHandler {
			panic(v)
		}
		if rec.committed {
			http.NewResponseController(rec.ResponseWriter).Flush()
			rec.err = cmp.Or(rec.err, errBrokeOffBody)
			abort = true
			return
		}
		rec.discard()
		h.serveError(rec, r, errBrokeOff)
		abort = rec.status == 0 // the client is gone: nothing to answer
	}()
	rt.proxy.ServeHTTP(rec, r)
	return false
}

// errBrokeOffBody is why a response was cut short in its body.
var errBrokeOffBody = errors.New("the response broke off in its body")

// errBrokeOff is why a response that broke off before its body began was
// answered 502.
var errBrokeOff = errors.New("the response broke off before its body began")

func (h *HTTP) logRecord(rec Record) {
	level := LevelAccess
	skipped := 0
	if rec.Err != nil && rec.Status >= 500 && rec.Status != statusClientGone {
		// One a second at Warn; the others as access lines, which a
		// verbose logger still shows.
		if ok, n := h.warnLog.Allow(); ok {
			level, skipped = slog.LevelWarn, n
		}
	}
	// Most runs do not log access lines; build none for them.
	if !h.log.Enabled(context.Background(), level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("method", rec.Method), slog.String("path", rec.Path),
		slog.String("route", rec.Route), slog.Int("status", rec.Status),
		slog.Int64("bytes_out", rec.BytesOut), slog.Duration("duration", rec.Duration),
	}
	if rec.Status == http.StatusSwitchingProtocols {
		// What the client sent after the 101; an ordinary request's
		// BytesIn is only its Content-Length, and is not logged.
		attrs = append(attrs, slog.Int64("bytes_in", rec.BytesIn))
	}
	if rec.Err != nil {
		attrs = append(attrs, slog.String("err", rec.Err.Error()))
	}
	if skipped > 0 {
		attrs = append(attrs, slog.Int("not_logged_since", skipped))
	}
	h.log.LogAttrs(context.Background(), level, "request", attrs...)
}

// LevelAccess is the level of access-log lines: between debug and info, so
// that a "verbose" logger shows them and a default one does not.
const LevelAccess = slog.Level(-2)

// statusClientGone is logged, never sent: the client left before the answer.
const statusClientGone = 499

// handshakeKey is the context key of a request's handshakeWatch.
type handshakeKey struct{}

// handshakeWatch keeps the error of an https:// backend's TLS handshake.
type handshakeWatch struct{ failed atomic.Bool }

// withHandshakeWatch returns req watched for a failed TLS handshake, which
// serveError then names: crypto/tls's errors ("tls: first record does
// not look like a TLS handshake") name no backend.
func withHandshakeWatch(req *http.Request) *http.Request {
	hw := &handshakeWatch{}
	ctx := context.WithValue(req.Context(), handshakeKey{}, hw)
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		TLSHandshakeDone: func(_ tls.ConnectionState, err error) {
			if err != nil {
				hw.failed.Store(true)
			}
		},
	})
	return req.WithContext(ctx)
}

// serveError is the reverse proxy's ErrorHandler.
func (h *HTTP) serveError(w http.ResponseWriter, r *http.Request, err error) {
	if hw, ok := r.Context().Value(handshakeKey{}).(*handshakeWatch); ok && hw.failed.Load() {
		err = fmt.Errorf("TLS handshake with backend %s failed: %w", r.URL.Host, err)
	}
	// w is the recorder ServeHTTP gave the reverse proxy.
	if rec, ok := w.(*recorder); ok {
		rec.err = err
	}
	if r.Context().Err() != nil {
		return // nobody is listening
	}
	if r.Body != nil && r.Body != http.NoBody {
		// The body may be unread: the client must not reuse the connection.
		w.Header().Set("Connection", "close")
	}
	status := statusFor(err)
	if rec, ok := w.(*recorder); ok && rec.body.failed() {
		// The client's body was malformed (a bad chunk), not the
		// backend's answer: the client is told so.
		status = http.StatusBadRequest
	}
	h.writeError(w, status, err)
}

// statusFor maps a proxying error to the status the HTTP client sees.
func statusFor(err error) int {
	var reject *wire.RejectError
	var netErr net.Error
	switch {
	case errors.Is(err, tunnel.ErrPeerDown):
		return http.StatusServiceUnavailable
	case errors.As(err, &reject):
		switch reject.Code {
		case wire.CodeOverloaded:
			return http.StatusServiceUnavailable
		case wire.CodeTimeout:
			return http.StatusGatewayTimeout
		case wire.CodeForbidden:
			return http.StatusForbidden
		case wire.CodeLoop:
			return http.StatusLoopDetected
		}
		return http.StatusBadGateway
	case errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &netErr) && netErr.Timeout():
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

func (h *HTTP) writeError(w http.ResponseWriter, status int, err error) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	io.WriteString(w, errorText(status, err, h.opts.BriefErrors))
}

// errorText is the body of an error answer: the status and, unless
// brief, why.
func errorText(status int, err error, brief bool) string {
	if brief {
		return fmt.Sprintf("west: %d %s\n", status, http.StatusText(status))
	}
	return fmt.Sprintf("west: %d %s: %v\n", status, http.StatusText(status), err)
}

// CloseIdleConnections closes the idle tunnel streams kept for reuse.
func (h *HTTP) CloseIdleConnections() { h.transport.CloseIdleConnections() }

// drainSweep is how often a listener closes the idle connections of its
// fallback transport while its peer drains.
const drainSweep = 50 * time.Millisecond

// PeerDraining is told that peer, a far west, has begun to drain, until
// done (its tunnel ends); dialed says that this west dialed the tunnel,
// as Session.Dialed. If peer is this listener's, the listener stops
// keeping streams to it idle: it closes those idle now, and each one an
// exchange ends on from now on, so that the far west's drain, which waits
// for them to end, ends with the last exchange. The fast path sees the
// drain on each stream; the fallback transport's pool cannot be sorted,
// so its idle connections are closed every drainSweep until done, or
// until h, retired, has finished.
func (h *HTTP) PeerDraining(peer string, dialed bool, done <-chan struct{}) {
	if peer != h.opts.Peer || dialed != h.opts.PeerDialed {
		return
	}
	h.transport.closeIdleToDraining()
	go func() {
		tick := time.NewTicker(drainSweep)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				h.transport.closeIdleToDraining()
			case <-done:
				return
			case <-h.finished: // retired: finishRetired emptied the pool for good
				return
			}
		}
	}()
}

// BriefErrors reports whether h's own error answers give the status
// alone (HTTPOptions.BriefErrors).
func (h *HTTP) BriefErrors() bool { return h.opts.BriefErrors }

// Retire closes the idle tunnel streams of a handler that takes no new
// requests (a reload replaced it, or its listener stopped), and each
// stream its requests in flight give back as they end.
func (h *HTTP) Retire() {
	h.transport.retire()
	h.retired.Store(true)
	if h.active.Load() == 0 {
		h.finishRetired()
	}
}

// leave ends a request begun with h.active.Add(1). Between it and Retire,
// one sees the other's write (Go's atomics are sequentially consistent),
// so that the last request of a retired handler closes Finished.
func (h *HTTP) leave() {
	if h.active.Add(-1) == 0 && h.retired.Load() {
		h.finishRetired()
	}
}

// finishRetired runs each time a retired handler's requests have all
// ended. The fallback transport pools the connections its requests gave
// back since Retire (its own streams it closes as they come back); each
// would hold a tunnel stream and a backend connection for its idle
// timeout, though nothing draws from the pool any more. Each time, not
// once: a request that chose the handler just before the swap may enter
// it after Finished has closed.
func (h *HTTP) finishRetired() {
	h.transport.CloseIdleConnections()
	h.finish.Do(func() { close(h.finished) })
	h.afterMu.Lock()
	for _, f := range h.afterFinish {
		go f()
	}
	h.afterMu.Unlock()
}

// AfterFinish runs f, in a goroutine of its own, once h has finished (see
// Finished), and again each time its requests have all ended since: a
// request that chose h just before a reload swapped it out may enter it
// after Finished has closed, and bring back what f undid (a removed
// route's metric series). f must bear running more than once, even at
// once.
func (h *HTTP) AfterFinish(f func()) {
	h.afterMu.Lock()
	h.afterFinish = append(h.afterFinish, f)
	h.afterMu.Unlock()
	select {
	case <-h.finished:
		go f()
	default:
	}
}

// Finished returns a channel that closes once Retire has been called and
// the requests h was serving have ended: a reload waits on it to forget
// the metrics of the routes it removed.
func (h *HTTP) Finished() <-chan struct{} { return h.finished }

// recorder notes the status and body size of a response, and why the
// proxy answered an error, if it did. It holds a final status back until
// the first byte of the body, a flush or the handler's end, so that a
// response that breaks off before its body can still become an error. It
// unwraps for http.ResponseController, so upgrades reach the real writer.
type recorder struct {
	http.ResponseWriter
	status    int
	pending   int  // a final status not yet passed on
	committed bool // a final status has been passed on
	bytes     int64
	err       error
	body      handlerBody // the request's body, as the reverse proxy reads it
	http10    bool        // the client speaks HTTP/1.0, and must get no 1xx answer
	// upgrade is an upgrade request's: it learns its backend's connection
	// as the request goes out, and the client's once upgraded (Hijack).
	// One pointer, so that a recorder, made for every request, stays
	// within its allocation size class.
	upgrade *upgradedConn
}

// handlerBody is a request body that the handler can be done with: once
// closed, it reads no more, after any read in progress has returned. It
// leaves the body itself to net/http, which closes it once the answer has
// gone out.
type handlerBody struct {
	mu     sync.Mutex
	r      io.ReadCloser
	closed bool
	bad    atomic.Bool // reading the client's body failed
	// rc bounds each read from the client to idle, when set.
	rc    *http.ResponseController
	idle  time.Duration
	armed time.Time // when the deadline was last set, zero if lifted
}

func (b *handlerBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	if b.rc != nil {
		// Setting a deadline costs a timer update: while the body keeps
		// coming it is set again once a second (or a quarter of a short
		// idle) at most, as the loop sets its own, not twice a read.
		// Between reads nothing else reads the connection.
		if now := time.Now(); now.Sub(b.armed) > min(time.Second, b.idle/4) {
			b.rc.SetReadDeadline(now.Add(b.idle))
			b.armed = now
		}
	}
	n, err := b.r.Read(p)
	if b.rc != nil && err != nil && !isTimeout(err) {
		// Lifted once the body has ended: the deadline is the
		// connection's, and net/http's watch for the client's leaving
		// reads it from then on, for the response's life. Once it has
		// run out it stays, so that net/http, discarding the rest of the
		// body as the handler ends, does not wait again.
		b.rc.SetReadDeadline(time.Time{})
		b.armed = time.Time{}
	}
	if err != nil && err != io.EOF {
		b.bad.Store(true)
	}
	return n, err
}

// failed reports whether reading the client's body failed. It does not
// wait for a read in progress.
func (b *handlerBody) failed() bool { return b.bad.Load() }

func (b *handlerBody) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return nil
}

// done closes b and gives r its own body back: net/http judges by it
// whether the connection may carry another request (not after an
// "Expect: 100-continue" whose body was never asked for).
func (b *handlerBody) done(r *http.Request) {
	b.Close()
	r.Body = b.r
}

func (r *recorder) WriteHeader(code int) {
	if code < 200 {
		if r.http10 && code != http.StatusSwitchingProtocols {
			// HTTP/1.0 has none: its client would take one for the
			// answer (RFC 9110, 15.2).
			return
		}
		if code == http.StatusContinue {
			// net/http's server sends the client its own 100 Continue
			// once the body is first read, which the Transport does on
			// the backend's 100, before it reports that 100 here: passed
			// on too, it reached the client as a second one.
			return
		}
		// Informational answers (103 Early Hints) go out at once, without
		// their hop-by-hop fields (RFC 9110, 7.6.1), as the loop sends
		// them: the reverse proxy copies a 1xx's header as it came.
		dropHopHeaders(r.Header())
		if r.status == 0 {
			r.status = code
		}
		r.ResponseWriter.WriteHeader(code)
		return
	}
	if r.committed || r.pending != 0 {
		return // net/http would ignore it too
	}
	r.status, r.pending = code, code
}

// dropHopHeaders removes h's hop-by-hop fields and those its Connection
// names.
func dropHopHeaders(h http.Header) {
	for _, v := range h["Connection"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for name := range h {
		if isHopHeader(name) {
			delete(h, name)
		}
	}
}

// commit passes a held-back status on, if any: the response has begun.
func (r *recorder) commit() {
	if r.pending != 0 {
		// A proxy passes on the backend's Content-Type, or none: without
		// this, net/http would guess one from the body.
		if h := r.Header(); h["Content-Type"] == nil {
			h["Content-Type"] = nil
		}
		r.ResponseWriter.WriteHeader(r.pending)
		r.pending = 0
	}
	r.committed = true
}

// discard forgets a held-back status and the header that came with it.
func (r *recorder) discard() {
	r.status, r.pending = 0, 0
	clear(r.Header())
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 || r.status < 200 {
		r.status = http.StatusOK
	}
	r.commit()
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

// FlushError sends the held-back status, if any, and flushes.
func (r *recorder) FlushError() error {
	r.commit()
	return http.NewResponseController(r.ResponseWriter).Flush()
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Hijack hands the client's connection to the reverse proxy, which does
// so only to switch protocols once the backend has answered 101: the
// exchange is counted as the 101 its client got. The connection comes
// back as an upgradedConn, which counts the bytes it carries.
func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(r.ResponseWriter).Hijack()
	if err != nil {
		return c, brw, err
	}
	r.status, r.pending, r.committed = http.StatusSwitchingProtocols, 0, true
	if r.upgrade == nil {
		r.upgrade = new(upgradedConn) // none asked for: the backend's is unknown
	}
	r.upgrade.Conn, r.upgrade.r = c, brw.Reader
	return r.upgrade, brw, nil
}

// upgradedConn is a client's connection after a switch of protocols, as
// the reverse proxy copies it to and from the backend's stream. It reads
// first what net/http had read ahead of the upgrade request (the reverse
// proxy reads the connection, not the reader it was given with it), and
// when the backend's stream fails rather than ends (its tunnel was lost,
// or a middle west of a chain aborted it), it resets the client's
// connection, as a tcp:// listener does, so that the client does not take
// what it got for the whole.
//
// It counts the bytes it reads from the client and writes to it, for the
// exchange's access line. The two directions are copied by goroutines of
// the reverse proxy's, which returns once both have ended, or at once
// when one fails: a direction still under way then may add to its count
// after the handler has read it, hence the atomics. Only an upgraded
// connection pays for them, one per read or write.
type upgradedConn struct {
	net.Conn
	r       *bufio.Reader // net/http's, until empty
	backend net.Conn      // the backend's stream, if known
	in, out atomic.Int64  // bytes read from and written to the client
}

func (c *upgradedConn) Read(b []byte) (int, error) {
	if c.r != nil {
		if n := c.r.Buffered(); n > 0 {
			n, err := c.r.Read(b[:min(len(b), n)])
			c.in.Add(int64(n))
			return n, err
		}
		c.r = nil
	}
	n, err := c.Conn.Read(b)
	c.in.Add(int64(n))
	if err != nil && c.backend != nil {
		// A client whose tunnel was lost (a stream handed to this
		// listener in the middle of a chain): the backend's stream is
		// reset as lost, not ended as after a half-close.
		resetIfLost(c.backend, c.Conn)
	}
	return n, err
}

func (c *upgradedConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.out.Add(int64(n))
	return n, err
}

// ReadFrom copies the backend's stream to the client (io.Copy calls it).
func (c *upgradedConn) ReadFrom(src io.Reader) (int64, error) {
	buf := bodyBufs.Get()
	defer bodyBufs.Put(buf)
	// Through c's Write, which counts, and without c.Conn's ReadFrom.
	n, err := io.CopyBuffer(struct{ io.Writer }{c}, src, buf)
	if err != nil {
		abortConn(c.Conn)
	}
	return n, err
}

// CloseWrite passes the backend's end of stream on as a half-close.
func (c *upgradedConn) CloseWrite() error { return closeWrite(c.Conn) }

// abortConn has c's close be a failure its peer sees: a tunnel stream's
// abort (a chain's middle west serving a stream in process), or a TCP
// reset.
func abortConn(c net.Conn) {
	switch c := streamOf(c).(type) {
	case interface{ Abort() error }:
		c.Abort()
	case interface{ SetLinger(int) error }:
		c.SetLinger(0)
	}
}
