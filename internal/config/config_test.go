package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// wrap puts body after a minimal "west" object, so that table entries show
// only what they test.
func wrap(body string) string {
	if body == "" {
		return `{"west": {"nm": "n"}}`
	}
	return `{"west": {"nm": "n"}, ` + body + `}`
}

// serverWrap is wrap with a tunnel server, which "en" needs.
func serverWrap(body string) string {
	return wrap(`"wsts": {"sp": "ws://127.0.0.1:9801"}, ` + body)
}

func mustParse(t *testing.T, js string) *Config {
	t.Helper()
	c, err := Parse([]byte(js))
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, js)
	}
	return c
}

func TestParseWest(t *testing.T) {
	tests := []struct {
		js   string
		name string
		cp   string
		acl  []string
	}{
		{`{"west": {"nm": "ws//case1.G.flap.org"}}`, "ws//case1.G.flap.org", "", nil},
		{`{"west": {"nm": "n", "cp": ":9701"}}`, "n", ":9701", nil},
		{`{"west": {"nm": "n", "cp": ":0"}}`, "n", ":0", nil},
		{`{"west": {"nm": "n", "cp": "127.0.0.1:65535"}}`, "n", "127.0.0.1:65535", nil},
		{`{"west": {"nm": "n", "cp": "[::1]:9701"}}`, "n", "[::1]:9701", nil},
		{`{"west": {"nm": "n", "cp": "localhost:09701"}}`, "n", "localhost:9701", nil},
		{`{"west": {"nm": "node é", "control_ca": ["127.0.0.1", "::1", "10.0.0.0/8"]}}`, "node é", "", []string{"127.0.0.1", "::1", "10.0.0.0/8"}},
		{`{"west": {"nm": "n", "control_ca": []}, "wsts": {}, "wstc": {}, "proxy": {}}`, "n", "", nil},
		{"\ufeff" + `{"west": {"nm": "bom"}}`, "bom", "", nil},
	}
	for _, tt := range tests {
		c := mustParse(t, tt.js)
		w := c.West
		if w.Name != tt.name || w.ControlAddr != tt.cp || strings.Join(w.ControlACL, " ") != strings.Join(tt.acl, " ") {
			t.Errorf("%s:\ngot  %+v\nwant {Name:%s ControlAddr:%s ControlACL:%v}", tt.js, w, tt.name, tt.cp, tt.acl)
		}
		if c.Server != nil || len(c.Clients) != 0 || len(c.Proxies) != 0 {
			t.Errorf("%s: got server %v, clients %v, proxies %v; want none", tt.js, c.Server, c.Clients, c.Proxies)
		}
	}
}

// TestStreamWindow: "stream_window" reads as bytes, and renders back in
// the largest unit that holds it whole.
func TestStreamWindow(t *testing.T) {
	for _, tc := range []struct {
		in       string
		bytes    int
		rendered string
	}{
		{"256KiB", 256 << 10, "256KiB"},
		{"1024KiB", 1 << 20, "1MiB"},
		{"1536KiB", 1536 << 10, "1536KiB"},
		{"4MiB", 4 << 20, "4MiB"},
		{"1024MiB", 1 << 30, "1GiB"},
		{"1GiB", 1 << 30, "1GiB"},
	} {
		c := mustParse(t, `{"west": {"nm": "n", "stream_window": "`+tc.in+`"}}`)
		if c.West.StreamWindow != tc.bytes {
			t.Errorf("%s: %d bytes, want %d", tc.in, c.West.StreamWindow, tc.bytes)
		}
		west, _, _, _ := c.RenderObjects()
		if got := west["stream_window"]; got != tc.rendered {
			t.Errorf("%s renders as %v, want %s", tc.in, got, tc.rendered)
		}
	}
	c := mustParse(t, `{"west": {"nm": "n"}}`)
	if west, _, _, _ := c.RenderObjects(); c.West.StreamWindow != 0 || west["stream_window"] != nil {
		t.Errorf("no stream_window: %d bytes, rendered %v; want 0 and none", c.West.StreamWindow, west["stream_window"])
	}
}

