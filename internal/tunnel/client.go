package tunnel

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/west-tunnel/west/internal/sockio"
	"github.com/west-tunnel/west/internal/wire"
)

// ClientOptions configures a Client. The zero value of every field but URL,
// Name and Handler means its default.
type ClientOptions struct {
	URL     string        // tunnel server, ws:// or wss://. Required.
	Name    string        // sent as the Origin header. Required.
	Handler StreamHandler // serves the streams the server opens. Required.

	// West is an ID (see NewID) that the tunnel clients of one west
	// share: the client sends it with its own (InstanceHeader), so that a
	// server reached by two of them, under two URLs, keeps both tunnels.
	// Empty sends neither.
	West string

	// Lazy delays the first connection until a Dial needs it (the seed's
	// "ee": "no"). Once connected, the client keeps the tunnel up.
	Lazy bool
	// MinBackoff is the first wait after a failed connection; it doubles
	// up to MaxBackoff, each wait jittered by ±20%. Zero means 250ms and 15s.
	MinBackoff, MaxBackoff time.Duration
	// StableAfter is how long a session must last before the backoff
	// starts again from MinBackoff; shorter ones (a server that accepts and
	// drops at once) keep it growing. Zero means 1s, so that a path that
	// flaps every few seconds is redialled within MinBackoff each time.
	StableAfter time.Duration
	// ConnectWait is how long Dial waits for a connection attempt under
	// way before it answers ErrPeerDown. Zero means 3s.
	ConnectWait time.Duration
	// HandshakeTimeout bounds the WebSocket handshake. Zero means 10s.
	HandshakeTimeout time.Duration
	// TLSConfig is used for wss:// URLs; nil means the system roots. It
	// is the tunnel server's alone: an https:// proxy is checked against
	// the system roots and shown no client certificate.
	TLSConfig *tls.Config
	// Header holds extra handshake headers (for example a token).
	Header http.Header
	// Mux tunes the multiplexer.
	Mux MuxOptions
	// Logger receives the client's logs; nil discards them.
	Logger *slog.Logger
	// OnSession, if set, is told of every session that starts and ends.
	OnSession func(s *Session, up bool)
	// OnPeerDraining, if set, is told when the server's notice says that
	// it has begun to drain (see Session.NoticeDrain).
	OnPeerDraining func(s *Session)
	// OnOverloaded, if set, is told of every stream the server opened
	// that was refused because Mux.MaxStreams were open, for metrics:
	// the Handler never sees it.
	OnOverloaded func()
}

// State is where a Client stands.
type State int

const (
	StateIdle       State = iota // lazy, waiting for the first Dial
	StateConnecting              // a connection attempt is under way
	StateUp                      // a session is up
	StateBackoff                 // the last attempt failed; waiting to retry
	StateStopped                 // Run has returned
)

func (s State) String() string {
	return [...]string{"idle", "connecting", "up", "backoff", "stopped"}[s]
}

// Status is a snapshot of a Client for the control port.
type Status struct {
	State     State
	Since     time.Time // when State was entered
	LastError error     // the last connection or session error, if any
	RetryAt   time.Time // in StateBackoff, when the next attempt starts
	Connects  int       // sessions established so far
	Session   *Session  // in StateUp
}

// Client keeps one tunnel to a tunnel server up.
type Client struct {
	opts ClientOptions
	log  *slog.Logger
	id   string // this client's half of InstanceHeader, for its life

	attempts uint64 // connection attempts so far (AttemptHeader); Run's alone

	demand  chan struct{} // poked by Dial when lazy and idle
	dialing atomic.Int32  // Dial calls under way (see Dialing)

	mu      sync.Mutex // guards the fields below
	status  Status
	changed chan struct{} // closed and replaced whenever status changes
}

