package node

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/west-tunnel/west/internal/acl"
	"github.com/west-tunnel/west/internal/config"
	"github.com/west-tunnel/west/internal/lograte"
	"github.com/west-tunnel/west/internal/tunnel"
)

// gate decides which tunnel clients the tunnel server admits: wsts.ca by
// address and name, wsts.tokens by a per-name secret, and with cert_names
// the name bound to the client certificate.
type gate struct {
	acl       *acl.List
	tokens    map[string][sha256.Size]byte // by peer name; nil means no tokens
	certNames bool
	failDelay time.Duration   // how long a refusal takes, so guessing is slow
	failures  atomic.Int64    // refusals so far
	onRefuse  func()          // told of each refusal, for metrics; may be nil
	stop      <-chan struct{} // closed as the node stops, ending the waits; may be nil
	weak      []string        // warnings of tokens too short to resist guessing
	log       *slog.Logger
}

func newGate(s *config.TunnelServer, log *slog.Logger) (*gate, error) {
	list, err := acl.Parse(s.ACL, true)
	if err != nil {
		return nil, fmt.Errorf("wsts.ca: %w", err)
	}
	g := &gate{acl: list, certNames: s.CertNames, failDelay: time.Second, log: log}
	if len(s.Tokens) > 0 {
		g.tokens = make(map[string][sha256.Size]byte, len(s.Tokens))
		// In the names' order, so that warnings and errors come alike at
		// every start, reload and west check.
		for _, name := range slices.Sorted(maps.Keys(s.Tokens)) {
			tok, err := s.Tokens[name].Resolve()
			if err != nil {
				return nil, fmt.Errorf("wsts.tokens[%q]: %w", name, err)
			}
			if len(tok) < minTokenLen {
				g.weak = append(g.weak, fmt.Sprintf("wsts.tokens[%q] is %d characters; use at least %d random ones", name, len(tok), minTokenLen))
			}
			g.tokens[name] = sha256.Sum256([]byte(tok))
		}
	}
	return g, nil
}

// authenticated reports whether peers must prove who they are.
func (g *gate) authenticated() bool { return g.tokens != nil || g.certNames }

// openWarning is the warning for tunnel server s when anyone who reaches
// it may connect, and "" when no one can, or only from this host.
func (g *gate) openWarning(s *config.TunnelServer) string {
	if g.authenticated() || s.ClientCAFile != "" || isLoopback(s.Addr) {
		return ""
	}
	return "UNAUTHENTICATED TUNNEL SERVER on a non-loopback address: anyone who reaches it can take any peer name " +
		"and make this west dial any target; set wsts.tokens or wsts.client_ca_file, and west.dial_allow"
}

// admit is the tunnel server's Admit hook.
func (g *gate) admit(r *http.Request, name string) error {
	err := g.check(r, name)
	if err == nil {
		return nil
	}
	g.failures.Add(1)
	if g.onRefuse != nil {
		g.onRefuse()
	}
	// Every refusal takes about failDelay, whatever its cause, so that
	// neither guessing nor timing pays. Not cut short when the request's
	// context ends: a peer that half-closes its side after the request
	// ends that context at once, yet still reads the answer, so it would
	// get its 403 at once, and guess as fast as the server answers.
	d := g.failDelay/2 + rand.N(g.failDelay)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-g.stop:
	}
	return err
}

func (g *gate) check(r *http.Request, name string) error {
	if addr := acl.PeerAddr(r.RemoteAddr); !g.acl.AllowAddr(addr) {
		return fmt.Errorf("address %s is not in wsts.ca", addr)
	}
	if !g.acl.AllowName(name) {
		return fmt.Errorf("peer name %q is not in wsts.ca", name)
	}
	if g.tokens != nil {
		want, known := g.tokens[name]
		got := sha256.Sum256([]byte(bearer(r)))
		// Compare even for an unknown name, so timing tells nothing.
		if subtle.ConstantTimeCompare(got[:], want[:]) != 1 || !known {
			return fmt.Errorf("peer name %q: missing or wrong token", name)
		}
	}
	if g.certNames && !certHasName(r.TLS, name) {
		return fmt.Errorf("peer name %q is not a name of its client certificate", name)
	}
	return nil
}

func bearer(r *http.Request) string {
	v := r.Header.Get("Authorization")
	if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
		return strings.TrimSpace(v[7:])
	}
	return ""
}

// certHasName reports whether the verified client certificate carries
// name as its common name, a DNS name or a URI.
func certHasName(cs *tls.ConnectionState, name string) bool {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return false
	}
	c := cs.PeerCertificates[0]
	if c.Subject.CommonName == name {
		return true
	}
	for _, d := range c.DNSNames {
		if d == name {
			return true
		}
	}
	for _, u := range c.URIs {
		if u.String() == name {
			return true
		}
	}
	return false
}

