package acl

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func TestAllowAddr(t *testing.T) {
	tests := []struct {
		name    string
		entries []string
		allow   []string
		deny    []string
	}{
		{"nil list", nil, []string{"127.0.0.1", "::1", "10.1.2.3"}, nil},
		{"names only", []string{"ws://peer"}, []string{"127.0.0.1", "::1"}, nil},
		{"v4 address", []string{"127.0.0.1"},
			[]string{"127.0.0.1", "::ffff:127.0.0.1"},
			[]string{"127.0.0.2", "::1", "::127.0.0.1"}},
		{"v6 address", []string{"::1"},
			[]string{"::1", "::1%lo"},
			[]string{"127.0.0.1", "::2"}},
		{"v4 range edges", []string{"10.0.0.0/8"},
			[]string{"10.0.0.0", "10.255.255.255", "::ffff:10.9.9.9"},
			[]string{"9.255.255.255", "11.0.0.0", "fd00::a00:1"}},
		{"v4 /32 and /0", []string{"192.168.1.1/32", "0.0.0.0/0"},
			[]string{"192.168.1.1", "1.2.3.4"},
			[]string{"::1"}},
		{"host bits masked", []string{"192.168.1.77/24"},
			[]string{"192.168.1.0", "192.168.1.255"},
			[]string{"192.168.2.0"}},
		{"v6 range edges", []string{"fd00::/8"},
			[]string{"fd00::", "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
			[]string{"fc00::1", "fe00::", "10.0.0.1"}},
		{"v6 /0 leaves v4 out", []string{"::/0"},
			[]string{"::", "2001:db8::1"},
			[]string{"127.0.0.1", "::ffff:127.0.0.1"}},
		{"mapped entry", []string{"::ffff:10.0.0.1"},
			[]string{"10.0.0.1", "::ffff:10.0.0.1"},
			[]string{"10.0.0.2"}},
		{"mapped range", []string{"::ffff:10.0.0.0/104"},
			[]string{"10.1.2.3", "::ffff:10.1.2.3"},
			[]string{"11.0.0.0"}},
		{"mixed", []string{"127.0.0.1", "::1", "fd00::/8", "peer"},
			[]string{"127.0.0.1", "::1", "fd12::3"},
			[]string{"10.0.0.1", "2001:db8::1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l *List
			if tt.entries != nil {
				var err error
				if l, err = Parse(tt.entries, true); err != nil {
					t.Fatal(err)
				}
			}
			for _, s := range tt.allow {
				if !l.AllowAddr(netip.MustParseAddr(s)) {
					t.Errorf("%v denies %s, want allowed", tt.entries, s)
				}
			}
			for _, s := range tt.deny {
				if l.AllowAddr(netip.MustParseAddr(s)) {
					t.Errorf("%v allows %s, want denied", tt.entries, s)
				}
			}
		})
	}
}

// An address that failed to parse must not slip past address rules.
func TestAllowZeroAddr(t *testing.T) {
	l, err := Parse([]string{"0.0.0.0/0", "::/0"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if l.AllowAddr(netip.Addr{}) {
		t.Error("a list with address rules allows the zero Addr")
	}
	if !(*List)(nil).AllowAddr(netip.Addr{}) {
		t.Error("a nil list denies the zero Addr")
	}
}

func TestAllowName(t *testing.T) {
	l, err := Parse([]string{"10.0.0.0/8", "ws://case3.L2.fiap.org", "node-a"}, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"ws://case3.L2.fiap.org", "node-a"} {
		if !l.AllowName(n) {
			t.Errorf("AllowName(%q) = false, want true", n)
		}
	}
	for _, n := range []string{"", "node-b", "NODE-A", "ws://case3.L2.fiap.org/"} {
		if l.AllowName(n) {
			t.Errorf("AllowName(%q) = true, want false", n)
		}
	}
	a := netip.MustParseAddr("10.1.1.1")
	b := netip.MustParseAddr("192.168.0.1")
	if !l.Allow(a, "node-a") || l.Allow(b, "node-a") || l.Allow(a, "node-b") {
		t.Error("Allow does not require both the address and the name")
	}

	addrsOnly, err := Parse([]string{"10.0.0.0/8"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if !addrsOnly.AllowName("anyone") {
		t.Error("a list without names denies a name")
	}
	var nilList *List
	if !nilList.Allow(b, "anyone") || !(&List{}).Allow(b, "anyone") {
		t.Error("a nil or zero list denies")
	}
}

func TestEmptyAndString(t *testing.T) {
	tests := []struct {
		entries []string
		empty   bool
		str     string
	}{
		{nil, true, "any"},
		{[]string{}, true, "any"},
		{[]string{"127.0.0.1"}, false, "127.0.0.1"},
		{[]string{"10.1.2.3/8", "::ffff:1.2.3.4", "::1", "fd00::/8", "peer one"}, false,
			`10.0.0.0/8 1.2.3.4 ::1 fd00::/8 "peer one"`},
	}
	for _, tt := range tests {
		l, err := Parse(tt.entries, true)
		if err != nil {
			t.Fatal(err)
		}
		if l.Empty() != tt.empty {
			t.Errorf("Parse(%q).Empty() = %v, want %v", tt.entries, l.Empty(), tt.empty)
		}
		if got := l.String(); got != tt.str {
			t.Errorf("Parse(%q).String() = %q, want %q", tt.entries, got, tt.str)
		}
	}
	var nilList *List
	if !nilList.Empty() || nilList.String() != "any" {
		t.Error("nil list is not empty")
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		entries    []string
		allowNames bool
		index      int
		msg        string // substring of EntryError.Msg
	}{
		{[]string{""}, true, 0, `want an IP address, CIDR range or peer name, got an empty string`},
		{[]string{"127.0.0.1", ""}, false, 1, "want an IP address or CIDR range, got an empty string"},
		{[]string{" 127.0.0.1"}, false, 0, `want an IP address or CIDR range, got " 127.0.0.1" with surrounding white space`},
		{[]string{"peer "}, true, 0, "surrounding white space"},
		{[]string{"10.0.0.256"}, true, 0, `want an IP address, got "10.0.0.256": IPv4 field has value >255`},
		{[]string{"1.2.3"}, true, 0, `want an IP address, got "1.2.3": IPv4 address too short`},
		{[]string{"::g"}, false, 0, `want an IP address or CIDR range (peer names are not allowed here), got "::g"`},
		{[]string{"1::2::3"}, true, 0, `want an IP address, got "1::2::3"`},
		{[]string{"fe80::1%eth0"}, true, 0, `want an IP address without a zone, got "fe80::1%eth0"`},
		{[]string{"10.0.0.0/33"}, true, 0, `want a CIDR range, got "10.0.0.0/33": prefix length out of range`},
		{[]string{"::/129"}, true, 0, `want a CIDR range, got "::/129": prefix length out of range`},
		{[]string{"10.0.0.0/"}, true, 0, "want a CIDR range"},
		{[]string{"10.0.0.0/08"}, true, 0, "want a CIDR range"},
		{[]string{"10.0.0.0/-1"}, true, 0, "want a CIDR range"},
		{[]string{"fe80::/10", "fe80::1%eth0/64"}, true, 1, "zone"},
		{[]string{"::1", "peer"}, false, 1, `(peer names are not allowed here), got "peer"`},
		{[]string{"example.com"}, false, 0, `want an IP address or CIDR range (peer names are not allowed here), got "example.com"`},
		// Bracketed as URLs and dial_allow write them: never a peer name.
		{[]string{"[192.0.2.7]"}, true, 0, `want an IP address or CIDR range without brackets, got "[192.0.2.7]"`},
		{[]string{"[2001:db8::7]"}, true, 0, "without brackets"},
		{[]string{"[192.0.2.0/24]"}, true, 0, "without brackets"},
		{[]string{"[2001:db8::7]:443"}, true, 0, "without brackets"},
		{[]string{"[::1]"}, false, 0, "without brackets"},
		// Wildcards and ranges as other tools write them: never a peer name.
		{[]string{"10.0.0.*"}, true, 0, `want an IP address, got "10.0.0.*"`},
		{[]string{"10.0.0.1-10.0.0.9"}, true, 0, `want an IP address, got "10.0.0.1-10.0.0.9"`},
	}
	for _, tt := range tests {
		l, err := Parse(tt.entries, tt.allowNames)
		var ee *EntryError
		if !errors.As(err, &ee) {
			t.Errorf("Parse(%q, %v) = %v, %v; want an *EntryError", tt.entries, tt.allowNames, l, err)
			continue
		}
		if ee.Index != tt.index || ee.Entry != tt.entries[tt.index] || !strings.Contains(ee.Msg, tt.msg) {
			t.Errorf("Parse(%q, %v): got entry %d %q msg %q; want entry %d msg containing %q",
				tt.entries, tt.allowNames, ee.Index, ee.Entry, ee.Msg, tt.index, tt.msg)
		}
		if want := fmt.Sprintf("acl: entry %d: %s", tt.index, ee.Msg); err.Error() != want {
			t.Errorf("Error() = %q, want %q", err, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "::1", "10.0.0.0/8", "fd00::/8", "::ffff:10.0.0.0/104",
		"peer", "ws://case3.L2.fiap.org", "", "10.0.0.256", "fe80::1%eth0", "1.2.3.4/33"} {
		f.Add(s, true, "10.1.2.3")
		f.Add(s, false, "::ffff:127.0.0.1")
	}
	f.Fuzz(func(t *testing.T, entry string, allowNames bool, addr string) {
		l, err := Parse([]string{entry}, allowNames)
		if err != nil {
			var ee *EntryError
			if !errors.As(err, &ee) || ee.Index != 0 || ee.Entry != entry || l != nil {
				t.Fatalf("Parse(%q) = %v, %v", entry, l, err)
			}
			return
		}
		if l.Empty() {
			t.Fatalf("Parse(%q) gave an empty list", entry)
		}
		_ = l.String()
		if a, err := netip.ParseAddr(entry); err == nil && !l.AllowAddr(a) {
			t.Fatalf("%q does not allow itself", entry)
		}
		// A range below /96 that holds the IPv4-mapped block does not
		// match IPv4 clients, which are unmapped before matching.
		if p, err := netip.ParsePrefix(entry); err == nil && !(p.Addr().Is4In6() && p.Bits() < 96) && !l.AllowAddr(p.Addr()) {
			t.Fatalf("%q does not allow its own address", entry)
		}
		if len(l.names) > 0 && !l.AllowName(entry) {
			t.Fatalf("%q does not allow its own name", entry)
		}
		if a, err := netip.ParseAddr(addr); err == nil {
			_ = l.Allow(a, addr)
		}
	})
}

func TestTargets(t *testing.T) {
	pol, err := ParseTargets([]string{"10.0.0.0/8", "192.0.2.7:5432", "[2001:db8::/32]:443", "db.internal", "*.example.org:443", "*:8080"})
	if err != nil {
		t.Fatal(err)
	}
	addrs := []struct {
		ap   string
		want bool
	}{
		{"10.1.2.3:22", true},
		{"[::ffff:10.1.2.3]:22", true},
		{"11.0.0.1:22", false},
		{"192.0.2.7:5432", true},
		{"192.0.2.7:5433", false},
		{"[2001:db8::9]:443", true},
		{"[2001:db8::9]:80", false},
	}
	for _, c := range addrs {
		if got := pol.AllowAddr(netip.MustParseAddrPort(c.ap)); got != c.want {
			t.Errorf("AllowAddr(%s) = %v, want %v", c.ap, got, c.want)
		}
	}
	names := []struct {
		host string
		port int
		want bool
	}{
		{"db.internal", 5432, true},
		{"DB.Internal.", 1, true},
		{"x.db.internal", 1, false},
		{"www.example.org", 443, true},
		{"example.org", 443, false},
		{"www.example.org", 80, false},
		{"anything", 8080, true},
		{"127.0.0.1", 8080, true},
		{"127.0.0.1", 80, false},
		// An IP literal is no name, whatever its zone says: the dialer
		// dials the address.
		{"::ffff:127.0.0.1%a.example.org", 443, false},
		{"::1%www.example.org", 443, false},
		{"::1%www.example.org", 8080, true}, // the "*" rule
	}
	for _, c := range names {
		if got := pol.AllowName(c.host, c.port); got != c.want {
			t.Errorf("AllowName(%s, %d) = %v, want %v", c.host, c.port, got, c.want)
		}
	}
	var empty *Targets
	if !empty.AllowName("x", 1) || !empty.AllowAddr(netip.MustParseAddrPort("1.2.3.4:5")) {
		t.Error("a nil policy must allow everything")
	}
}

func TestTargetsErrors(t *testing.T) {
	for _, c := range []struct{ entry, want string }{
		{"", "got \"\""},
		{" db", "got \" db\""},
		{"db:0", "want a port from 1 to 65535"},
		{"db:http", "want a port from 1 to 65535"},
		{"10.0.0.300", "want an IP address"},
		{"10.0.0.0/40", "want a CIDR range"},
		{"a..b", `got "a..b"`},
		{"a b", `got "a b"`},
		{":80", "with no host"},
		{"fe80::1%eth0", "without a zone"},
	} {
		_, err := ParseTargets([]string{"ok.example", c.entry})
		var ee *EntryError
		if !errors.As(err, &ee) || ee.Index != 1 || !strings.Contains(ee.Msg, c.want) {
			t.Errorf("ParseTargets(%q) = %v, want entry 1 error containing %q", c.entry, err, c.want)
		}
	}
}

func TestPeerAddr(t *testing.T) {
	for in, want := range map[string]string{
		"10.1.2.3:80":          "10.1.2.3",
		"[::ffff:10.1.2.3]:80": "10.1.2.3",
		"[fe80::1%eth0]:80":    "fe80::1",
		"[::1]:443":            "::1",
	} {
		if got := PeerAddr(in); got.String() != want {
			t.Errorf("PeerAddr(%q) = %s, want %s", in, got, want)
		}
	}
	if got := PeerAddr("not an address"); got.IsValid() {
		t.Errorf("PeerAddr of garbage = %s, want the zero Addr", got)
	}
}
