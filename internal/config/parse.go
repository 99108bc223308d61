package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/west-tunnel/west/internal/acl"
	"github.com/west-tunnel/west/internal/wire"
)

// Load reads and parses the configuration file at name.
func Load(name string) (*Config, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		// The fs.PathError would name the file a second time.
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("config: read %s: %w", name, err)
	}
	c, err := Parse(data)
	var ce *Error
	if errors.As(err, &ce) {
		ce.File = name
	}
	return c, err
}

// Parse parses and validates a configuration in the seed's JSON format and
// fills in its defaults. Its errors are *Error.
func Parse(data []byte) (*Config, error) {
	root, err := readTree(data)
	if err != nil {
		return nil, err
	}
	return build(root)
}

func build(root *value) (*Config, error) {
	if root.kind != kindObject {
		return nil, errf("", `want a JSON object with "west" and optional "wsts", "wstc" and "proxy", got %s`, root.describe())
	}
	if err := checkKeys(root, "", "west", "wsts", "wstc", "proxy"); err != nil {
		return nil, err
	}
	c := &Config{}
	w := root.get("west")
	if w == nil {
		return nil, errf("west", `missing; want an object with at least "nm", the node's name`)
	}
	var err error
	if c.West, err = parseWest(w, "west"); err != nil {
		return nil, err
	}
	ls := &listeners{}
	if c.West.ControlAddr != "" {
		if err := ls.add(Listen{"west.cp", "tcp", c.West.ControlAddr}); err != nil {
			return nil, err
		}
	}
	if v := root.get("wsts"); v != nil {
		if c.Server, err = parseServer(v, "wsts"); err != nil {
			return nil, err
		}
		if c.Server != nil {
			if err := ls.add(Listen{"wsts.sp", "tcp", c.Server.Addr}); err != nil {
				return nil, err
			}
		}
	}
	if v := root.get("wstc"); v != nil {
		if c.Clients, err = parseClients(v, "wstc", c.West.Name); err != nil {
			return nil, err
		}
	}
	if v := root.get("proxy"); v != nil {
		if c.Proxies, err = parseProxies(v, "proxy", ls, c.Server != nil); err != nil {
			return nil, err
		}
	}
	slices.SortStableFunc(c.Proxies, func(a, b Proxy) int { return strings.Compare(a.URL.String(), b.URL.String()) })
	c.linkServers()
	slices.SortStableFunc(c.Clients, func(a, b TunnelClient) int { return strings.Compare(a.URL.String(), b.URL.String()) })
	return c, nil
}

// linkServers points every "ea" at its Clients entry, adding an implied
// entry for a server that "wstc" does not list, as the seed does.
func (c *Config) linkServers() {
	byKey := make(map[string]*url.URL, len(c.Clients))
	for _, cl := range c.Clients {
		byKey[urlKey(cl.URL)] = cl.URL
	}
	for i := range c.Proxies {
		p := &c.Proxies[i]
		if p.ServerURL == nil {
			continue
		}
		k := urlKey(p.ServerURL)
		if u, ok := byKey[k]; ok {
			p.ServerURL = u
			continue
		}
		byKey[k] = p.ServerURL
		c.Clients = append(c.Clients, TunnelClient{URL: p.ServerURL, Name: c.West.Name, Early: true, Implied: true})
	}
}

