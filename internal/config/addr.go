package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
)

// urlRole is what a URL is for, which decides what it may hold.
type urlRole int

const (
	listenURL    urlRole = iota // an address to listen on: host may be empty, port may be 0
	dialURL                     // an address to connect to: host and a non-zero port
	tcpTargetURL                // like dialURL, with a port and no path or query
)

// parseURL parses s as an absolute URL with one of schemes, or says why
// it is not one.
func parseURL(s string, role urlRole, schemes ...string) (*url.URL, string) {
	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error repeats the whole URL
		}
		return nil, err.Error()
	}
	switch {
	case u.Scheme == "":
		return nil, "no scheme"
	case !slices.Contains(schemes, u.Scheme):
		return nil, fmt.Sprintf("scheme %s is not allowed here", quote(u.Scheme))
	case u.Opaque != "" || u.Host == "":
		return nil, "no host"
	case u.User != nil:
		return nil, "user information is not allowed"
	case u.Fragment != "" || strings.Contains(s, "#"):
		return nil, "a fragment is not allowed"
	}
	h := u.Hostname()
	if h == "" && role != listenURL {
		return nil, "no host"
	}
	if h != "" && !validHost(h) {
		return nil, fmt.Sprintf("bad host %s", quote(h))
	}
	if u.Port() == "" {
		if role == tcpTargetURL {
			return nil, "no port"
		}
		return u, ""
	}
	n, ok := parsePort(u.Port())
	switch {
	case !ok:
		return nil, fmt.Sprintf("port %s is not a number 0-65535", quote(u.Port()))
	case n == 0 && role != listenURL:
		return nil, "port 0 is only for listening"
	case role == tcpTargetURL && (u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.ForceQuery):
		return nil, "only a scheme, host and port are allowed"
	}
	return u, ""
}

// hostPort is the host:port a URL stands for, with port def when it has
// none.
func hostPort(u *url.URL, def int) string {
	n, ok := parsePort(u.Port()) // "0080" and "80" are one port
	if !ok {
		n = def
	}
	return net.JoinHostPort(u.Hostname(), strconv.Itoa(n))
}

// defaultPort is the port a ws://, wss://, http:// or https:// URL
// reaches when it names none.
func defaultPort(scheme string) int {
	if scheme == "wss" || scheme == "https" {
		return 443
	}
	return 80
}

// urlKey is u normalized for comparing tunnel server URLs: scheme and host
// in lower case, the default port dropped, and an empty path as "/".
func urlKey(u *url.URL) string {
	host := strings.ToLower(u.Hostname())
	if n, ok := parsePort(u.Port()); ok && n != defaultPort(u.Scheme) {
		host = net.JoinHostPort(host, strconv.Itoa(n))
	} else if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	p := u.EscapedPath()
	if p == "" {
		p = "/"
	}
	k := strings.ToLower(u.Scheme) + "://" + host + p
	if u.RawQuery != "" || u.ForceQuery {
		k += "?" + u.RawQuery
	}
	return k
}

// listenAddr checks a host:port listen address and returns it with the
// port in canonical form, or says why it is bad.
func listenAddr(s string) (string, string) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			return "", ae.Err
		}
		return "", err.Error()
	}
	n, ok := parsePort(port)
	if !ok {
		return "", fmt.Sprintf("port %s is not a number 0-65535", quote(port))
	}
	if host != "" && !validHost(host) {
		return "", fmt.Sprintf("bad host %s", quote(host))
	}
	return net.JoinHostPort(host, strconv.Itoa(n)), ""
}

func parsePort(s string) (int, bool) {
	if s == "" || len(s) > 5 || strings.Trim(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil && n <= 65535
}

// validHost reports whether h is an IP address or a DNS name. Names are
// letters, digits, '-' and '_' in dot-separated labels; others would only
// fail later, at listen or dial time.
func validHost(h string) bool {
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	if len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, c := range label {
			if c != '-' && c != '_' && !('a' <= c && c <= 'z') && !('A' <= c && c <= 'Z') && !('0' <= c && c <= '9') {
				return false
			}
		}
	}
	return true
}

// validPath reports whether p is a URL path: it starts with "/" and holds
// only characters allowed in a path and %XX escapes. Route paths are
// compared with a request's escaped path, so anything else never matches.
func validPath(p string) bool {
	if !strings.HasPrefix(p, "/") {
		return false
	}
	for i := 0; i < len(p); i++ {
		if p[i] == '%' {
			if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
				return false
			}
			i += 2
			continue
		}
		if !isPathChar(p[i]) {
			return false
		}
	}
	return true
}

// validServePath reports whether p can be the tunnel server's path: a
// clean path of plain characters. The server answers a request whose
// decoded path is p (node's onlyPath), which a p with an escape in it
// could never be.
func validServePath(p string) bool {
	if !validPath(p) || strings.Contains(p, "%") {
		return false
	}
	c := path.Clean(p)
	return c == p || c+"/" == p
}

func isPathChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		strings.IndexByte("-._~!$&'()*+,;=:@/", c) >= 0
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// Listen is one address a configuration listens on.
type Listen struct {
	Path    string // the JSON path that names it: "west.cp", "wsts.sp" or a proxy's key
	Network string // "tcp" or "udp", whose ports are apart
	Addr    string // host:port as configured
}

// Listens returns the addresses c listens on: the control port, the
// tunnel server, then the proxy listeners in the order of c.Proxies.
func (c *Config) Listens() []Listen {
	var ls []Listen
	if c.West.ControlAddr != "" {
		ls = append(ls, Listen{"west.cp", "tcp", c.West.ControlAddr})
	}
	if c.Server != nil {
		ls = append(ls, Listen{"wsts.sp", "tcp", c.Server.Addr})
	}
	for _, p := range c.Proxies {
		ls = append(ls, p.listen(field("proxy", p.URL.String())))
	}
	return ls
}

// listen is p's listen address, named by the JSON path p.
func (p Proxy) listen(path string) Listen {
	network := "tcp"
	if p.Kind == KindUDP {
		network = "udp"
	}
	return Listen{path, network, p.Addr}
}

// CheckBinds checks c's listen addresses for clashes as Parse does, with
// each host name that bound maps (in lower case) to an address compared
// as that address: Parse resolves no names, so it cannot tell that
// "localhost:8080" is "127.0.0.1:8080". A name bound lacks is compared by
// its spelling, as Parse compares it. Its errors are *Error.
func (c *Config) CheckBinds(bound map[string]netip.Addr) error {
	ls := &listeners{bound: bound}
	for _, l := range c.Listens() {
		if err := ls.add(l); err != nil {
			return err
		}
	}
	return nil
}

// Clash reports whether two sockets of one network, bound to a and b,
// cannot both be open: the rule Parse and CheckBinds apply.
func Clash(a, b netip.AddrPort) bool {
	return sockAddr{ip: a.Addr().Unmap(), port: a.Port()}.clashes(sockAddr{ip: b.Addr().Unmap(), port: b.Port()})
}

// sockAddr is a listen address as the check of clashes compares it: the
// IP address a socket binds (the unspecified one binds every address),
// or else a host name in lower case; and a port.
type sockAddr struct {
	ip   netip.Addr
	name string
	port uint16
}

// clashes reports whether sockets of one network bound to a and b
// cannot both be open. Port 0 picks a free port each time, so never
// clashes. A socket on every address holds its port on each of them, so
// it clashes with any other on the port: Go listens on "", "0.0.0.0" and
// "[::]" alike, as "::" taking IPv4 too, and Linux refuses the second
// with EADDRINUSE.
func (a sockAddr) clashes(b sockAddr) bool {
	switch {
	case a.port != b.port || a.port == 0:
		return false
	case a.ip.IsUnspecified() || b.ip.IsUnspecified():
		return true
	case a.ip.IsValid() || b.ip.IsValid():
		return a.ip == b.ip
	}
	return a.name == b.name
}

// listeners holds the listen addresses in use, each with the JSON path
// that claimed it, to catch two listeners that cannot both bind.
type listeners struct {
	bound  map[string]netip.Addr // host names resolved (CheckBinds); nil in Parse
	claims []claim
}

type claim struct {
	Listen
	at       sockAddr
	resolved bool // at.ip is what a name was resolved to
}

// add claims l, or says which earlier claim it clashes with.
func (ls *listeners) add(l Listen) error {
	c, ok := ls.claim(l)
	if !ok {
		return nil // not host:port; Parse has refused it already
	}
	for _, o := range ls.claims {
		if o.Network != c.Network || !o.at.clashes(c.at) {
			continue
		}
		msg := fmt.Sprintf("want a listen address of its own, got %s, which %s listens on too", c.spelling(), o.Path)
		if o.Addr != c.Addr {
			msg += " as " + o.spelling()
		}
		return errf(c.Path, "%s", msg)
	}
	ls.claims = append(ls.claims, c)
	return nil
}

// claim reads l's address for comparing.
func (ls *listeners) claim(l Listen) (claim, bool) {
	c := claim{Listen: l}
	host, port, err := net.SplitHostPort(l.Addr)
	n, ok := parsePort(port)
	if err != nil || !ok {
		return c, false
	}
	c.at.port = uint16(n)
	ip, err := netip.ParseAddr(host)
	switch name := strings.ToLower(host); {
	case host == "":
		c.at.ip = netip.IPv6Unspecified()
	case err == nil:
		// One address, many spellings: "0::1" is "::1", and Go listens
		// on "::ffff:127.0.0.1" as on 127.0.0.1.
		c.at.ip = ip.Unmap()
	case ls.bound[name].IsValid():
		c.at.ip, c.resolved = ls.bound[name].Unmap(), true
	default:
		c.at.name = name
	}
	return c, true
}

// spelling is c's address as configured and, if a name, what it was
// resolved to.
func (c claim) spelling() string {
	if c.resolved {
		return fmt.Sprintf("%s (resolved to %s)", c.Addr, netip.AddrPortFrom(c.at.ip, c.at.port))
	}
	return c.Addr
}