// NewClient returns a Client; call Run to start it.
func NewClient(opts ClientOptions) *Client {
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 250 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 15 * time.Second
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = opts.MinBackoff
	}
	if opts.StableAfter <= 0 {
		opts.StableAfter = time.Second
	}
	if opts.ConnectWait <= 0 {
		opts.ConnectWait = 3 * time.Second
	}
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = 10 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Client{
		opts:    opts,
		id:      NewID(),
		log:     log.With("server", opts.URL),
		demand:  make(chan struct{}, 1),
		changed: make(chan struct{}),
	}
	c.status = Status{State: StateConnecting, Since: time.Now()}
	if opts.Lazy {
		c.status.State = StateIdle
	}
	return c
}

// Status returns a snapshot of the client's state.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

func (c *Client) setStatus(update func(*Status)) {
	c.mu.Lock()
	prev := c.status.State
	update(&c.status)
	if c.status.State != prev {
		c.status.Since = time.Now()
	}
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

// Run keeps the tunnel up until ctx is done, then closes it and returns
// once every goroutine it started has stopped.
func (c *Client) Run(ctx context.Context) error {
	defer c.setStatus(func(s *Status) { s.State, s.Session = StateStopped, nil })
	if c.opts.Lazy {
		select {
		case <-c.demand:
		case <-ctx.Done():
			return nil
		}
	}
	backoff := c.opts.MinBackoff
	for {
		c.setStatus(func(s *Status) { s.State = StateConnecting })
		sess, err := c.connect(ctx)
		if err == nil {
			c.setStatus(func(s *Status) { s.State, s.Session, s.LastError = StateUp, sess, nil; s.Connects++ })
			c.log.Info("tunnel up", "remote", sess.remote)
			if c.opts.OnSession != nil {
				c.opts.OnSession(sess, true)
			}
			sess.onPeerDraining = c.opts.OnPeerDraining
			sess.onOverloaded = c.opts.OnOverloaded
			sess.serve(ctx, c.opts.Handler)
			sess.Close()
			if c.opts.OnSession != nil {
				c.opts.OnSession(sess, false)
			}
			lasted := time.Since(sess.since)
			code, reason := sess.peerClosed()
			err = fmt.Errorf("tunnel closed after %s", lasted.Round(time.Millisecond))
			if reason != "" {
				err = fmt.Errorf("%w by the server: %s", err, reason)
			} else if why := sess.dead.Load(); why != nil {
				err = fmt.Errorf("%w: %s", err, *why)
			}
			// Leave StateUp in the same step that drops the session, so that
			// no Dial sees an up state without a session.
			c.setStatus(func(s *Status) { s.State, s.Session, s.LastError = StateConnecting, nil, err })
			if ctx.Err() != nil {
				return nil
			}
			switch {
			case code == closeReplaced:
				// Another live client holds this name: coming straight
				// back would only take it from that one in turn.
				c.log.Warn("tunnel taken over: another tunnel client connected to this server under the same name; "+
					"give each west its own name, or spell each tunnel server one way (not both 127.0.0.1 and localhost)",
					"name", c.opts.Name, "reason", reason, "retry_in", c.opts.MaxBackoff)
				backoff = c.opts.MaxBackoff
			case reason != "":
				c.log.Warn("tunnel down", "after", lasted.Round(time.Millisecond), "reason", reason)
			default:
				c.log.Warn("tunnel down", "after", lasted.Round(time.Millisecond))
			}
			if lasted >= c.opts.StableAfter && code != closeReplaced {
				backoff = c.opts.MinBackoff
			}
		} else {
			if ctx.Err() != nil {
				return nil
			}
			args := []any{"err", err, "retry_in", backoff}
			if hint := sockio.LimitHint(err); hint != "" {
				args = append(args, "hint", hint)
			}
			c.log.Warn("tunnel connect failed", args...)
		}
		wait := jitter(backoff)
		c.setStatus(func(s *Status) {
			s.State, s.RetryAt = StateBackoff, time.Now().Add(wait)
			if err != nil {
				s.LastError = err
			}
		})
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil
		}
		backoff = min(2*backoff, c.opts.MaxBackoff)
	}
}

