package config

import (
	"errors"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"syscall"
	"testing"
)

// clashTests are pairs of bound addresses of one network, with whether
// the second cannot bind beside the first.
var clashTests = []struct {
	a, b  string
	clash bool
}{
	{"127.0.0.1:9701", "127.0.0.1:9701", true},
	{"127.0.0.1:9701", "127.0.0.2:9701", false},
	{"127.0.0.1:9701", "127.0.0.1:9702", false},
	{"[::1]:9701", "[::1]:9701", true},
	{"[::1]:9701", "127.0.0.1:9701", false}, // one family does not hold the other's port
	{"[::ffff:127.0.0.1]:9701", "127.0.0.1:9701", true},
	{"0.0.0.0:9701", "127.0.0.1:9701", true},
	{"127.0.0.1:9701", "0.0.0.0:9701", true},
	{"0.0.0.0:9701", "[::1]:9701", true}, // Go listens on 0.0.0.0 as on [::], dual-stack
	{"[::1]:9701", "0.0.0.0:9701", true},
	{"[::]:9701", "127.0.0.1:9701", true},
	{"127.0.0.1:9701", "[::]:9701", true},
	{"[::]:9701", "0.0.0.0:9701", true},
	{"0.0.0.0:9701", "[::]:9701", true},
	{"0.0.0.0:9701", "0.0.0.0:9702", false},
	{"127.0.0.1:0", "127.0.0.1:0", false}, // port 0 is a free port each time
	{"0.0.0.0:0", "[::]:0", false},
}

func TestClash(t *testing.T) {
	for _, tt := range clashTests {
		a, b := netip.MustParseAddrPort(tt.a), netip.MustParseAddrPort(tt.b)
		if got := Clash(a, b); got != tt.clash {
			t.Errorf("Clash(%s, %s) = %v, want %v", a, b, got, tt.clash)
		}
		if got := Clash(b, a); got != tt.clash {
			t.Errorf("Clash(%s, %s) = %v, want %v", b, a, got, tt.clash)
		}
	}
}

// TestClashAsTheKernelSays binds each pair of clashTests, TCP and UDP, the
// second on the port the system gave the first, and holds Clash to what
// the system says: the rule is Go's and Linux's, not a guess.
func TestClashAsTheKernelSays(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the rule is Linux's")
	}
	for _, tt := range clashTests {
		a, b := netip.MustParseAddrPort(tt.a), netip.MustParseAddrPort(tt.b)
		if a.Port() == 0 || a.Port() != b.Port() {
			continue // the port is the system's to pick
		}
		for _, network := range []string{"tcp", "udp"} {
			// Another process's socket may hold the port on b's address
			// (a connection in TIME_WAIT): a clash of ours does on every
			// port.
			for try := 1; ; try++ {
				first, err := listen(network, netip.AddrPortFrom(a.Addr(), 0))
				if err != nil {
					t.Logf("%s %s: %v", network, a.Addr(), err) // an IPv6 loopback the machine lacks, say
					break
				}
				port := netip.MustParseAddrPort(first.String()).Port()
				second := netip.AddrPortFrom(b.Addr(), port)
				clash := Clash(netip.AddrPortFrom(a.Addr(), port), second)
				err = bind(network, second)
				first.close()
				switch inUse := errors.Is(err, syscall.EADDRINUSE); {
				case errors.Is(err, syscall.EADDRNOTAVAIL):
					t.Logf("%s %s: %v", network, b.Addr(), err)
				case inUse && !clash && try < 3:
					continue
				case inUse != clash || err != nil && !inUse:
					t.Errorf("%s %s beside %s: %v; Clash says %v", network, second, first, err, clash)
				}
				break
			}
		}
	}
}

// A socket bound for TestClashAsTheKernelSays.
type socket struct {
	addr  string
	close func() error
}

func (s socket) String() string { return s.addr }

func listen(network string, a netip.AddrPort) (socket, error) {
	if network == "udp" {
		pc, err := net.ListenPacket(network, a.String())
		if err != nil {
			return socket{}, err
		}
		return socket{pc.LocalAddr().String(), pc.Close}, nil
	}
	ln, err := net.Listen(network, a.String())
	if err != nil {
		return socket{}, err
	}
	return socket{ln.Addr().String(), ln.Close}, nil
}

// bind binds a and lets it go.
func bind(network string, a netip.AddrPort) error {
	s, err := listen(network, a)
	if err == nil {
		s.close()
	}
	return err
}