func parseWest(v *value, p string) (West, error) {
	var w West
	if err := wantObject(v, p, `an object with "nm" and optional "cp"`); err != nil {
		return w, err
	}
	if err := checkKeys(v, p, "nm", "cp", "control_ca", "dial_allow", "keepalive", "dead_after", "shutdown_grace", "stream_window"); err != nil {
		return w, err
	}
	nm := v.get("nm")
	if nm == nil {
		return w, errf(field(p, "nm"), `missing; want the node's name, a non-empty string such as "ws://node.example.org"`)
	}
	var err error
	if w.Name, err = parseName(nm, field(p, "nm")); err != nil {
		return w, err
	}
	if cp := v.get("cp"); cp != nil {
		cpPath := field(p, "cp")
		s, err := wantString(cp, cpPath, `a control port address such as ":9701"`)
		if err != nil {
			return w, err
		}
		addr, why := listenAddr(s)
		if why != "" {
			return w, errf(cpPath, `want host:port or ":port", such as ":9701", got %s: %s`, quote(s), why)
		}
		w.ControlAddr = addr
	}
	if ca := v.get("control_ca"); ca != nil {
		if w.ControlACL, err = parseACL(ca, field(p, "control_ca"), false); err != nil {
			return w, err
		}
	}
	if da := v.get("dial_allow"); da != nil {
		if w.DialAllow, err = parseTargets(da, field(p, "dial_allow")); err != nil {
			return w, err
		}
	}
	for key, dst := range map[string]*time.Duration{"keepalive": &w.KeepAlive, "dead_after": &w.DeadAfter, "shutdown_grace": &w.ShutdownGrace} {
		if d := v.get(key); d != nil {
			if *dst, err = parseTimeout(d, field(p, key)); err != nil {
				return w, err
			}
		}
	}
	if sw := v.get("stream_window"); sw != nil {
		if w.StreamWindow, err = parseSize(sw, field(p, "stream_window"), MinStreamWindow, MaxStreamWindow); err != nil {
			return w, err
		}
	}
	// A keepalive that rounds to nothing is refused by the multiplexer
	// at every connect; dead_after alone sets it to a third of itself.
	if w.KeepAlive > 0 && w.KeepAlive < MinKeepAlive {
		return w, errf(field(p, "keepalive"), "want at least %s, got %s", MinKeepAlive, w.KeepAlive)
	}
	if w.DeadAfter > 0 && w.DeadAfter < 3*MinKeepAlive {
		return w, errf(field(p, "dead_after"), "want at least %s, got %s", 3*MinKeepAlive, w.DeadAfter)
	}
	if w.KeepAlive > 0 && w.DeadAfter > 0 && w.DeadAfter <= w.KeepAlive {
		return w, errf(field(p, "dead_after"), "want a duration longer than keepalive (%s), got %s", w.KeepAlive, w.DeadAfter)
	}
	return w, nil
}

func parseServer(v *value, p string) (*TunnelServer, error) {
	if err := wantObject(v, p, `an object with "sp" and optional "ca"`); err != nil {
		return nil, err
	}
	serverKeys := []string{"sp", "ca", "tls_cert_file", "tls_key_file", "client_ca_file", "cert_names", "tokens", "max_streams"}
	if err := checkKeys(v, p, serverKeys...); err != nil {
		return nil, err
	}
	sp, ca := v.get("sp"), v.get("ca")
	if sp == nil {
		for _, k := range serverKeys[1:] {
			if v.get(k) != nil {
				return nil, errf(field(p, k), `want "sp" beside %q, since it configures a tunnel server; got no "sp"`, k)
			}
		}
		return nil, nil
	}
	spPath := field(p, "sp")
	want := `a ws:// or wss:// URL to listen on, such as "ws://127.0.0.1:9801"`
	s, err := wantString(sp, spPath, want)
	if err != nil {
		return nil, err
	}
	u, why := parseURL(s, listenURL, "ws", "wss")
	if why == "" && (u.RawQuery != "" || u.ForceQuery) {
		why = "a query is not allowed"
	}
	servePath := "/"
	if why == "" && u.EscapedPath() != "" {
		servePath = u.EscapedPath()
		if !validServePath(servePath) {
			why = fmt.Sprintf("path %s is not a clean path of plain URL characters", quote(servePath))
		}
	}
	if why != "" {
		return nil, errf(spPath, "want %s, got %s: %s", want, quote(s), why)
	}
	ts := &TunnelServer{URL: u, Addr: hostPort(u, defaultPort(u.Scheme)), Path: servePath}
	if ca != nil {
		if ts.ACL, err = parseACL(ca, field(p, "ca"), true); err != nil {
			return nil, err
		}
	}
	for key, dst := range map[string]*string{"tls_cert_file": &ts.TLSCertFile, "tls_key_file": &ts.TLSKeyFile, "client_ca_file": &ts.ClientCAFile} {
		if f := v.get(key); f != nil {
			if *dst, err = parseFile(f, field(p, key)); err != nil {
				return nil, err
			}
		}
	}
	if cn := v.get("cert_names"); cn != nil {
		if ts.CertNames, err = parseYesNo(cn, field(p, "cert_names")); err != nil {
			return nil, err
		}
	}
	if tk := v.get("tokens"); tk != nil {
		if ts.Tokens, err = parseTokens(tk, field(p, "tokens")); err != nil {
			return nil, err
		}
	}
	if ms := v.get("max_streams"); ms != nil {
		if ts.MaxStreams, err = parseCount(ms, field(p, "max_streams")); err != nil {
			return nil, err
		}
	}
	tls := u.Scheme == "wss"
	switch {
	case tls && (ts.TLSCertFile == "" || ts.TLSKeyFile == ""):
		return nil, errf(p, `want "tls_cert_file" and "tls_key_file" for a wss:// server, got %s`, missingOf(ts.TLSCertFile, "tls_cert_file", ts.TLSKeyFile, "tls_key_file"))
	case !tls && (ts.TLSCertFile != "" || ts.TLSKeyFile != "" || ts.ClientCAFile != ""):
		return nil, errf(spPath, `want a wss:// URL, since TLS files are given; got %s`, quote(s))
	case ts.CertNames && ts.ClientCAFile == "":
		return nil, errf(field(p, "cert_names"), `want "client_ca_file" beside it, since names are bound to client certificates`)
	}
	return ts, nil
}

