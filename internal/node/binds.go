package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"github.com/west-tunnel/west/internal/config"
)

// lookupTimeout bounds each name lookup of CheckBinds.
const lookupTimeout = 3 * time.Second

// CheckBinds is config's CheckBinds with the host names of cfg's listen
// addresses resolved as net.Listen resolves them: what `west check` runs
// to catch "localhost:8080" beside "127.0.0.1:8080", which config.Parse,
// resolving no names, lets through, and start refuses. A name that does
// not resolve is not the check's to refuse (start says so, naming its
// listener, and the check may run on another machine): it is a warning,
// and the name is compared by its spelling.
func CheckBinds(cfg *config.Config) (warnings []string, err error) {
	bound := make(map[string]netip.Addr)
	tried := make(map[string]bool)
	for _, l := range cfg.Listens() {
		host, _, err := net.SplitHostPort(l.Addr)
		if err != nil || host == "" {
			continue
		}
		if _, err := netip.ParseAddr(host); err == nil {
			continue
		}
		name := strings.ToLower(host)
		if tried[name] {
			continue
		}
		tried[name] = true
		a, err := bindAddr(host)
		if err != nil {
			warnings = append(warnings, fmt.Sprintf("%s: %v: west fails to start unless the name resolves where it runs; clashes with the other listeners were checked by its spelling only", l.Path, err))
			continue
		}
		bound[name] = a
	}
	return warnings, cfg.CheckBinds(bound)
}

// bindAddr is the address net.Listen binds for a host name.
func bindAddr(host string) (netip.Addr, error) {
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return netip.Addr{}, err
	}
	if len(addrs) == 0 {
		return netip.Addr{}, fmt.Errorf("lookup %s: no addresses", host)
	}
	return listenPick(addrs), nil
}

// listenPick is the one of a name's addresses that net.Listen binds: the
// first IPv4 one, else the first (net's ListenConfig.Listen takes
// addrs.first(isIPv4)).
func listenPick(addrs []netip.Addr) netip.Addr {
	for _, a := range addrs {
		if a.Unmap().Is4() {
			return a.Unmap()
		}
	}
	return addrs[0]
}

// heldBy adds to err, the failure of s's bind, which of this west's
// listeners in open holds the address, when err is "address already in
// use" and one of them does: the error alone sends the operator looking
// for another process. On Windows, Winsock's WSAEADDRINUSE matches no
// errno here, so no listener is named.
func heldBy(s *listener, err error, open []*listener) error {
	var oe *net.OpError
	if !errors.Is(err, syscall.EADDRINUSE) || !errors.As(err, &oe) || oe.Addr == nil {
		return err
	}
	tried, ok := addrPort(oe.Addr)
	if !ok {
		return err
	}
	udp := strings.HasPrefix(oe.Net, "udp") // TCP and UDP ports are apart
	for _, o := range open {
		var bound netip.AddrPort
		switch {
		case o == s:
			continue
		case o.ln != nil && !udp:
			bound, ok = addrPort(o.ln.Addr())
		case o.pc != nil && udp:
			bound, ok = addrPort(o.pc.LocalAddr())
		default:
			continue // not open, or of the other transport
		}
		if ok && config.Clash(tried, bound) {
			return fmt.Errorf("%w, by this west's %s %s (on %s)", err, o.role, o.name, bound)
		}
	}
	return err
}

// addrPort is a's address, unmapped, and port, a nil IP (every address)
// as "::".
func addrPort(a net.Addr) (netip.AddrPort, bool) {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case *net.UDPAddr:
		ap = a.AddrPort()
	default:
		var err error
		if ap, err = netip.ParseAddrPort(a.String()); err != nil {
			return ap, false
		}
	}
	if !ap.Addr().IsValid() {
		return netip.AddrPortFrom(netip.IPv6Unspecified(), ap.Port()), true
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}
