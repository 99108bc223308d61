package config

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/west-tunnel/west/internal/acl"
)

func FuzzParse(f *testing.F) {
	for _, pattern := range []string{"testdata/*.json", "testdata/seed/*.json"} {
		files, err := filepath.Glob(filepath.FromSlash(pattern))
		if err != nil {
			f.Fatal(err)
		}
		for _, name := range files {
			data, err := os.ReadFile(name)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	for _, tt := range badTests {
		f.Add([]byte(tt.js))
	}
	for _, js := range []string{
		`{"west": {"nm": "n", "cp": "[::1]:0"}, "wsts": {"sp": "ws://[::1]:0/t/", "ca": ["::1", "peer"]}}`,
		`{"west": {"nm": "n"}, "wstc": {"WS://H:80": {"ee": "no"}}, "proxy": {"http://:0": {"ea": "ws://h/", "/a%2F": {"ou": "https://h:1/?q"}}}}`,
		`{"west": {"nm": "n"}, "proxy": {"tcp://127.0.0.1:0": {"ea": "wss://h", "ou": "tcp://h:1", "ca": ["10.0.0.0/8"]}}}`,
		`{"west": {"nm": "n"}, "proxy": {"udp://127.0.0.1:0": {"ea": "wss://h", "ou": "udp://h:53", "ca": ["10.0.0.0/8"], "max_conns": 64}}}`,
	} {
		f.Add([]byte(js))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error %v is a %T, want *Error", err, err)
			}
			return
		}
		if err := checkConfig(c); err != nil {
			t.Fatalf("%v\n%s", err, data)
		}
		// The normalized form, written back in the seed's format, must
		// parse to the same thing.
		js := seedJSON(t, c)
		c2, err := Parse(js)
		if err != nil {
			t.Fatalf("reparse: %v\ninput %s\nnormalized %s", err, data, js)
		}
		if r1, r2 := c.Render(), c2.Render(); r1 != r2 {
			t.Fatalf("reparse renders differently:\n%s\n%s", r1, r2)
		}
	})
}

// seedJSON writes c back as a config: Render's objects less the derived
// "addr" and "port". Implied wstc entries come out explicit.
func seedJSON(t *testing.T, c *Config) []byte {
	west, wsts, wstc, proxy := c.RenderObjects()
	delete(west, "addr")
	delete(west, "port")
	delete(wsts, "addr")
	delete(wsts, "port")
	for _, p := range proxy {
		delete(p.(map[string]any), "addr")
		delete(p.(map[string]any), "port")
	}
	js, err := json.Marshal(map[string]any{"west": west, "wsts": wsts, "wstc": wstc, "proxy": proxy})
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// checkConfig checks the invariants Parse promises its users.
func checkConfig(c *Config) error {
	if c.West.Name == "" {
		return fmt.Errorf("no name")
	}
	if c.West.ControlAddr != "" {
		if _, _, err := net.SplitHostPort(c.West.ControlAddr); err != nil {
			return fmt.Errorf("control addr: %v", err)
		}
	}
	if _, err := acl.Parse(c.West.ControlACL, false); err != nil {
		return err
	}
	if w := c.West.StreamWindow; w != 0 && (w < MinStreamWindow || w > MaxStreamWindow) {
		return fmt.Errorf("stream window %d out of range", w)
	}
	if s := c.Server; s != nil {
		if s.URL.Scheme != "ws" && s.URL.Scheme != "wss" {
			return fmt.Errorf("server scheme %q", s.URL.Scheme)
		}
		if _, _, err := net.SplitHostPort(s.Addr); err != nil {
			return fmt.Errorf("server addr: %v", err)
		}
		if !strings.HasPrefix(s.Path, "/") {
			return fmt.Errorf("server path %q", s.Path)
		}
		if _, err := acl.Parse(s.ACL, true); err != nil {
			return err
		}
	}
	if !slices.IsSortedFunc(c.Clients, func(a, b TunnelClient) int { return strings.Compare(a.URL.String(), b.URL.String()) }) {
		return fmt.Errorf("clients not sorted")
	}
	keys := map[string]bool{}
	for _, cl := range c.Clients {
		if cl.URL.Scheme != "ws" && cl.URL.Scheme != "wss" || cl.URL.Hostname() == "" || cl.Name == "" {
			return fmt.Errorf("client %+v", cl)
		}
		if keys[urlKey(cl.URL)] {
			return fmt.Errorf("client %s twice", cl.URL)
		}
		keys[urlKey(cl.URL)] = true
		if cl.Implied && (!cl.Early || cl.Name != c.West.Name) {
			return fmt.Errorf("implied client %+v", cl)
		}
	}
	if !slices.IsSortedFunc(c.Proxies, func(a, b Proxy) int { return strings.Compare(a.URL.String(), b.URL.String()) }) {
		return fmt.Errorf("proxies not sorted")
	}
	for _, p := range c.Proxies {
		if (p.Peer == "") == (p.ServerURL == nil) {
			return fmt.Errorf("proxy %s: en %q, ea %v", p.URL, p.Peer, p.ServerURL)
		}
		if p.Peer != "" && c.Server == nil {
			return fmt.Errorf("proxy %s: en without a server", p.URL)
		}
		if p.ServerURL != nil && !slices.ContainsFunc(c.Clients, func(cl TunnelClient) bool { return cl.URL == p.ServerURL }) {
			return fmt.Errorf("proxy %s: ea %s is not a Clients URL", p.URL, p.ServerURL)
		}
		if _, _, err := net.SplitHostPort(p.Addr); err != nil {
			return fmt.Errorf("proxy %s: addr: %v", p.URL, err)
		}
		switch p.Kind {
		case KindHTTP:
			if len(p.Routes) == 0 || p.Timeout <= 0 || p.Target != nil || p.ACL != nil {
				return fmt.Errorf("http proxy %+v", p)
			}
			for i, r := range p.Routes {
				if i > 0 && len(r.Path) > len(p.Routes[i-1].Path) {
					return fmt.Errorf("proxy %s: routes not longest first", p.URL)
				}
				if !strings.HasPrefix(r.Path, "/") || r.Outgoing.Host == "" ||
					r.Outgoing.Scheme != "http" && r.Outgoing.Scheme != "https" {
					return fmt.Errorf("proxy %s: route %+v", p.URL, r)
				}
				if _, err := acl.Parse(r.ACL, false); err != nil {
					return err
				}
			}
		case KindTCP, KindUDP:
			scheme := map[Kind]string{KindTCP: "tcp", KindUDP: "udp"}[p.Kind]
			if p.Routes != nil || p.Target == nil || p.Target.Scheme != scheme || p.Target.Port() == "" || p.Timeout != 0 {
				return fmt.Errorf("%s proxy %+v", scheme, p)
			}
			if _, err := acl.Parse(p.ACL, false); err != nil {
				return err
			}
		default:
			return fmt.Errorf("proxy %s: kind %d", p.URL, p.Kind)
		}
	}
	return nil
}