// missingOf names the empty ones of pairs (value, name).
func missingOf(pairs ...string) string {
	var miss []string
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i] == "" {
			miss = append(miss, strconv.Quote(pairs[i+1]))
		}
	}
	return "no " + strings.Join(miss, " and no ")
}

func parseClients(v *value, p, defaultName string) ([]TunnelClient, error) {
	if err := wantObject(v, p, `an object whose keys are tunnel server URLs`); err != nil {
		return nil, err
	}
	var cs []TunnelClient
	seen := make(map[string]string)
	for _, m := range v.members {
		mp := field(p, m.key)
		u, why := parseURL(m.key, dialURL, "ws", "wss")
		if why != "" {
			return nil, errf(mp, `want a ws:// or wss:// URL of a tunnel server as the key, got %s: %s`, quote(m.key), why)
		}
		k := urlKey(u)
		if prev, ok := seen[k]; ok {
			return nil, errf(mp, "want each tunnel server once, got the same server as %s", prev)
		}
		seen[k] = mp
		if err := wantObject(m.val, mp, `an object with optional "nm" and "ee"`); err != nil {
			return nil, err
		}
		if err := checkKeys(m.val, mp, "nm", "ee", "token", "ca_file", "server_name", "cert_file", "key_file", "max_streams"); err != nil {
			return nil, err
		}
		c := TunnelClient{URL: u, Name: defaultName, Early: true}
		if nm := m.val.get("nm"); nm != nil {
			var err error
			if c.Name, err = parseName(nm, field(mp, "nm")); err != nil {
				return nil, err
			}
		}
		if ee := m.val.get("ee"); ee != nil {
			var err error
			if c.Early, err = parseYesNo(ee, field(mp, "ee")); err != nil {
				return nil, err
			}
		}
		if ms := m.val.get("max_streams"); ms != nil {
			var err error
			if c.MaxStreams, err = parseCount(ms, field(mp, "max_streams")); err != nil {
				return nil, err
			}
		}
		if err := parseClientSecurity(&c, m.val, mp); err != nil {
			return nil, err
		}
		cs = append(cs, c)
	}
	return cs, nil
}