func TestParseServer(t *testing.T) {
	tests := []struct {
		wsts string
		url  string
		addr string
		path string
		acl  []string
	}{
		{`{"sp": "ws://127.0.0.1:9801"}`, "ws://127.0.0.1:9801", "127.0.0.1:9801", "/", nil},
		{`{"sp": "WS://127.0.0.1:9801/"}`, "ws://127.0.0.1:9801/", "127.0.0.1:9801", "/", nil},
		{`{"sp": "ws://example.org"}`, "ws://example.org", "example.org:80", "/", nil},
		{`{"sp": "wss://example.org/tunnel", "tls_cert_file": "c.pem", "tls_key_file": "k.pem"}`, "wss://example.org/tunnel", "example.org:443", "/tunnel", nil},
		{`{"sp": "ws://[::1]:9801/a/b/"}`, "ws://[::1]:9801/a/b/", "[::1]:9801", "/a/b/", nil},
		{`{"sp": "ws://:0"}`, "ws://:0", ":0", "/", nil},
		{`{"sp": "ws://127.0.0.1:0", "ca": ["127.0.0.1", "fd00::/8", "ws://case1.L.fiap.org"]}`, "ws://127.0.0.1:0", "127.0.0.1:0", "/",
			[]string{"127.0.0.1", "fd00::/8", "ws://case1.L.fiap.org"}},
	}
	for _, tt := range tests {
		c := mustParse(t, wrap(`"wsts": `+tt.wsts))
		s := c.Server
		if s == nil {
			t.Errorf("%s: no server", tt.wsts)
			continue
		}
		if s.URL.String() != tt.url || s.Addr != tt.addr || s.Path != tt.path || strings.Join(s.ACL, " ") != strings.Join(tt.acl, " ") {
			t.Errorf("%s:\ngot  {%s %s %s %v}\nwant {%s %s %s %v}", tt.wsts, s.URL, s.Addr, s.Path, s.ACL, tt.url, tt.addr, tt.path, tt.acl)
		}
	}
}

func TestParseClients(t *testing.T) {
	c := mustParse(t, `{"west": {"nm": "me"}, "wstc": {
		"wss://b.example.org/t": {"nm": "special", "ee": "no"},
		"ws://a.example.org": {"ee": "yes"},
		"ws://127.0.0.1:9801": {}
	}}`)
	want := []TunnelClient{
		{URL: mustURL("ws://127.0.0.1:9801"), Name: "me", Early: true},
		{URL: mustURL("ws://a.example.org"), Name: "me", Early: true},
		{URL: mustURL("wss://b.example.org/t"), Name: "special", Early: false},
	}
	checkClients(t, c.Clients, want)
}

func TestParseProxies(t *testing.T) {
	c := mustParse(t, serverWrap(`"proxy": {
		"http://127.0.0.1:9911": {"en": "peer", "timeout": "90s",
			"/": {"ou": "http://127.0.0.1:9921/"},
			"/px/deep": {"ou": "https://example.org/d?x=1", "ca": ["127.0.0.1", "10.0.0.0/8"]},
			"/px": {"ou": "http://127.0.0.1:9921/x"},
			"/py": {"ou": "http://[::1]:9921/y"}
		},
		"http://localhost": {"en": "peer", "/": {"ou": "http://h"}},
		"tcp://127.0.0.1:2222": {"en": "peer", "ou": "tcp://10.0.0.5:22", "ca": ["::1"]},
		"http://:9912/": {"en": "peer", "/a%2Fb": {"ou": "http://h/a%2Fb"}}
	}`))
	if len(c.Proxies) != 4 {
		t.Fatalf("got %d proxies, want 4", len(c.Proxies))
	}
	var urls []string
	for _, p := range c.Proxies {
		urls = append(urls, p.URL.String())
	}
	if got, want := strings.Join(urls, " "), "http://127.0.0.1:9911 http://:9912/ http://localhost tcp://127.0.0.1:2222"; got != want {
		t.Errorf("proxies in order %s, want %s", got, want)
	}

	p := c.Proxies[0]
	if p.Kind != KindHTTP || p.Addr != "127.0.0.1:9911" || p.Peer != "peer" || p.ServerURL != nil || p.Timeout != 90*time.Second || p.Target != nil {
		t.Errorf("proxy 0: %+v", p)
	}
	var paths []string
	for _, r := range p.Routes {
		paths = append(paths, r.Path)
	}
	if got, want := strings.Join(paths, " "), "/px/deep /px /py /"; got != want {
		t.Errorf("routes in order %s, want %s", got, want)
	}
	if r := p.Routes[0]; r.Outgoing.String() != "https://example.org/d?x=1" || strings.Join(r.ACL, " ") != "127.0.0.1 10.0.0.0/8" {
		t.Errorf("route /px/deep: %+v", r)
	}
	if r := p.Routes[3]; r.ACL != nil {
		t.Errorf("route / has ACL %q, want none", r.ACL)
	}

	if p := c.Proxies[1]; p.Addr != ":9912" || p.Routes[0].Path != "/a%2Fb" {
		t.Errorf("proxy 1: %+v", p)
	}
	if p := c.Proxies[2]; p.Addr != "localhost:18889" || p.Timeout != DefaultTimeout {
		t.Errorf("proxy 2: Addr %s Timeout %v, want localhost:18889 and the default", p.Addr, p.Timeout)
	}
	p = c.Proxies[3]
	if p.Kind != KindTCP || p.Addr != "127.0.0.1:2222" || p.Target.String() != "tcp://10.0.0.5:22" ||
		strings.Join(p.ACL, " ") != "::1" || p.Routes != nil || p.Timeout != 0 {
		t.Errorf("tcp proxy: %+v", p)
	}
}

