package acl

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// List is a parsed access list. The zero value and nil both allow
// everything. A List is immutable once parsed, so it is safe for
// concurrent use.
type List struct {
	prefixes []netip.Prefix // single addresses are full-length prefixes
	names    []string
}

// EntryError reports an entry that is neither an address, a range, nor an
// allowed name.
type EntryError struct {
	Index int    // position of the entry in the list
	Entry string // the entry as given
	Msg   string // what was expected and what was found
}

func (e *EntryError) Error() string {
	return fmt.Sprintf("acl: entry %d: %s", e.Index, e.Msg)
}

// Parse parses entries. Each is an IP address, a CIDR range, or, only when
// allowNames is set, a peer name. A range with host bits set
// ("10.1.2.3/8") is taken as its masked form. An entry that looks like an
// address (digits and dots, or hex digits and colons) but does not parse
// is an error, never a name. The error for a bad entry is an *EntryError.
func Parse(entries []string, allowNames bool) (*List, error) {
	l := &List{}
	for i, s := range entries {
		if msg := l.add(s, allowNames); msg != "" {
			return nil, &EntryError{Index: i, Entry: s, Msg: msg}
		}
	}
	return l, nil
}

// add adds one entry, or returns why it cannot.
func (l *List) add(s string, allowNames bool) string {
	want := "want an IP address or CIDR range"
	if allowNames {
		want = "want an IP address, CIDR range or peer name"
	}
	if s == "" {
		return want + ", got an empty string"
	}
	if strings.TrimSpace(s) != s {
		// Neither netip nor a peer's Origin header ever carries these, so
		// the entry could never match.
		return fmt.Sprintf("%s, got %q with surrounding white space", want, s)
	}
	// An address in brackets, as URLs and dial_allow write it ("[::1]",
	// "[10.0.0.0/8]:443"), would be a peer name here: a list without
	// address rules, admitting any client that calls itself so.
	if in, ok := strings.CutPrefix(s, "["); ok {
		a, _, _ := strings.Cut(in, "]")
		if a, _, _ = strings.Cut(a, "/"); looksLikeAddr(a) {
			return fmt.Sprintf("want an IP address or CIDR range without brackets, got %q", s)
		}
	}
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return fmt.Sprintf("want an IP address without a zone, got %q", s)
		}
		a = a.Unmap()
		l.prefixes = append(l.prefixes, netip.PrefixFrom(a, a.BitLen()))
		return ""
	} else if looksLikeAddr(s) {
		return fmt.Sprintf("want an IP address, got %q: %s", s, reason(err, "ParseAddr", s))
	}
	if p, err := netip.ParsePrefix(s); err == nil {
		l.prefixes = append(l.prefixes, unmapPrefix(p.Masked()))
		return ""
	} else if before, _, ok := strings.Cut(s, "/"); ok && looksLikeAddr(before) {
		return fmt.Sprintf("want a CIDR range, got %q: %s", s, reason(err, "netip.ParsePrefix", s))
	}
	if !allowNames {
		return fmt.Sprintf("%s (peer names are not allowed here), got %q", want, s)
	}
	l.names = append(l.names, s)
	return ""
}

// looksLikeAddr reports whether s was meant as an IP address: digits and
// dots with a dot (and the wildcards and ranges other tools write, as
// "10.0.0.*" and "10.0.0.1-10.0.0.9"), or hex digits and colons with a
// colon. Such an entry is an error when it does not parse, rather than a
// peer name that could never match.
func looksLikeAddr(s string) bool {
	if strings.Contains(s, ":") {
		s, _, _ = strings.Cut(s, "%") // zone
		return strings.Trim(s, "0123456789abcdefABCDEF:.") == ""
	}
	return strings.Contains(s, ".") && strings.Trim(s, "0123456789.*-") == ""
}

// reason strips netip's `Func("input"): ` prefix from err, since the
// message quotes the entry already.
func reason(err error, fn, s string) string {
	msg := err.Error()
	if r, ok := strings.CutPrefix(msg, fn+"("+strconv.Quote(s)+"): "); ok {
		return r
	}
	return msg
}

// unmapPrefix turns an IPv4-mapped IPv6 range into the IPv4 range it
// covers, so that it matches unmapped addresses.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if !p.Addr().Is4In6() || p.Bits() < 96 {
		return p
	}
	return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
}

// Empty reports whether l has no rules at all, and so allows everything.
func (l *List) Empty() bool {
	return l == nil || len(l.prefixes) == 0 && len(l.names) == 0
}

// AllowAddr reports whether a is allowed: it is in one of the address
// rules, or l has none.
func (l *List) AllowAddr(a netip.Addr) bool {
	if l == nil || len(l.prefixes) == 0 {
		return true
	}
	a = a.Unmap().WithZone("")
	for _, p := range l.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// AllowName reports whether name is allowed: it is one of the name rules,
// or l has none.
func (l *List) AllowName(name string) bool {
	if l == nil || len(l.names) == 0 {
		return true
	}
	return slices.Contains(l.names, name)
}

// Allow reports whether a peer at addr calling itself name passes both the
// address rules and the name rules.
func (l *List) Allow(addr netip.Addr, name string) bool {
	return l.AllowAddr(addr) && l.AllowName(name)
}

// String returns the rules in their normalized form for logs: addresses,
// ranges and quoted names separated by spaces, or "any" when empty.
func (l *List) String() string {
	if l.Empty() {
		return "any"
	}
	parts := make([]string, 0, len(l.prefixes)+len(l.names))
	for _, p := range l.prefixes {
		if p.IsSingleIP() {
			parts = append(parts, p.Addr().String())
		} else {
			parts = append(parts, p.String())
		}
	}
	for _, n := range l.names {
		parts = append(parts, strconv.Quote(n))
	}
	return strings.Join(parts, " ")
}

// PeerAddr is the address of a connection's "host:port", as access lists
// see it: unmapped from IPv4-in-IPv6, without a zone. It is the zero Addr,
// which no list with address rules allows, when hostport does not parse.
func PeerAddr(hostport string) netip.Addr {
	ap, err := netip.ParseAddrPort(hostport)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap().WithZone("")
}