// serverTLS is the tunnel server's TLS configuration, or nil for ws://.
func serverTLS(s *config.TunnelServer) (*tls.Config, error) {
	if s.URL.Scheme != "wss" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(s.TLSCertFile, s.TLSKeyFile)
	if err != nil {
		return nil, fmt.Errorf("wsts.tls_cert_file, wsts.tls_key_file: %w", err)
	}
	tc := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		// The WebSocket upgrade is an HTTP/1.1 request.
		NextProtos: []string{"http/1.1"},
	}
	if s.ClientCAFile != "" {
		pool, err := loadCAs(s.ClientCAFile, "wsts.client_ca_file")
		if err != nil {
			return nil, err
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// clientTLS is a tunnel client's TLS configuration, or nil for ws://.
func clientTLS(c config.TunnelClient) (*tls.Config, error) {
	if c.URL.Scheme != "wss" {
		return nil, nil
	}
	path := fmt.Sprintf("wstc[%q]", c.URL.String())
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
	if a, err := netip.ParseAddr(c.URL.Hostname()); err == nil && a.Zone() != "" && tc.ServerName == "" {
		// The websocket package would verify "[fe80::1%eth0]", which no
		// certificate names: the zone only says which interface to dial.
		tc.ServerName = a.WithZone("").String()
	}
	if c.CAFile != "" {
		pool, err := loadCAs(c.CAFile, path+".ca_file")
		if err != nil {
			return nil, err
		}
		tc.RootCAs = pool
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%s.cert_file, key_file: %w", path, err)
		}
		// Present it whatever CAs the server names: crypto/tls would send
		// none when they do not match, and the server's "certificate
		// required" would hide that the certificate's CA is the problem.
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	}
	return tc, nil
}

// CheckTLS loads every certificate, key and CA file that cfg names, as
// New does, without building anything else: what `west check` runs.
func CheckTLS(cfg *config.Config) error {
	if cfg.Server != nil {
		if _, err := serverTLS(cfg.Server); err != nil {
			return err
		}
	}
	for _, c := range cfg.Clients {
		if _, err := clientTLS(c); err != nil {
			return err
		}
	}
	for _, p := range cfg.Proxies {
		if _, err := backendTLS(p); err != nil {
			return err
		}
	}
	return nil
}

// CheckSecrets reads every secret that cfg names (wsts.tokens, each
// wstc token), as New does: what `west check` runs beside CheckTLS. It
// returns the warnings that start and each reload log as they read them:
// of tokens too short, and of a tunnel server anyone may use.
func CheckSecrets(cfg *config.Config) (warnings []string, err error) {
	if cfg.Server != nil {
		g, err := newGate(cfg.Server, slog.New(slog.DiscardHandler))
		if err != nil {
			return nil, err
		}
		warnings = g.weak
		if w := g.openWarning(cfg.Server); w != "" {
			warnings = append(warnings, w+" (wsts.sp "+cfg.Server.URL.String()+")")
		}
	}
	for _, c := range cfg.Clients {
		if _, err := tokenHeader(c); err != nil {
			return nil, err
		}
	}
	return warnings, nil
}

// minTokenLen is the length below which a token is worth a warning.
const minTokenLen = 16

// TokenWarnings names the tokens cfg sends in the clear: over ws:// to or
// from a host other than this one, where anyone on the path can read a
// token and take its peer's name. It reads no secret: a file: secret may
// be a pipe that gives it once (short ones are the gate's to tell, as it
// reads them).
func TokenWarnings(cfg *config.Config) []string {
	var out []string
	if s := cfg.Server; s != nil && len(s.Tokens) > 0 && s.URL.Scheme == "ws" && !isLoopback(s.Addr) {
		out = append(out, fmt.Sprintf("wsts.tokens: peers send them in the clear to %s, where anyone on the path can read them; use wss://", s.URL))
	}
	for _, c := range cfg.Clients {
		if c.Token != "" && c.URL.Scheme == "ws" && !loopbackHost(c.URL.Hostname()) {
			out = append(out, fmt.Sprintf("wstc[%q].token: sent in the clear at each handshake, where anyone on the path can read it and take this west's name; use wss://", c.URL.String()))
		}
	}
	return out
}

// proxyWarnings is tunnel.ProxyWarnings for the schemes cfg's tunnel
// clients dial.
func proxyWarnings(cfg *config.Config) []string {
	var schemes []string
	for _, c := range cfg.Clients {
		schemes = append(schemes, c.URL.Scheme)
	}
	return tunnel.ProxyWarnings(schemes...)
}

// ImpliedWarnings names the tunnel servers a listener's "ea" adds to
// wstc (as the original does) whose host and port a wstc key already
// names under another spelling: "wss://h/tunnel/" for "wss://h/tunnel"
// is a second tunnel, to a path the server may not serve, with none of
// the entry's token, CA or certificate, and fails in ways that do not
// point at the typo.
func ImpliedWarnings(cfg *config.Config) []string {
	var out []string
	for _, c := range cfg.Clients {
		if !c.Implied {
			continue
		}
		i := slices.IndexFunc(cfg.Clients, func(o config.TunnelClient) bool {
			return !o.Implied && hostPort(o.URL) == hostPort(c.URL)
		})
		if i < 0 {
			continue
		}
		for _, p := range cfg.Proxies {
			if p.ServerURL == c.URL {
				out = append(out, fmt.Sprintf("proxy[%q].ea: %s is not a key of wstc, so it is dialled with none of the settings of wstc[%q] (token, ca_file, cert_file, nm), a server at the same host and port: a typo?",
					p.URL.String(), c.URL, cfg.Clients[i].URL.String()))
			}
		}
	}
	return out
}

// hostPort is u's host, in lower case, and port, its scheme's default if
// it has none.
func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "80"
		if strings.EqualFold(u.Scheme, "wss") {
			port = "443"
		}
	}
	return net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// Warnings is what `west check` warns of beside CheckSecrets:
