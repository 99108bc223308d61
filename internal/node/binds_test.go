package node

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/west-tunnel/west/internal/config"
)

// bindAddr finds for a name the address net.Listen binds for it, TCP and
// UDP alike.
func TestBindAddrIsWhatListenBinds(t *testing.T) {
	got, err := bindAddr("localhost")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "localhost:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp", "localhost:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for _, want := range []netip.AddrPort{ln.Addr().(*net.TCPAddr).AddrPort(), pc.LocalAddr().(*net.UDPAddr).AddrPort()} {
		if got != want.Addr().Unmap() {
			t.Errorf("bindAddr(localhost) = %s; net listens on %s", got, want.Addr())
		}
	}
}

// A name's addresses as a resolver may give them, for the one
// net.Listen binds; localhost is often both 127.0.0.1 and ::1.
func TestListenPick(t *testing.T) {
	for _, tt := range []struct {
		addrs []string
		want  string
	}{
		{[]string{"127.0.0.1", "::1"}, "127.0.0.1"},
		{[]string{"::1", "127.0.0.1"}, "127.0.0.1"},
		{[]string{"::1"}, "::1"},
		{[]string{"fe80::1", "::1"}, "fe80::1"},
		{[]string{"2001:db8::1", "::ffff:192.0.2.1", "192.0.2.2"}, "192.0.2.1"},
	} {
		var addrs []netip.Addr
		for _, a := range tt.addrs {
			addrs = append(addrs, netip.MustParseAddr(a))
		}
		if got := listenPick(addrs); got != netip.MustParseAddr(tt.want) {
			t.Errorf("listenPick(%v) = %s, want %s", tt.addrs, got, tt.want)
		}
	}
}

// localhostIs4 skips a test whose config spells 127.0.0.1 as localhost
// on a machine where it is not.
func localhostIs4(t *testing.T) {
	t.Helper()
	if a, err := bindAddr("localhost"); err != nil || a != netip.MustParseAddr("127.0.0.1") {
		t.Skipf("localhost binds %v here (%v), not 127.0.0.1", a, err)
	}
}

// CheckBinds resolves the names of listen addresses, so that it sees
// clashes config.Parse cannot; a name that does not resolve is a warning.
func TestCheckBinds(t *testing.T) {
	localhostIs4(t)
	if _, err := bindAddr("nohost.invalid"); err == nil {
		t.Skip("nohost.invalid resolves here")
	}
	for _, tt := range []struct {
		name, js string
		err      string // "" for none
		warning  string // "" for none
	}{
		{"clash", `{"west": {"nm": "a", "cp": "127.0.0.1:9701"}, "proxy": {
			"http://localhost:9701": {"ea": "ws://h", "/": {"ou": "http://h"}}}}`,
			`proxy["http://localhost:9701"]: want a listen address of its own, got localhost:9701 (resolved to 127.0.0.1:9701), which west.cp listens on too as 127.0.0.1:9701`, ""},
		{"no clash", `{"west": {"nm": "a", "cp": "127.0.0.2:9701"}, "proxy": {
			"http://localhost:9701": {"ea": "ws://h", "/": {"ou": "http://h"}},
			"udp://127.0.0.1:9701": {"ea": "ws://h", "ou": "udp://h:53"}}}`, "", ""},
		{"name that does not resolve", `{"west": {"nm": "a", "cp": "127.0.0.1:9701"}, "proxy": {
			"tcp://nohost.invalid:9701": {"ea": "ws://h", "ou": "tcp://h:22"}}}`,
			"", `proxy["tcp://nohost.invalid:9701"]: lookup nohost.invalid`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(tt.js))
			if err != nil {
				t.Fatal(err)
			}
			warnings, err := CheckBinds(cfg)
			if got := fmt.Sprint(err); tt.err == "" && err != nil || tt.err != "" && !strings.HasSuffix(got, tt.err) {
				t.Errorf("CheckBinds: %v\nwant error %q", err, tt.err)
			}
			if tt.warning == "" && len(warnings) > 0 || tt.warning != "" && (len(warnings) != 1 || !strings.HasPrefix(warnings[0], tt.warning)) {
				t.Errorf("CheckBinds warns %q, want %q", warnings, tt.warning)
			}
		})
	}
}