func parseClientSecurity(c *TunnelClient, v *value, p string) error {
	var err error
	if tk := v.get("token"); tk != nil {
		if c.Token, err = parseSecret(tk, field(p, "token")); err != nil {
			return err
		}
	}
	for key, dst := range map[string]*string{"ca_file": &c.CAFile, "cert_file": &c.CertFile, "key_file": &c.KeyFile} {
		if f := v.get(key); f != nil {
			if *dst, err = parseFile(f, field(p, key)); err != nil {
				return err
			}
		}
	}
	if sn := v.get("server_name"); sn != nil {
		if c.ServerName, err = wantString(sn, field(p, "server_name"), "a host name"); err == nil && c.ServerName == "" {
			err = errf(field(p, "server_name"), "want a host name, got an empty string")
		} else if err == nil && !validHost(c.ServerName) {
			err = errf(field(p, "server_name"), "want a host name (or address) the server's certificate is for, without scheme or port, got %s", quote(c.ServerName))
		}
		if err != nil {
			return err
		}
	}
	tls := c.URL.Scheme == "wss"
	switch {
	case (c.CertFile == "") != (c.KeyFile == ""):
		return errf(p, `want both "cert_file" and "key_file" or neither, got %s`, missingOf(c.CertFile, "cert_file", c.KeyFile, "key_file"))
	case !tls && (c.CAFile != "" || c.ServerName != "" || c.CertFile != ""):
		return errf(p, "want a wss:// server URL for TLS settings, got %s", quote(c.URL.String()))
	}
	return nil
}

func parseProxies(v *value, p string, ls *listeners, haveServer bool) ([]Proxy, error) {
	if err := wantObject(v, p, `an object whose keys are listen URLs`); err != nil {
		return nil, err
	}
	var ps []Proxy
	seen := make(map[string]string)
	for _, m := range v.members {
		mp := field(p, m.key)
		px, err := parseProxy(m.key, m.val, mp, haveServer)
		if err != nil {
			return nil, err
		}
		// Port 0 listeners never collide on their address, but two keys
		// may still spell one URL ("HTTP://..." and "http://...").
		if prev, ok := seen[px.URL.String()]; ok {
			return nil, errf(mp, "want each listener once, got the same URL as %s", prev)
		}
		seen[px.URL.String()] = mp
		if err := ls.add(px.listen(mp)); err != nil {
			return nil, err
		}
		ps = append(ps, px)
	}
	return ps, nil
}