// CertWarnings, TokenWarnings, ImpliedWarnings, and the proxy variables
// cfg's tunnel clients would read that do not parse.
func Warnings(cfg *config.Config, now time.Time) []string {
	return slices.Concat(CertWarnings(cfg, now), TokenWarnings(cfg), ImpliedWarnings(cfg), proxyWarnings(cfg))
}

// warnConfig logs Warnings, at start and at each reload (the gate's
// own, of short tokens, are logged as it is made: warnGate).
func (n *Node) warnConfig(cfg *config.Config) {
	for _, w := range CertWarnings(cfg, time.Now()) {
		n.log.Warn("certificate " + w)
	}
	for _, w := range TokenWarnings(cfg) {
		n.log.Warn("tunnel token: " + w)
	}
	for _, w := range proxyWarnings(cfg) {
		n.log.Warn("tunnel client proxy: " + w)
	}
	for _, w := range ImpliedWarnings(cfg) {
		n.log.Warn("tunnel client: " + w)
	}
}

// backendTLS is how an HTTP listener verifies https:// outgoing URLs.
func backendTLS(p config.Proxy) (*tls.Config, error) {
	if p.TLSCAFile == "" {
		return nil, nil
	}
	pool, err := loadCAs(p.TLSCAFile, fmt.Sprintf("proxy[%q].tls_ca_file", p.URL.String()))
	if err != nil {
		return nil, err
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

func loadCAs(file, path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	// Block by block, not AppendCertsFromPEM, which skips a certificate
	// that does not parse: a CA left out of a bundle unsaid is a refusal
	// to be puzzled over later, at a handshake.
	pool := x509.NewCertPool()
	n := 0
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		n++
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: certificate %d: %w", path, file, n, err)
		}
		pool.AddCert(c)
	}
	if n == 0 {
		return nil, fmt.Errorf("%s: %s holds no PEM certificate", path, file)
	}
	return pool, nil
}

// isLoopback reports whether a listen address only accepts local peers.
func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	return loopbackHost(host)
}

// loopbackHost reports whether host, a name or address, is this machine.
func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// tokenHeader is the handshake header carrying a client's token.
func tokenHeader(c config.TunnelClient) (http.Header, error) {
	if c.Token == "" {
		return nil, nil
	}
	tok, err := c.Token.Resolve()
	if err != nil {
		return nil, fmt.Errorf("wstc[%q].token: %w", c.URL.String(), err)
	}
	return http.Header{"Authorization": {"Bearer " + tok}}, nil
}

// tlsErrorLog is a wss:// tunnel server's error log, where net/http
// reports a failed TLS handshake, and only there, as a line
// "http: TLS handshake error from ADDR: ERR". It counts them; it logs the
// ones about certificates as warnings, since a tunnel client that is
// misconfigured (its certificate, or its CA for the server's) causes
// them, and the rest (scanners, plain HTTP, a client that hangs up) at
// debug, as every other line.
type tlsErrorLog struct {
	log    *slog.Logger
	onFail func()
	// warnLog keeps the warnings to one a second: anyone who reaches the
	// server can present a certificate it refuses, as often as it likes.
	warnLog lograte.Limit
}

const tlsHandshakeError = "http: TLS handshake error from "

func (w *tlsErrorLog) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	rest, ok := strings.CutPrefix(line, tlsHandshakeError)
	if !ok {
		w.log.Debug(line)
		return len(p), nil
	}
	w.onFail()
	remote, reason, _ := strings.Cut(rest, ": ")
	if !strings.Contains(reason, "certificate") {
		w.log.Debug("TLS handshake failed", "remote", remote, "err", reason)
		return len(p), nil
	}
	if ok, skipped := w.warnLog.Allow(); ok {
		w.log.Warn("tunnel client's TLS handshake failed", "remote", remote, "err", reason, "not_logged_since", skipped)
	} else {
		w.log.Debug("tunnel client's TLS handshake failed", "remote", remote, "err", reason)
	}
	return len(p), nil
}
