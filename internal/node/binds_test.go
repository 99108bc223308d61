package node

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
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
