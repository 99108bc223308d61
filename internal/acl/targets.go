package acl

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Targets is a parsed dial policy: which host:port targets peers may make
// a west dial. Rules are addresses and CIDR ranges, matched against the
// address actually dialled, and host names, matched against the name a
// peer asked for; either may carry a port. The zero value and nil allow
// every target. Targets is immutable once parsed.
type Targets struct {
	rules []targetRule
}

type targetRule struct {
	prefix netip.Prefix // valid for address rules
	name   string       // name rules: "db.internal", "*.example.org" or "*", lower case
	port   int          // 0 matches every port
}

// ParseTargets parses dial policy entries:
//
//	10.0.0.0/8            a range, any port
//	192.0.2.7:5432        an address and port ([2001:db8::1]:443 for IPv6)
//	[10.0.0.0/8]:443      a range and port
//	db.internal           a host name, any port
//	*.example.org:443     any name below example.org, port 443
//	*:80                  any host, port 80
//
// The error for a bad entry is an *EntryError.
func ParseTargets(entries []string) (*Targets, error) {
	t := &Targets{}
	for i, s := range entries {
		r, msg := parseTargetRule(s)
		if msg != "" {
			return nil, &EntryError{Index: i, Entry: s, Msg: msg}
		}
		t.rules = append(t.rules, r)
	}
	return t, nil
}

const targetWant = `want an address, CIDR range or host name, each with an optional ":port", such as "10.0.0.0/8", "db.internal:5432" or "*.example.org:443"`

func parseTargetRule(s string) (targetRule, string) {
	var r targetRule
	if s == "" || strings.TrimSpace(s) != s {
		return r, fmt.Sprintf("%s, got %q", targetWant, s)
	}
	host := s
	// A port follows the last colon when the host part is bracketed or
	// has no colon of its own (IPv6 without brackets has no port).
	if h, p, err := net.SplitHostPort(s); err == nil {
		if p != "*" {
			n, err := strconv.Atoi(p)
			if err != nil || n < 1 || n > 65535 {
				return r, fmt.Sprintf("want a port from 1 to 65535 or *, got %q in %q", p, s)
			}
			r.port = n
		}
		host = h
	}
	if host == "" {
		return r, fmt.Sprintf("%s, got %q with no host", targetWant, s)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return r, fmt.Sprintf("want an address without a zone, got %q", s)
		}
		a = a.Unmap()
		r.prefix = netip.PrefixFrom(a, a.BitLen())
		return r, ""
	} else if looksLikeAddr(host) {
		return r, fmt.Sprintf("want an IP address, got %q: %s", host, reason(err, "ParseAddr", host))
	}
	if p, err := netip.ParsePrefix(host); err == nil {
		r.prefix = unmapPrefix(p.Masked())
		return r, ""
	} else if before, _, ok := strings.Cut(host, "/"); ok && looksLikeAddr(before) {
		return r, fmt.Sprintf("want a CIDR range, got %q: %s", host, reason(err, "netip.ParsePrefix", host))
	}
	name := strings.ToLower(host)
	if !validPattern(name) {
		return r, fmt.Sprintf("%s, got %q", targetWant, s)
	}
	r.name = name
	return r, ""
}

// validPattern accepts "*", "*.suffix" and plain host names.
func validPattern(name string) bool {
	if name == "*" {
		return true
	}
	name = strings.TrimPrefix(name, "*.")
	if name == "" || strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".") || strings.Contains(name, "..") {
		return false
	}
	return nameChars(name)
}

// nameChars reports whether s has only the characters of a host name.
func nameChars(s string) bool {
	return strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789.-_") == ""
}

// Empty reports whether t has no rules, and so allows every target.
func (t *Targets) Empty() bool { return t == nil || len(t.rules) == 0 }

// AllowName reports whether a name rule admits host:port as asked for.
// An IP literal host matches only the "*" name rule.
func (t *Targets) AllowName(host string, port int) bool {
	if t.Empty() {
		return true
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	// Only a host name can match a name rule other than "*". An IP
	// literal is judged by the address rules, and one with a zone that
	// looks like a name ("::ffff:127.0.0.1%a.example.org") above all:
	// the dialer ignores a zone it does not know, and dials the address.
	_, err := netip.ParseAddr(host)
	isName := err != nil && nameChars(host)
	for _, r := range t.rules {
		if r.name == "" || r.port != 0 && r.port != port {
			continue
		}
		switch {
		case r.name == "*":
			return true
		case isName && (r.name == host || strings.HasPrefix(r.name, "*.") && strings.HasSuffix(host, r.name[1:])):
			return true
		}
	}
	return false
}

// AllowAddr reports whether an address rule admits the address about to
// be dialled.
func (t *Targets) AllowAddr(ap netip.AddrPort) bool {
	if t.Empty() {
		return true
	}
	a := ap.Addr().Unmap().WithZone("")
	for _, r := range t.rules {
		if r.prefix.IsValid() && (r.port == 0 || r.port == int(ap.Port())) && r.prefix.Contains(a) {
			return true
		}
	}
	return false
}