func TestImpliedClients(t *testing.T) {
	c := mustParse(t, `{"west": {"nm": "me"},
		"wstc": {"WS://Example.ORG:80": {"ee": "no", "nm": "other"}},
		"proxy": {
			"http://127.0.0.1:1": {"ea": "ws://example.org/", "/": {"ou": "http://h"}},
			"http://127.0.0.1:2": {"ea": "wss://relay.example.org:8443/t", "/": {"ou": "http://h"}},
			"http://127.0.0.1:3": {"ea": "WSS://RELAY.example.org:8443/t", "/": {"ou": "http://h"}},
			"tcp://127.0.0.1:4": {"ea": "ws://127.0.0.1:9801", "ou": "tcp://h:22"}
		}}`)
	want := []TunnelClient{
		{URL: mustURL("ws://127.0.0.1:9801"), Name: "me", Early: true, Implied: true},
		{URL: mustURL("ws://Example.ORG:80"), Name: "other", Early: false},
		{URL: mustURL("wss://relay.example.org:8443/t"), Name: "me", Early: true, Implied: true},
	}
	checkClients(t, c.Clients, want)
	// Every ea is the very URL of its client, so users may key by either.
	byURL := map[*url.URL]bool{}
	for _, cl := range c.Clients {
		byURL[cl.URL] = true
	}
	for _, p := range c.Proxies {
		if !byURL[p.ServerURL] {
			t.Errorf("proxy %s: ea %s is not a Clients URL", p.URL, p.ServerURL)
		}
	}
	if c.Proxies[0].ServerURL != c.Clients[1].URL {
		t.Errorf("ea ws://example.org/ resolved to %s, want the wstc entry", c.Proxies[0].ServerURL)
	}
}

func TestPortZeroListeners(t *testing.T) {
	c := mustParse(t, `{"west": {"nm": "n", "cp": "127.0.0.1:0"}, "wsts": {"sp": "ws://127.0.0.1:0"}, "proxy": {
		"http://127.0.0.1:0": {"ea": "ws://127.0.0.1:9801", "/": {"ou": "http://h"}},
		"tcp://127.0.0.1:0": {"en": "peer", "ou": "tcp://h:1"}
	}}`)
	if len(c.Proxies) != 2 || c.Proxies[0].Addr != "127.0.0.1:0" || c.Proxies[1].Addr != "127.0.0.1:0" {
		t.Errorf("proxies: %+v", c.Proxies)
	}
}