func TestCheckBinds(t *testing.T) {
	loop := netip.MustParseAddr("127.0.0.1")
	loop6 := netip.MustParseAddr("::1")
	for _, tt := range []struct {
		name  string
		js    string
		bound map[string]netip.Addr
		path  string // "" for no clash
		msg   string
	}{
		{"localhost beside its address", wrap(`"proxy": {
			"http://localhost:8080": {"ea": "ws://h", "/": {"ou": "http://h"}},
			"http://127.0.0.1:8080": {"ea": "ws://h", "/": {"ou": "http://h"}}}`),
			map[string]netip.Addr{"localhost": loop},
			`proxy["http://localhost:8080"]`, `want a listen address of its own, got localhost:8080 (resolved to 127.0.0.1:8080), which proxy["http://127.0.0.1:8080"] listens on too as 127.0.0.1:8080`},
		{"localhost on IPv6", wrap(`"proxy": {
			"http://localhost:8080": {"ea": "ws://h", "/": {"ou": "http://h"}},
			"http://127.0.0.1:8080": {"ea": "ws://h", "/": {"ou": "http://h"}}}`),
			map[string]netip.Addr{"localhost": loop6}, "", ""},
		{"name in capitals", `{"west": {"nm": "a", "cp": "127.0.0.1:9701"}, "wsts": {"sp": "ws://LocalHost:9701"}}`,
			map[string]netip.Addr{"localhost": loop},
			"wsts.sp", "got LocalHost:9701 (resolved to 127.0.0.1:9701), which west.cp listens on too as 127.0.0.1:9701"},
		{"control port on a name", `{"west": {"nm": "a", "cp": "localhost:9701"}, "wsts": {"sp": "ws://[::1]:9701"}}`,
			map[string]netip.Addr{"localhost": loop6},
			"wsts.sp", "got [::1]:9701, which west.cp listens on too as localhost:9701 (resolved to [::1]:9701)"},
		{"two names, one address", wrap(`"proxy": {
			"tcp://a.test:2222": {"ea": "ws://h", "ou": "tcp://h:22"},
			"tcp://b.test:2222": {"ea": "ws://h", "ou": "tcp://h:22"}}`),
			map[string]netip.Addr{"a.test": loop, "b.test": loop},
			`proxy["tcp://b.test:2222"]`, "got b.test:2222 (resolved to 127.0.0.1:2222), which proxy[\"tcp://a.test:2222\"] listens on too as a.test:2222 (resolved to 127.0.0.1:2222)"},
		{"name of every address", wrap(`"proxy": {
			"tcp://10.1.2.3:2222": {"ea": "ws://h", "ou": "tcp://h:22"},
			"tcp://any.test:2222": {"ea": "ws://h", "ou": "tcp://h:22"}}`),
			map[string]netip.Addr{"any.test": netip.IPv4Unspecified()},
			`proxy["tcp://any.test:2222"]`, "got any.test:2222 (resolved to 0.0.0.0:2222)"},
		{"udp beside tcp", wrap(`"proxy": {
			"tcp://localhost:5353": {"ea": "ws://h", "ou": "tcp://h:53"},
			"udp://127.0.0.1:5353": {"ea": "ws://h", "ou": "udp://h:53"}}`),
			map[string]netip.Addr{"localhost": loop}, "", ""},
		{"udp beside udp", wrap(`"proxy": {
			"udp://localhost:5353": {"ea": "ws://h", "ou": "udp://h:53"},
			"udp://127.0.0.1:5353": {"ea": "ws://h", "ou": "udp://h:53"}}`),
			map[string]netip.Addr{"localhost": loop},
			`proxy["udp://localhost:5353"]`, "got localhost:5353 (resolved to 127.0.0.1:5353), which proxy[\"udp://127.0.0.1:5353\"] listens on too"},
		{"port 0", wrap(`"proxy": {
			"http://localhost:0": {"ea": "ws://h", "/": {"ou": "http://h"}},
			"http://127.0.0.1:0": {"ea": "ws://h", "/": {"ou": "http://h"}}}`),
			map[string]netip.Addr{"localhost": loop}, "", ""},
		{"name not resolved", wrap(`"proxy": {
			"http://db.test:8080": {"ea": "ws://h", "/": {"ou": "http://h"}},
			"http://127.0.0.1:8080": {"ea": "ws://h", "/": {"ou": "http://h"}}}`),
			nil, "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := mustParse(t, tt.js) // Parse, which resolves no names, lets each through
			err := c.CheckBinds(tt.bound)
			var ce *Error
			switch {
			case tt.path == "" && err != nil:
				t.Errorf("CheckBinds: %v; want no clash", err)
			case tt.path == "":
			case !errors.As(err, &ce):
				t.Errorf("CheckBinds = %v; want an *Error", err)
			case ce.Path != tt.path || !strings.Contains(ce.Msg, tt.msg):
				t.Errorf("got  path %s msg %q\nwant path %s msg containing %q", ce.Path, ce.Msg, tt.path, tt.msg)
			}
		})
	}
}
