package tunnel

import (
	"net"
	"net/http"
	"net/netip"

	"github.com/west-tunnel/west/internal/acl"
)

// The bounds on a tunnel server's connections still in their handshake:
// accepted, and neither upgraded to a tunnel nor closed. Each such
// connection holds a descriptor and goroutines for up to the handshake
// timeout (10 s), so without a bound one address could hold thousands.
const (
	// DefaultMaxHandshakesPerIP is per client address (an IPv6 /64
	// counting as one address: see handshakeKey). Many wests behind
	// one NAT share an address, and after an outage they all reconnect
	// at about the same time; their jittered backoff spreads the dials
	// over seconds, and a handshake takes a round trip or two, so 64 at
	// once leaves room for hundreds of them to get in within a few
	// tries, while one address can no longer hold the server's
	// descriptors.
	DefaultMaxHandshakesPerIP = 64
	// DefaultMaxHandshakes is over all addresses.
	DefaultMaxHandshakes = 1024
)

// Listener returns ln, counting the connections it accepts as in their
// handshake until ConnState sees them upgraded or closed. It closes at
// once, without handing it on, a connection beyond the per-address or
// the overall bound. The http.Server serving the tunnel server must
// serve this listener (under its TLS listener, if any) and have
// ConnState as its ConnState hook.
func (s *Server) Listener(ln net.Listener) net.Listener { return shedListener{ln, s} }

type shedListener struct {
	net.Listener
	s *Server
}

func (l shedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.s.admitHandshake(c) {
			return c, nil
		}
		c.Close()
	}
}

// ConnState is the tunnel server's http.Server.ConnState hook: a
// connection leaves the count of those in their handshake when it is
// upgraded (hijacked) or closed. net/http reports one or the other for
// each connection it served, never both.
func (s *Server) ConnState(c net.Conn, st http.ConnState) {
	if st != http.StateHijacked && st != http.StateClosed {
		return
	}
	a := handshakeKey(acl.PeerAddr(c.RemoteAddr().String()))
	s.hsMu.Lock()
	if s.hsByIP[a] > 0 { // a connection not from Listener was never counted
		s.hsByIP[a]--
		if s.hsByIP[a] == 0 {
			delete(s.hsByIP, a)
		}
		s.hsTotal--
	}
	s.hsMu.Unlock()
}

// admitHandshake counts c as in its handshake, or reports false when
// that would exceed a bound, which it counts and logs.
func (s *Server) admitHandshake(c net.Conn) bool {
	a := handshakeKey(acl.PeerAddr(c.RemoteAddr().String()))
	s.hsMu.Lock()
	var reason string
	switch {
	case s.hsByIP[a] >= s.maxPerIP:
		reason = "too many from one address"
	case s.hsTotal >= s.maxTotal:
		reason = "too many in all"
	default:
		s.hsByIP[a]++
		s.hsTotal++
		s.hsMu.Unlock()
		return true
	}
	s.hsMu.Unlock()
	if s.opts.OnShed != nil {
		s.opts.OnShed()
	}
	if logIt, skipped := s.shedLog.Allow(); logIt {
		s.log.Warn("tunnel server sheds connections still in their handshake", "reason", reason,
			"remote", c.RemoteAddr().String(), "per_address", s.maxPerIP, "in_all", s.maxTotal, "not_logged_since", skipped)
	}
	return false
}

// handshakes is how many connections are counted as in their handshake.
func (s *Server) handshakes() int {
	s.hsMu.Lock()
	defer s.hsMu.Unlock()
	return s.hsTotal
}

// handshakeKey is what the per-address bound counts by: an IPv4 address,
// or the /64 of an IPv6 one, since whoever holds one IPv6 address
// usually holds its whole /64 and could otherwise spread a flood over it.
func handshakeKey(a netip.Addr) netip.Addr {
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}