func TestSamples(t *testing.T) {
	implied := func(u, name string) []TunnelClient {
		return []TunnelClient{{URL: mustURL(u), Name: name, Early: true, Implied: true}}
	}
	explicit := func(u, name string) []TunnelClient {
		return []TunnelClient{{URL: mustURL(u), Name: name, Early: true}}
	}
	tests := []struct {
		file      string
		name, cp  string
		server    string // wsts.sp, or ""
		clients   []TunnelClient
		proxy     string // listen URL of the one proxy, or ""
		peer, ea  string
		route, ou string
	}{
		{file: "config-sample-case1-G.json", name: "ws//case1.G.flap.org", cp: ":9701", server: "ws://127.0.0.1:9801"},
		{file: "config-sample-case1-L.json", name: "ws://case1.L.fiap.org:9802", cp: ":9702",
			clients: implied("ws://127.0.0.1:9801", "ws://case1.L.fiap.org:9802"),
			proxy:   "http://127.0.0.1:9911", ea: "ws://127.0.0.1:9801", route: "/px", ou: "http://127.0.0.1:9921/x"},
		{file: "config-sample-case2-G.json", name: "ws://case2.G.fiap.org", cp: ":9701", server: "ws://127.0.0.1:9801",
			proxy: "http://127.0.0.1:9931", peer: "ws://case2.L.fiap.org", route: "/pa", ou: "http://127.0.0.1:9941/a"},
		{file: "config-sample-case2-L.json", name: "ws://case2.L.fiap.org", cp: ":9702",
			clients: explicit("ws://127.0.0.1:9801", "ws://case2.L.fiap.org")},
		{file: "config-sample-case3-G.json", name: "ws://case3.G.fiap.org", cp: ":9701", server: "ws://127.0.0.1:9801",
			proxy: "http://127.0.0.1:9961", peer: "ws://case3.L2.fiap.org", route: "/by", ou: "http://127.0.0.1:9971/b"},
		{file: "config-sample-case3-L.json", name: "ws://case3.L.fiap.org", cp: ":9702",
			clients: implied("ws://127.0.0.1:9801", "ws://case3.L.fiap.org"),
			proxy:   "http://127.0.0.1:9951", ea: "ws://127.0.0.1:9801", route: "/bx", ou: "http://127.0.0.1:9961/by"},
		{file: "config-sample-case3-L2.json", name: "ws://case3.L2.fiap.org", cp: ":9703",
			clients: explicit("ws://127.0.0.1:9801", "ws://case3.L2.fiap.org")},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			c, err := Load(filepath.Join("testdata", "seed", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if c.West.Name != tt.name || c.West.ControlAddr != tt.cp {
				t.Errorf("west: %+v, want name %q cp %q", c.West, tt.name, tt.cp)
			}
			switch {
			case tt.server == "" && c.Server != nil:
				t.Errorf("server %s, want none", c.Server.URL)
			case tt.server != "" && (c.Server == nil || c.Server.URL.String() != tt.server):
				t.Errorf("server %+v, want %s", c.Server, tt.server)
			}
			checkClients(t, c.Clients, tt.clients)
			if tt.proxy == "" {
				if len(c.Proxies) != 0 {
					t.Errorf("proxies %+v, want none", c.Proxies)
				}
				return
			}
			if len(c.Proxies) != 1 {
				t.Fatalf("got %d proxies, want 1", len(c.Proxies))
			}
			p := c.Proxies[0]
			ea := ""
			if p.ServerURL != nil {
				ea = p.ServerURL.String()
				if p.ServerURL != c.Clients[0].URL {
					t.Errorf("ea is not the Clients entry's URL")
				}
			}
			if p.URL.String() != tt.proxy || p.Peer != tt.peer || ea != tt.ea || p.Timeout != DefaultTimeout ||
				len(p.Routes) != 1 || p.Routes[0].Path != tt.route || p.Routes[0].Outgoing.String() != tt.ou {
				t.Errorf("proxy %+v (routes %+v)\nwant %s en %q ea %q route %s -> %s", p, p.Routes, tt.proxy, tt.peer, tt.ea, tt.route, tt.ou)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.json")
	_, err := Load(missing)
	if err == nil || !errors.Is(err, fs.ErrNotExist) || err.Error() != "config: read "+missing+": no such file or directory" {
		t.Errorf("Load(missing) = %v; want a not-exist error naming the file once", err)
	}
	bad := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(bad, []byte(`{"west": {}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(bad)
	var ce *Error
	if !errors.As(err, &ce) || ce.Path != "west.nm" || ce.File != bad {
		t.Errorf("Load(bad) = %v; want an *Error at west.nm of %s", err, bad)
	}
	if want := "config " + bad + ": west.nm: "; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Load(bad) = %q; want it to begin %q", err, want)
	}
}

func TestErrorString(t *testing.T) {
	tests := []struct {
		err  Error
		want string
	}{
		{Error{Path: "west.nm", Msg: "m"}, "config: west.nm: m"},
		{Error{Line: 3, Column: 7, Msg: "invalid JSON: x"}, "config: line 3, column 7: invalid JSON: x"},
		{Error{Msg: "want a JSON object, got empty input"}, "config: want a JSON object, got empty input"},
		{Error{File: "g.json", Path: "west.nm", Msg: "m"}, "config g.json: west.nm: m"},
		{Error{File: "g.json", Line: 3, Column: 7, Msg: "invalid JSON: x"}, "config g.json: line 3, column 7: invalid JSON: x"},
		{Error{File: "g.json", Msg: "m"}, "config g.json: m"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func checkClients(t *testing.T, got, want []TunnelClient) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("got %d clients %+v, want %d", len(got), got, len(want))
		return
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.URL.String() != w.URL.String() || g.Name != w.Name || g.Early != w.Early || g.Implied != w.Implied {
			t.Errorf("client %d: got {%s %q early=%v implied=%v}, want {%s %q early=%v implied=%v}",
				i, g.URL, g.Name, g.Early, g.Implied, w.URL, w.Name, w.Early, w.Implied)
		}
	}
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

func TestSecretResolve(t *testing.T) {
	t.Setenv("WEST_TEST_SECRET", "s3cret")
	t.Setenv("WEST_TEST_EMPTY", "")
	t.Setenv("WEST_TEST_SPACED", " spaced\t")
	t.Setenv("WEST_TEST_BLANK", " \n")
	t.Setenv("WEST_TEST_CONTROL", "two\nlines")
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	crlf := filepath.Join(t.TempDir(), "token-crlf")
	if err := os.WriteFile(crlf, []byte("\ta b\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		sec     Secret
		want    string
		wantErr string
	}{
		{"env:WEST_TEST_SECRET", "s3cret", ""},
		{"file:" + Secret(file), "from-file", ""},
		{"env:WEST_TEST_UNSET_X", "", "environment variable WEST_TEST_UNSET_X is not set"},
		{"env:WEST_TEST_EMPTY", "", "is empty"},
		{"env:WEST_TEST_SPACED", "spaced", ""},
		{"env:WEST_TEST_BLANK", "", "is empty"},
		{"env:WEST_TEST_CONTROL", "", "holds a control character"},
		{"file:" + Secret(crlf), "a b", ""},
		{"file:/nonexistent/west/token", "", "no such file"},
	} {
		got, err := c.sec.Resolve()
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%s: err %v, want it to contain %q", c.sec, err, c.wantErr)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: got %q, %v; want %q", c.sec, got, err, c.want)
		}
	}
}

// TestListenersThatCanBindTogether: addresses that Parse lets through
// bind side by side, in this test as in west: two loopback addresses
// (IPv4 and IPv6) on one port, and TCP and UDP on another.
func TestListenersThatCanBindTogether(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tcp.Close()
	_, port, _ := net.SplitHostPort(tcp.Addr().String())
	c := mustParse(t, fmt.Sprintf(`{"west": {"nm": "a", "cp": "127.0.0.1:%[1]s"}, "proxy": {
		"http://[::1]:%[1]s": {"ea": "ws://h", "/": {"ou": "http://h"}},
		"udp://:%[1]s": {"ea": "ws://h", "ou": "udp://h:53"}}}`, port))
	type addr struct{ network, addr string }
	addrs := []addr{{"tcp", c.West.ControlAddr}}
	for _, p := range c.Proxies {
		network := "tcp"
		if p.Kind == KindUDP {
			network = "udp"
		}
		addrs = append(addrs, addr{network, p.Addr})
	}
	for _, a := range addrs {
		var err error
		if a.network == "udp" {
			var pc net.PacketConn
			if pc, err = net.ListenPacket(a.network, a.addr); err == nil {
				defer pc.Close()
			}
		} else {
			var ln net.Listener
			if ln, err = net.Listen(a.network, a.addr); err == nil {
				defer ln.Close()
			}
		}
		if err != nil && !strings.Contains(err.Error(), "cannot assign requested address") {
			t.Errorf("%s %s beside the others: %v", a.network, a.addr, err)
		}
	}
}

func TestParseUDP(t *testing.T) {
	c := mustParse(t, wrap(`"proxy": {
		"udp://127.0.0.1:5353": {"ea": "ws://h:1", "ou": "udp://10.0.0.53:53", "ca": ["127.0.0.1"]},
		"tcp://127.0.0.1:5353": {"ea": "ws://h:1", "ou": "tcp://10.0.0.53:53"}}`))
	var udp *Proxy
	for i := range c.Proxies {
		if c.Proxies[i].URL.Scheme == "udp" {
			udp = &c.Proxies[i]
		}
	}
	if udp == nil || udp.Kind != KindUDP || udp.Addr != "127.0.0.1:5353" || udp.Target.String() != "udp://10.0.0.53:53" || len(udp.ACL) != 1 {
		t.Fatalf("udp listener: %+v", udp)
	}
}