func parseProxy(key string, v *value, p string, haveServer bool) (Proxy, error) {
	var px Proxy
	u, why := parseURL(key, listenURL, "http", "tcp", "udp")
	if why == "" && (u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.ForceQuery) {
		why = "only a scheme, host and port are allowed"
	}
	if why == "" && u.Scheme != "http" && u.Port() == "" {
		why = "a " + u.Scheme + ":// listener needs a port"
	}
	if why != "" {
		return px, errf(p, `want a listen URL such as "http://127.0.0.1:9911", "tcp://127.0.0.1:2222" or "udp://127.0.0.1:5353" as the key, got %s: %s`, quote(key), why)
	}
	px.URL, px.Addr = u, hostPort(u, DefaultListenPort) // the seed's default, for http:// too
	switch u.Scheme {
	case "tcp":
		px.Kind = KindTCP
	case "udp":
		px.Kind = KindUDP
	default:
		px.Timeout = DefaultTimeout
	}
	raw := u.Scheme // "tcp" or "udp": the scheme of "ou" too
	if err := wantObject(v, p, `an object with "en" or "ea"`); err != nil {
		return px, err
	}
	httpKeys := []string{"en", "ea", "timeout", "tls_ca_file", "max_conns", "error_detail", `a path starting with "/"`}
	tcpKeys := []string{"en", "ea", "ou", "ca", "max_conns"}
	for _, m := range v.members {
		mp := field(p, m.key)
		var err error
		switch {
		case m.key == "en":
			// Without a server, "ea" beside it is the likelier slip: the
			// error after the loop says so.
			if px.Peer, err = parseName(m.val, mp); err == nil && !haveServer && v.get("ea") == nil {
				err = errf(mp, `want a tunnel server for peer %s to connect to, got no "wsts.sp"`, quote(px.Peer))
			}
		case m.key == "ea":
			px.ServerURL, err = parseURLValue(m.val, mp, `a ws:// or wss:// URL of a tunnel server, such as "ws://127.0.0.1:9801"`, dialURL, "ws", "wss")
		case m.key == "max_conns":
			px.MaxConns, err = parseCount(m.val, mp)
		case px.Kind == KindHTTP && m.key == "timeout":
			px.Timeout, err = parseTimeout(m.val, mp)
		case px.Kind == KindHTTP && m.key == "tls_ca_file":
			px.TLSCAFile, err = parseFile(m.val, mp)
		case px.Kind == KindHTTP && m.key == "error_detail":
			var detail bool
			detail, err = parseYesNo(m.val, mp)
			px.BriefErrors = !detail
		case px.Kind == KindHTTP && strings.HasPrefix(m.key, "/"):
			var r Route
			if r, err = parseRoute(m.key, m.val, mp); err == nil {
				px.Routes = append(px.Routes, r)
			}
		case px.Kind == KindHTTP && (m.key == "ou" || m.key == "ca"):
			err = errf(mp, `unknown key for an http:// listener, where %q goes inside a path key such as "/"; want %s`, m.key, keyList(httpKeys))
		case px.Kind == KindHTTP:
			err = errf(mp, "unknown key; want %s", keyList(httpKeys))
		case m.key == "ou":
			px.Target, err = parseURLValue(m.val, mp, fmt.Sprintf(`a %s://host:port URL to connect to`, raw), tcpTargetURL, raw)
		case m.key == "ca":
			px.ACL, err = parseACL(m.val, mp, false)
		case strings.HasPrefix(m.key, "/"):
			err = errf(mp, "unknown key for a %s:// listener, which has no paths; want %s", raw, keyList(tcpKeys))
		case m.key == "timeout":
			err = errf(mp, "unknown key for a %s:// listener, since timeout bounds HTTP responses; want %s", raw, keyList(tcpKeys))
		case m.key == "error_detail":
			err = errf(mp, "unknown key for a %s:// listener, which answers no errors of its own; want %s", raw, keyList(tcpKeys))
		default:
			err = errf(mp, "unknown key; want %s", keyList(tcpKeys))
		}
		if err != nil {
			return px, err
		}
	}
	en, ea := v.get("en") != nil, v.get("ea") != nil
	switch {
	case en && ea:
		return px, errf(p, `want exactly one of "en" or "ea", got both`)
	case !en && !ea:
		return px, errf(p, `want "en" (the name of a peer that connects to our tunnel server) or "ea" (the URL of a tunnel server to dial), got neither`)
	case px.Kind == KindHTTP && len(px.Routes) == 0:
		return px, errf(p, `want at least one route, a key such as "/" holding {"ou": "http://..."}, got none`)
	case px.Kind != KindHTTP && px.Target == nil:
		return px, errf(field(p, "ou"), "missing; want a %s://host:port URL to connect to", raw)
	}
	slices.SortFunc(px.Routes, func(a, b Route) int {
		if len(a.Path) != len(b.Path) {
			return len(b.Path) - len(a.Path)
		}
		return strings.Compare(a.Path, b.Path)
	})
	return px, nil
}

func parseRoute(key string, v *value, p string) (Route, error) {
	r := Route{Path: key}
	if !validPath(key) {
		return r, errf(p, "want a path of URL characters and %%XX escapes, got %s", quote(key))
	}
	if err := wantObject(v, p, `an object with "ou" and optional "ca"`); err != nil {
		return r, err
	}
	if err := checkKeys(v, p, "ou", "ca"); err != nil {
		return r, err
	}
	ou := v.get("ou")
	if ou == nil {
		return r, errf(field(p, "ou"), `missing; want the outgoing URL, such as "http://127.0.0.1:9921/x"`)
	}
	var err error
	if r.Outgoing, err = parseURLValue(ou, field(p, "ou"), `an http:// or https:// URL such as "http://127.0.0.1:9921/x"`, dialURL, "http", "https"); err != nil {
		return r, err
	}
	if ca := v.get("ca"); ca != nil {
		if r.ACL, err = parseACL(ca, field(p, "ca"), false); err != nil {
			return r, err
		}
	}
	return r, nil
}

func parseTimeout(v *value, p string) (time.Duration, error) {
	const want = `a duration such as "90s" or "2m"`
	s, err := wantString(v, p, want)
	if err != nil {
		return 0, err
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, &Error{Path: p, Msg: fmt.Sprintf("want %s, got %s", want, quote(s)), Err: err}
	}
	if d <= 0 {
		return 0, errf(p, "want a duration above zero, got %s", quote(s))
	}
	return d, nil
}