// jitter spreads d by ±20% so that many clients do not redial in step.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// SetCredentials replaces the TLS configuration and the extra handshake
// headers (ClientOptions.TLSConfig and Header) of the connection attempts
// from the next one on, so that renewed certificates and tokens need no
// new client; the session up, if any, stays.
func (c *Client) SetCredentials(tc *tls.Config, header http.Header) {
	c.mu.Lock()
	c.opts.TLSConfig, c.opts.Header = tc, header
	c.mu.Unlock()
}

// connect dials the server and starts a session.
func (c *Client) connect(ctx context.Context) (*Session, error) {
	hctx, cancel := context.WithTimeout(ctx, c.opts.HandshakeTimeout)
	defer cancel()
	c.mu.Lock()
	tc, header := c.opts.TLSConfig, c.opts.Header.Clone()
	c.mu.Unlock()
	if header == nil {
		header = http.Header{}
	}
	header.Set("Origin", c.opts.Name)
	c.attempts++
	if c.opts.West != "" {
		header.Set(InstanceHeader, c.opts.West+"/"+c.id)
		header.Set(AttemptHeader, strconv.FormatUint(c.attempts, 10))
	}
	if !c.opts.Mux.NoHops {
		header.Set(HopsHeader, "1")
	}
	proxy, err := proxyFor(c.opts.URL)
	if err != nil {
		return nil, fmt.Errorf("dial tunnel server %s: %w", c.opts.URL, err)
	}
	// The websocket package ends a handshake at the context's deadline,
	// not when it is cancelled: a stop (a shutdown, a reload retiring the
	// client) during a handshake the server does not answer would wait
	// for HandshakeTimeout. The connection's deadline, set to the past,
	// ends it then.
	var dialled struct {
		sync.Mutex
		conn net.Conn
	}
	dialer := websocket.Dialer{
		TLSClientConfig: tc,
		Subprotocols:    []string{wire.Subprotocol},
		ReadBufferSize:  wsReadBufferSize,
		WriteBufferSize: wsWriteBufferSize,
		WriteBufferPool: wsWriteBuffers,
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := dialServer(ctx, proxy, network, addr, func(c net.Conn) {
				dialled.Lock()
				dialled.conn = c
				dialled.Unlock()
			})
			if hook := dialledHook.Load(); err == nil && hook != nil {
				(*hook)(conn)
			}
			return conn, err
		},
	}
	interrupt := func() {
		dialled.Lock()
		defer dialled.Unlock()
		if dialled.conn != nil {
			dialled.conn.SetDeadline(aLongTimeAgo)
		}
	}
	stopped := context.AfterFunc(hctx, interrupt)
	// Once the dial has returned the connection, the websocket package
	// sets the handshake's deadline on it, over the past one of a stop
	// that came in between; it reports the connection to GotConn next.
	// A stop by then sets the past deadline again there; one after it
	// sets it in interrupt, after the package's own.
	trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) {
		if hctx.Err() != nil {
			interrupt()
		}
	}}
	ws, resp, err := dialer.DialContext(httptrace.WithClientTrace(hctx, trace), c.opts.URL, header)
	if !stopped() && err == nil {
		// Stopped as the handshake ended: the connection may carry the
		// past deadline.
		ws.Close()
		err = hctx.Err()
	}
	if err != nil {
		if resp == nil && proxy != nil {
			// No answer from the server: the proxy refused or failed, or
			// could not be reached. Say which proxy, without its password.
			err = fmt.Errorf("through proxy %s: %w", proxy.Redacted(), err)
		}
		return nil, fmt.Errorf("dial tunnel server %s: %w", c.opts.URL, describeRefusal(resp, err))
	}
	if proxy != nil {
		c.log.Info("tunnel dialled through a proxy", "proxy", proxy.Redacted())
	}
	if ws.Subprotocol() != wire.Subprotocol {
		ws.Close()
		return nil, fmt.Errorf("dial tunnel server %s: %w: server chose subprotocol %q, want %q", c.opts.URL, errHandshake, ws.Subprotocol(), wire.Subprotocol)
	}
	// The tunnel runs with compression off. The websocket package takes
	// permessage-deflate from a server that answers with it unasked, and
	// its read limit then counts compressed bytes: 2 KiB could carry
	// megabytes.
	if ext := resp.Header.Values("Sec-WebSocket-Extensions"); len(ext) > 0 {
		ws.Close()
		return nil, fmt.Errorf("dial tunnel server %s: %w: server chose extensions %q, none offered", c.opts.URL, errHandshake, ext)
	}
	sess, err := startSession(ws, true, c.opts.URL, ws.RemoteAddr().String(), c.opts.Mux, c.log)
	if err == nil {
		// Set before the session serves or is handed to Dial.
		sess.peerHops = !c.opts.Mux.NoHops && announcesHops(resp.Header)
	}
	return sess, err
}

