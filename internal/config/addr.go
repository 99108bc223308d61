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
// clean path of plain characters, since it becomes an http.ServeMux
// pattern, which reads spaces, braces and escapes as syntax.
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

// listeners holds the listen addresses in use, each with the JSON path
// that claimed it, to catch two listeners that cannot both bind.
type listeners struct{ claims []claim }

type claim struct{ host, port, path string }

// add claims addr for the JSON path p. Two listeners clash on one port if
// they share an address, or if either binds every address, which holds
// the port on each of them (Linux refuses the second with EADDRINUSE).
func (ls *listeners) add(addr, p string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "0" {
		return nil // port 0 picks a free port each time, so never collides
	}
	host = strings.ToLower(host)
	if a, err := netip.ParseAddr(host); err == nil {
		// One address, many spellings: "0::1" is "::1", and Go listens
		// on "::ffff:127.0.0.1" as on 127.0.0.1.
		host = a.Unmap().String()
	}
	switch host {
	case "", "0.0.0.0", "::":
		// Each binds every address; Go's "" and "::" take IPv4 too, and
		// so does "0.0.0.0", which it listens on as "::".
		host = "*"
	}
	for _, c := range ls.claims {
		if c.port == port && (c.host == host || c.host == "*" || host == "*") {
			return errf(p, "want a listen address of its own, got %s, which %s listens on too", addr, c.path)
		}
	}
	ls.claims = append(ls.claims, claim{host, port, p})
	return nil
}