// sizeUnits are the units a size may be written in, largest first.
var sizeUnits = []struct {
	name  string
	bytes int
}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}}

// parseSize parses a size in bytes written as a whole number and a unit,
// such as "512KiB" or "4MiB", from lo to hi.
func parseSize(v *value, p string, lo, hi int) (int, error) {
	want := fmt.Sprintf(`a size from %q to %q, a whole number of KiB, MiB or GiB such as "4MiB"`, formatSize(lo), formatSize(hi))
	s, err := wantString(v, p, want)
	if err != nil {
		return 0, err
	}
	for _, u := range sizeUnits {
		digits, ok := strings.CutSuffix(s, u.name)
		if !ok {
			continue
		}
		n, err := strconv.Atoi(digits)
		if err != nil || digits[0] == '+' || digits[0] == '-' {
			break
		}
		if n > hi/u.bytes || n*u.bytes < lo { // the first test keeps n*u.bytes from overflowing
			return 0, errf(p, "want %s, got %s", want, quote(s))
		}
		return n * u.bytes, nil
	}
	return 0, errf(p, "want %s, got %s", want, quote(s))
}

// formatSize writes n bytes in the largest unit that divides it, as
// parseSize reads it.
func formatSize(n int) string {
	for _, u := range sizeUnits {
		if n != 0 && n%u.bytes == 0 {
			return strconv.Itoa(n/u.bytes) + u.name
		}
	}
	return strconv.Itoa(n) + "B"
}

// parseYesNo parses the seed's booleans, "yes" and "no".
func parseYesNo(v *value, p string) (bool, error) {
	s, err := wantString(v, p, `"yes" or "no"`)
	if err != nil {
		return false, err
	}
	switch s {
	case "yes":
		return true, nil
	case "no":
		return false, nil
	}
	return false, errf(p, `want "yes" or "no", got %s`, quote(s))
}

// parseCount parses a positive whole number.
func parseCount(v *value, p string) (int, error) {
	const what = "a whole number above zero"
	if err := want(v, kindNumber, p, what); err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(v.text)
	if err != nil || n <= 0 {
		return 0, errf(p, "want %s, got %s", what, v.text)
	}
	return n, nil
}

// parseFile parses a file name. Whether the file can be read is checked
// when the node starts, so that `west check` runs anywhere.
func parseFile(v *value, p string) (string, error) {
	s, err := wantString(v, p, "a file name")
	if err == nil && s == "" {
		err = errf(p, "want a file name, got an empty string")
	}
	return s, err
}

// parseSecret parses where a secret is kept.
func parseSecret(v *value, p string) (Secret, error) {
	const want = `"env:NAME" or "file:PATH", where the secret is kept`
	s, err := wantString(v, p, want)
	if err != nil {
		return "", err
	}
	kind, rest, ok := strings.Cut(s, ":")
	if !ok || (kind != "env" && kind != "file") || rest == "" {
		// Never echo what may be the secret itself.
		return "", errf(p, "want %s, got a string of %d characters without either prefix", want, len(s))
	}
	return Secret(s), nil
}

// parseTokens parses "tokens": peer names mapped to their secrets.
func parseTokens(v *value, p string) (map[string]Secret, error) {
	if err := wantObject(v, p, `an object mapping peer names to "env:NAME" or "file:PATH"`); err != nil {
		return nil, err
	}
	if len(v.members) == 0 {
		return nil, errf(p, "want at least one peer name, got an empty object")
	}
	tokens := make(map[string]Secret, len(v.members))
	for _, m := range v.members {
		// A key no "nm" can equal would refuse its peer for a wrong token.
		if err := checkName(m.key, field(p, m.key)); err != nil {
			return nil, err
		}
		sec, err := parseSecret(m.val, field(p, m.key))
		if err != nil {
			return nil, err
		}
		tokens[m.key] = sec
	}
	return tokens, nil
}

