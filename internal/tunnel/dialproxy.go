package tunnel

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"

	xproxy "golang.org/x/net/proxy"

	"github.com/west-tunnel/west/internal/sockio"
)

// proxyFor is the proxy the environment names for a tunnel server, as for
// any Go program: HTTP_PROXY for ws://, HTTPS_PROXY for wss://, neither
// for hosts in NO_PROXY or on loopback. Nil means none. A proxy whose
// scheme west does not speak is an error naming the variable.
func proxyFor(server string) (*url.URL, error) {
	u, err := url.Parse(server)
	if err != nil {
		return nil, err
	}
	target := *u
	switch u.Scheme {
	case "ws":
		target.Scheme = "http"
	case "wss":
		target.Scheme = "https"
	}
	proxy, err := http.ProxyFromEnvironment(&http.Request{URL: &target})
	if err != nil {
		return nil, fmt.Errorf("proxy from the environment: %w", err)
	}
	if proxy == nil {
		return nil, nil
	}
	switch proxy.Scheme {
	case "http", "https", "socks5", "socks5h":
		return proxy, nil
	}
	// Redacted hides a password only in a URL with a host: one net/http
	// read as a scheme and an opaque rest ("user:pa%ss@proxy:3128") is not
	// shown at all.
	shown := proxy.Redacted()
	if proxy.Host == "" {
		shown = "its value not shown, as it may hold a password"
	}
	return nil, fmt.Errorf("%s names a proxy of scheme %q (%s); west speaks http, https, socks5 and socks5h",
		proxyVariable(target.Scheme), proxy.Scheme, shown)
}

// ProxyWarnings names the proxy variables that clients of the given
// schemes ("ws", "wss") read and that net/http skips unsaid (a password's
// "%" left unescaped) or misreads (a URL that does not parse, read as a
// host named "http:"), so that a tunnel would go direct, or nowhere, with
// nothing said of the proxy. Values are not shown: they may hold a
// password.
func ProxyWarnings(schemes ...string) []string {
	var out []string
	for _, s := range []struct{ ws, http string }{{"ws", "http"}, {"wss", "https"}} {
		if !slices.Contains(schemes, s.ws) {
			continue
		}
		name := proxyVariable(s.http)
		if v := os.Getenv(name); v != "" && !parsesAsProxy(v) {
			out = append(out, fmt.Sprintf("%s does not parse as a proxy URL, so %s:// tunnel clients may go direct or fail "+
				"(its value is not shown, as it may hold a password): write a %%, @, : or / in its user or password as %%25, %%40, %%3A or %%2F",
				name, s.ws))
		}
	}
	return out
}

// parsesAsProxy reports whether net/http reads v as the proxy it names:
// a URL with a scheme and a host, or a host:port once "http://" is put
// before it.
func parsesAsProxy(v string) bool {
	if u, err := url.Parse(v); err == nil && u.Scheme != "" && u.Host != "" {
		return true
	}
	if strings.Contains(v, "://") {
		return false // net/http would read "http://" + v: the scheme as a host
	}
	_, err := url.Parse("http://" + v)
	return err == nil
}

// proxyVariable is the variable net/http took the proxy from for a
// target scheme: the upper-case name when it is set, else the lower-case.
func proxyVariable(scheme string) string {
	name := "HTTP_PROXY"
	if scheme == "https" {
		name = "HTTPS_PROXY"
	}
	if os.Getenv(name) == "" && os.Getenv(strings.ToLower(name)) != "" {
		return strings.ToLower(name)
	}
	return name
}

// dialServer connects to server, the tunnel server's host:port, directly
// or through proxy, for the WebSocket handshake (and the tunnel's own TLS)
// to follow. Each TCP connection it makes is handed to made at once, so
// that a stop can end a handshake with the proxy as one with the server.
func dialServer(ctx context.Context, proxy *url.URL, network, server string, made func(net.Conn)) (net.Conn, error) {
	var c net.Conn
	var err error
	switch {
	case proxy == nil:
		c, err = dialTCP(ctx, network, server, made)
	case proxy.Scheme == "http":
		c, err = dialConnect(ctx, proxy, network, server, made)
	case proxy.Scheme == "https":
		c, err = dialConnectTLS(ctx, proxy, network, server, made)
	case proxy.Scheme == "socks5", proxy.Scheme == "socks5h":
		c, err = dialSOCKS(ctx, proxy, network, server, made)
	default:
		err = fmt.Errorf("unknown proxy scheme %q", proxy.Scheme) // proxyFor lets none through
	}
	if err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		// Stopped while the proxy answered: the deadline the stop set
		// may have been cleared since (the SOCKS dialer clears its own).
		c.Close()
		return nil, ctx.Err()
	}
	return c, nil
}