// heldBy names the listener of this west that holds the address a bind
// failed on, and no other.
func TestHeldBy(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	port := held.Addr().(*net.TCPAddr).Port
	open := []*listener{
		{role: "tunnel", name: "ws://a:1"}, // not open
		{role: "proxy", name: "http://127.0.0.1:1", ln: held},
	}
	failed := func(network string, ip net.IP, errno syscall.Errno) error {
		var a net.Addr = &net.TCPAddr{IP: ip, Port: port}
		if network == "udp" {
			a = &net.UDPAddr{IP: ip, Port: port}
		}
		return &net.OpError{Op: "listen", Net: network, Addr: a, Err: os.NewSyscallError("bind", errno)}
	}
	s := &listener{role: "proxy", name: "tcp://localhost:1"}
	for _, tt := range []struct {
		name  string
		err   error
		named bool
	}{
		{"same address", failed("tcp", net.IPv4(127, 0, 0, 1), syscall.EADDRINUSE), true},
		{"every address", failed("tcp", nil, syscall.EADDRINUSE), true},
		{"another address", failed("tcp", net.IPv4(127, 0, 0, 2), syscall.EADDRINUSE), false},
		{"udp", failed("udp", net.IPv4(127, 0, 0, 1), syscall.EADDRINUSE), false},
		{"another error", failed("tcp", net.IPv4(127, 0, 0, 1), syscall.EACCES), false},
	} {
		got := heldBy(s, tt.err, open)
		want := tt.err.Error()
		if tt.named {
			want += fmt.Sprintf(", by this west's proxy http://127.0.0.1:1 (on 127.0.0.1:%d)", port)
		}
		if got.Error() != want || !errors.Is(got, tt.err) {
			t.Errorf("%s: heldBy = %v\nwant %s", tt.name, got, want)
		}
	}
}

// A start that fails because one of its listeners holds the address of
// another, spelled otherwise, names that listener: "address already in
// use" alone sends the operator looking for another process.
func TestStartNamesTheListenerInTheWay(t *testing.T) {
	localhostIs4(t)
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	addr := held.Addr().String()
	port := held.Addr().(*net.TCPAddr).Port
	opts := Options{Logger: testLogger(t), Listen: func(network, a string) (net.Listener, error) {
		if a == addr {
			return held, nil
		}
		return net.Listen(network, a)
	}}
	cfg, err := config.Parse(fmt.Appendf(nil, `{"west": {"nm": "x"}, "wsts": {"sp": "ws://%s"},
		"proxy": {"tcp://localhost:%d": {"en": "p", "ou": "tcp://127.0.0.1:1"}}}`, addr, port))
	if err != nil {
		t.Fatal(err)
	}
	n, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	err = n.Start()
	want := fmt.Sprintf("address already in use, by this west's tunnel ws://%s (on %s)", addr, addr)
	if !errors.Is(err, syscall.EADDRINUSE) || !strings.HasSuffix(fmt.Sprint(err), want) {
		t.Fatalf("start: %v\nwant an error ending %q", err, want)
	}
}

// A reload's listener that cannot bind for one of this west's own names
// it, whichever that is: kept, rerouted, not a proxy, or new in the
// reload too.
func TestReloadNamesTheListenerInTheWay(t *testing.T) {
	localhostIs4(t)
	conf := func(route, more string) string {
		return fmt.Sprintf(`{"west": {"nm": "x", "cp": "127.0.0.1:0"}, "wsts": {"sp": "ws://127.0.0.1:0"}, "proxy": {
			"http://127.0.0.1:0": {"en": "p", %q: {"ou": "http://127.0.0.1:1"}},
			"tcp://127.0.0.1:0": {"en": "p", "ou": "tcp://127.0.0.1:1"}%s}}`, route, more)
	}
	const tcp = `, %q: {"en": "p", "ou": "tcp://127.0.0.1:1"}`
	// The reload removes the last, whose port is then free for two new
	// listeners to clash on.
	n, _ := runNode(t, conf("/a", fmt.Sprintf(tcp, "tcp://localhost:0")), Options{})
	<-n.Running()
	a := n.Addrs()
	port := func(addr string) string {
		_, p, _ := net.SplitHostPort(addr)
		return p
	}
	freed := port(a.Proxies["tcp://localhost:0"])
	in := map[string]string{ // listener -> the one in its way
		"tcp://localhost:" + port(a.Tunnel):                        "tunnel ws://127.0.0.1:0 (on " + a.Tunnel + ")",
		"tcp://localhost:" + port(a.Control):                       "control 127.0.0.1:0 (on " + a.Control + ")",
		"tcp://localhost:" + port(a.Proxies["http://127.0.0.1:0"]): "proxy http://127.0.0.1:0 (on " + a.Proxies["http://127.0.0.1:0"] + ")", // rerouted
		"tcp://localhost:" + port(a.Proxies["tcp://127.0.0.1:0"]):  "proxy tcp://127.0.0.1:0 (on " + a.Proxies["tcp://127.0.0.1:0"] + ")",   // kept
		"tcp://localhost:" + freed:                                 "proxy tcp://127.0.0.1:" + freed + " (on 127.0.0.1:" + freed + ")",      // new
	}
	more := fmt.Sprintf(tcp, "tcp://127.0.0.1:"+freed)
	for url := range in {
		more += fmt.Sprintf(tcp, url)
	}
	err := n.Reload(mustParse(t, conf("/b", more)))
	var partial *PartialError
	if !errors.As(err, &partial) {
		t.Fatalf("reload: %v, want a PartialError", err)
	}
	for url, holder := range in {
		hostPort := strings.TrimPrefix(url, "tcp://")
		want := fmt.Sprintf("listen for proxy %s on %s: listen tcp 127.0.0.1:%s: bind: %v, by this west's %s",
			url, hostPort, port(hostPort), syscall.EADDRINUSE, holder)
		if !strings.Contains(err.Error(), want) {
			t.Errorf("reload: %v\nwant it to say %q", err, want)
		}
	}
}