// dialledHook, set by tests only, sees each connection to the tunnel
// server as the dial hands it to the websocket package. Atomic, as a
// client left redialling by an earlier test may read it as a test sets it.
var dialledHook atomic.Pointer[func(net.Conn)]

// describeRefusal adds the server's own reason, when it gave one.
func describeRefusal(resp *http.Response, err error) error {
	if resp == nil || resp.StatusCode == http.StatusSwitchingProtocols {
		return err
	}
	var body [512]byte
	n, _ := resp.Body.Read(body[:])
	if n == 0 {
		return fmt.Errorf("%w: %s", errHandshake, resp.Status)
	}
	return fmt.Errorf("%w: %s: %s", errHandshake, resp.Status, firstLine(body[:n]))
}

// firstLine is the first line of a refusal's body, "..." marking more: a
// west's own reason is one line, and a server that is no west (a web
// server, a west's control port) must not spill its page into the logs
// and /healthz, which has one reason per line.
func firstLine(b []byte) string {
	line, rest, _ := bytes.Cut(b, []byte("\n"))
	line = bytes.TrimRight(line, " \r")
	more := len(bytes.TrimSpace(rest)) > 0
	if len(line) > 200 {
		line, more = line[:200], true
	}
	if more {
		return string(line) + " ..."
	}
	return string(line)
}

// Dial opens a stream through the tunnel. When no session is up it starts a
// lazy client, waits up to ConnectWait for an attempt under way, and
// otherwise answers at once with ErrPeerDown and the last error.
func (c *Client) Dial(ctx context.Context, h wire.Header) (net.Conn, error) {
	c.dialing.Add(1)
	defer c.dialing.Add(-1)
	wait := time.NewTimer(c.opts.ConnectWait)
	defer wait.Stop()
	for {
		c.mu.Lock()
		st, changed := c.status, c.changed
		c.mu.Unlock()
		switch {
		case st.State == StateUp && st.Session != nil:
			return st.Session.Open(ctx, h)
		case st.State == StateIdle:
			select {
			case c.demand <- struct{}{}:
			default:
			}
		case st.State == StateBackoff, st.State == StateStopped:
			return nil, c.downError(st)
		}
		select {
		case <-changed:
		case <-wait.C:
			return nil, c.downError(c.Status())
		case <-ctx.Done():
			return nil, fmt.Errorf("tunnel to %s: %w", c.opts.URL, ctx.Err())
		}
	}
}

// Dialing is how many Dial calls are under way: waiting for a tunnel
// to come up, or opening a stream on it. A client retired while some are
// carries them before it stops.
func (c *Client) Dialing() int { return int(c.dialing.Load()) }

func (c *Client) downError(st Status) error {
	err := fmt.Errorf("tunnel to %s is %s: %w", c.opts.URL, st.State, ErrPeerDown)
	if st.LastError != nil {
		err = fmt.Errorf("%w (last error: %v)", err, st.LastError)
	}
	if st.State == StateBackoff {
		err = fmt.Errorf("%w; next attempt in %s", err, time.Until(st.RetryAt).Round(time.Millisecond))
	}
	return err
}