// dialTCP dials addr and hands the connection to made.
func dialTCP(ctx context.Context, network, addr string, made func(net.Conn)) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	made(c)
	return sockio.Wrap(c), nil
}

// proxyPorts are the proxies' default ports, as net/http has them.
var proxyPorts = map[string]string{"http": "80", "https": "443", "socks5": "1080", "socks5h": "1080"}

// proxyAddr is the proxy's host:port.
func proxyAddr(proxy *url.URL) string {
	return net.JoinHostPort(proxy.Hostname(), cmp.Or(proxy.Port(), proxyPorts[proxy.Scheme]))
}

// dialConnect has an HTTP proxy CONNECT to server.
func dialConnect(ctx context.Context, proxy *url.URL, network, server string, made func(net.Conn)) (net.Conn, error) {
	c, err := dialTCP(ctx, network, proxyAddr(proxy), made)
	if err != nil {
		return nil, err
	}
	if err := connectThrough(ctx, c, proxy, server); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// dialConnectTLS has an HTTPS proxy CONNECT to server, inside TLS to the
// proxy. The proxy's certificate is checked against the system's roots
// under the proxy's own name: the client's TLSConfig is for the tunnel
// server, so its CAs do not vouch for the proxy, nor does its certificate
// go to the proxy.
func dialConnectTLS(ctx context.Context, proxy *url.URL, network, server string, made func(net.Conn)) (net.Conn, error) {
	c, err := dialTCP(ctx, network, proxyAddr(proxy), made)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(c, &tls.Config{
		ServerName: proxy.Hostname(),
		NextProtos: []string{"http/1.1"}, // the CONNECT that follows
		MinVersion: tls.VersionTLS12,
	})
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("tls with the proxy: %w", err)
	}
	if err := connectThrough(ctx, tc, proxy, server); err != nil {
		c.Close()
		return nil, err
	}
	return tc, nil
}

// connectThrough asks an HTTP proxy, on c, to CONNECT to server. The
// websocket package's own CONNECT panics on a refusal whose status line
// has no reason phrase ("HTTP/1.1 407"), which some proxies send.
func connectThrough(ctx context.Context, c net.Conn, proxy *url.URL, server string) error {
	if deadline, ok := ctx.Deadline(); ok {
		c.SetDeadline(deadline) // a proxy that does not answer
	}
	req := &http.Request{Method: http.MethodConnect, URL: &url.URL{Opaque: server}, Host: server, Header: http.Header{}}
	if u := proxy.User; u != nil {
		// As net/http sends it: a user without a password too.
		password, _ := u.Password()
		req.Header.Set("Proxy-Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(u.Username()+":"+password)))
	}
	if err := req.Write(c); err != nil {
		return err
	}
	// Nothing follows the answer before we speak, so the reader may go.
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		return err
	}
	// Its body, if any, is the tunnel: left alone.
	if resp.StatusCode/100 != 2 {
		// The reason alone, as before; the code when there is none.
		if _, reason, _ := strings.Cut(resp.Status, " "); reason != "" {
			return errors.New(reason)
		}
		return errors.New(resp.Status)
	}
	return nil
}

// dialSOCKS has a SOCKS5 proxy connect to server, with the user and
// password of the proxy's URL (RFC 1929). socks5 and socks5h alike hand
// the proxy the server's name to resolve, as net/http does (curl resolves
// it itself for socks5): where the proxy is the only way out, the name
// may resolve nowhere else, and west's socks5:// did so before.
func dialSOCKS(ctx context.Context, proxy *url.URL, network, server string, made func(net.Conn)) (net.Conn, error) {
	var auth *xproxy.Auth
	if u := proxy.User; u != nil {
		password, _ := u.Password()
		auth = &xproxy.Auth{User: u.Username(), Password: password}
	}
	var raw net.Conn
	toProxy := dialFunc(func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dialTCP(ctx, network, addr, made)
		raw = c
		return c, err
	})
	d, err := xproxy.SOCKS5("tcp", proxyAddr(proxy), auth, toProxy)
	if err != nil {
		return nil, err
	}
	cd, ok := d.(xproxy.ContextDialer)
	if !ok {
		return nil, errors.New("the socks5 dialer takes no context")
	}
	// Its connection only adds the address the proxy bound; the one
	// beneath reads and writes without it.
	if _, err := cd.DialContext(ctx, network, server); err != nil {
		return nil, err
	}
	return raw, nil
}

// dialFunc is a function as a proxy.Dialer that takes a context.
type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

func (f dialFunc) Dial(network, addr string) (net.Conn, error) {
	return f(context.Background(), network, addr)
}

func (f dialFunc) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return f(ctx, network, addr)
}

var _ xproxy.ContextDialer = dialFunc(nil)