// parseTargets checks a dial policy with acl.ParseTargets.
func parseTargets(v *value, p string) ([]string, error) {
	entries, err := parseStrings(v, p, `a list of targets such as "10.0.0.0/8", "db.internal:5432" or "*.example.org:443"`)
	if err != nil {
		return nil, err
	}
	if _, err := acl.ParseTargets(entries); err != nil {
		return nil, entryError(err, p)
	}
	return entries, nil
}

// parseStrings parses a list of strings.
func parseStrings(v *value, p, what string) ([]string, error) {
	if err := want(v, kindArray, p, what); err != nil {
		return nil, err
	}
	var entries []string
	for i, e := range v.elems {
		s, err := wantString(e, index(p, i), "a string")
		if err != nil {
			return nil, err
		}
		entries = append(entries, s)
	}
	return entries, nil
}

// entryError points an acl error at the entry it names.
func entryError(err error, p string) error {
	var ee *acl.EntryError
	if errors.As(err, &ee) {
		return &Error{Path: index(p, ee.Index), Msg: ee.Msg, Err: err}
	}
	return &Error{Path: p, Msg: err.Error(), Err: err}
}

// parseName checks a node name: "nm" values and "en". It is sent, or
// compared with what a peer sent, as an HTTP Origin header, which can hold
// neither control characters nor surrounding white space.
func parseName(v *value, p string) (string, error) {
	s, err := wantString(v, p, "a name (a non-empty string)")
	if err != nil {
		return "", err
	}
	return s, checkName(s, p)
}

// checkName says why s cannot be a node name, or returns nil.
func checkName(s, p string) error {
	switch {
	case s == "":
		return errf(p, "want a non-empty name, got an empty string")
	case strings.TrimSpace(s) != s:
		return errf(p, "want a name without surrounding white space, got %s", quote(s))
	case strings.ContainsFunc(s, unicode.IsControl):
		return errf(p, "want a name without control characters, got %s", quote(s))
	case len(s) > wire.MaxNameLen:
		return errf(p, "want a name of at most %d bytes, got %d", wire.MaxNameLen, len(s))
	}
	return nil
}

// parseACL checks an access list with acl.Parse and returns its entries.
func parseACL(v *value, p string, allowNames bool) ([]string, error) {
	what := "a list of IP addresses and CIDR ranges"
	if allowNames {
		what = "a list of IP addresses, CIDR ranges and peer names"
	}
	entries, err := parseStrings(v, p, what)
	if err != nil {
		return nil, err
	}
	if _, err := acl.Parse(entries, allowNames); err != nil {
		return nil, entryError(err, p)
	}
	return entries, nil
}

// parseURLValue parses a string value holding a URL.
func parseURLValue(v *value, p, want string, r urlRole, schemes ...string) (*url.URL, error) {
	s, err := wantString(v, p, want)
	if err != nil {
		return nil, err
	}
	u, why := parseURL(s, r, schemes...)
	if why != "" {
		return nil, errf(p, "want %s, got %s: %s", want, quote(s), why)
	}
	return u, nil
}

func want(v *value, k kind, p, what string) error {
	if v.kind != k {
		return errf(p, "want %s, got %s", what, v.describe())
	}
	return nil
}

func wantObject(v *value, p, what string) error { return want(v, kindObject, p, what) }

func wantString(v *value, p, what string) (string, error) {
	if err := want(v, kindString, p, what); err != nil {
		return "", err
	}
	return v.text, nil
}

// checkKeys fails on the first key of object v not in allowed.
func checkKeys(v *value, p string, allowed ...string) error {
	for _, m := range v.members {
		if !slices.Contains(allowed, m.key) {
			return errf(field(p, m.key), "unknown key; want %s", keyList(allowed))
		}
	}
	return nil
}

// keyList formats keys as `"a", "b" or "c"`, leaving a description
// (one starting with "a ") unquoted.
func keyList(keys []string) string {
	q := make([]string, len(keys))
	for i, k := range keys {
		if strings.HasPrefix(k, "a ") {
			q[i] = k
		} else {
			q[i] = strconv.Quote(k)
		}
	}
	if len(q) == 1 {
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}
