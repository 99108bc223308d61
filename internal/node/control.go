package node

import (
	"errors"
	"net/http"
	"net/netip"
	"strings"

	"github.com/west-tunnel/west/internal/control"
	"github.com/west-tunnel/west/internal/proxy"
	"github.com/west-tunnel/west/internal/tunnel"
	"github.com/west-tunnel/west/internal/wire"
)

// This file feeds the control port: the node's State, the metrics hooks
// passed to the engines in New, and the control port's handler.

var _ control.Source = (*Node)(nil)

// controlHandler is the handler of the control port ("west.cp").
func (n *Node) controlHandler() http.Handler {
	allow, err := allowFunc(n.cfg.West.ControlACL, "west.control_ca")
	if err != nil {
		// config.Parse has checked the list already; should it still
		// fail, keep the port closed rather than open it to all.
		n.log.Error("control port access list", "err", err)
		allow = func(netip.Addr) bool { return false }
	}
	n.controlAllow.Store(&allow)
	return control.New(control.Options{
		Config:  n.config,
		Reload:  n.reloadFunc(),
		Source:  n,
		Metrics: n.metrics,
		Allow:   n.allowControl,
		Logger:  n.log.With("part", "control"),
	})
}

// allowControl applies west.control_ca in force, which Reload replaces;
// an empty list allows everyone.
func (n *Node) allowControl(a netip.Addr) bool {
	if allow := *n.controlAllow.Load(); allow != nil {
		return allow(a)
	}
	return true
}

// State returns a snapshot of the node for the control port. Call it after
// Start, so that bound addresses are known.
func (n *Node) State() control.State {
	// Under one lock, so that a listener a reload is adding shows either
	// not yet or with its address or error.
	n.mu.Lock()
	addrs := n.addrsLocked()
	cfg, clients, unopened := n.cfg, n.clients, n.unopened
	n.mu.Unlock()
	s := control.State{
		Name:        cfg.West.Name,
		ControlAddr: addrs.Control,
		Clients:     make([]control.Client, 0, len(cfg.Clients)),
		Proxies:     make([]control.Proxy, 0, len(cfg.Proxies)),
		Draining:    n.drainCtx.Load() != nil,
	}
	// Whose tunnel is up, by side: a client's name and a server's URL
	// may be spelled alike.
	type peerKey struct{ via, peer string }
	connected := make(map[peerKey]bool)
	if n.server != nil {
		srv := &control.Server{URL: cfg.Server.URL.String(), Addr: addrs.Tunnel, Peers: []control.Peer{}}
		for _, sess := range n.server.Sessions() {
			srv.Peers = append(srv.Peers, peerState(sess))
			connected[peerKey{"server", sess.Peer()}] = true
		}
		s.Server = srv
	}
	for _, c := range cfg.Clients {
		url := c.URL.String()
		st := clients[url].Status()
		cs := control.Client{
			URL:      url,
			Name:     c.Name,
			Early:    c.Early,
			State:    st.State.String(),
			Since:    st.Since,
			Connects: st.Connects,
		}
		if st.LastError != nil {
			cs.LastError = st.LastError.Error()
		}
		if st.State == tunnel.StateBackoff {
			at := st.RetryAt
			cs.RetryAt = &at
		}
		if st.Session != nil {
			p := peerState(st.Session)
			cs.Session = &p
			connected[peerKey{"client", url}] = true
		}
		s.Clients = append(s.Clients, cs)
	}
	for _, p := range cfg.Proxies {
		ps := control.Proxy{URL: p.URL.String(), Kind: p.URL.Scheme, Addr: addrs.Proxies[p.URL.String()]}
		if p.ServerURL != nil {
			ps.Peer, ps.Via = p.ServerURL.String(), "client"
		} else {
			ps.Peer, ps.Via = p.Peer, "server"
		}
		ps.PeerUp = connected[peerKey{ps.Via, ps.Peer}]
		if err := unopened[ps.URL]; err != nil {
			ps.LastError = err.Error()
		}
		if p.Target != nil {
			ps.Target = p.Target.Host
		}
		for _, r := range p.Routes {
			ps.Routes = append(ps.Routes, control.Route{Path: r.Path, Target: r.Outgoing.String()})
		}
		s.Proxies = append(s.Proxies, ps)
	}
	return s
}

func peerState(sess *tunnel.Session) control.Peer {
	st := sess.Stats()
	return control.Peer{
		Name:         sess.Peer(),
		RemoteAddr:   sess.RemoteAddr(),
		Since:        sess.Since(),
		StreamsOpen:  st.StreamsOpen.Load(),
		StreamsTotal: st.StreamsTotal.Load(),
		BytesIn:      st.BytesIn.Load(),
		BytesOut:     st.BytesOut.Load(),
	}
}

// onSession returns the OnSession hook of a tunnel server or client.
func (n *Node) onSession(role string) func(*tunnel.Session, bool) {
	return func(sess *tunnel.Session, up bool) {
		if !up {
			n.metrics.TunnelDown(sess)
			return
		}
		if ctx := n.drainCtx.Load(); ctx != nil && (*ctx).Err() == nil {
			// Up during our drain: its peer must close its HTTP streams
			// as their exchanges end, as the peers told at the start do,
			// or our drain would cut a paused response on it. (Once the
			// drain is over there is nothing left to tell.)
			n.noticeDrain(*ctx, sess)
		}
		st := sess.Stats()
		n.metrics.TunnelUp(sess, role, sess.Peer(), func() control.TunnelStats {
			return control.TunnelStats{
				BytesIn:     st.BytesIn.Load(),
				BytesOut:    st.BytesOut.Load(),
				StreamsOpen: st.StreamsOpen.Load(),
			}
		})
	}
}

func (n *Node) observeHTTP(rec proxy.Record) {
	n.metrics.ObserveRequest(rec.Listener, rec.Route, rec.Status, rec.Duration)
	n.countPeerDown(rec.Err)
}

func (n *Node) observeTCP(rec proxy.Record) {
	n.metrics.ObserveTCP(rec.Listener)
	n.countPeerDown(rec.Err)
}

// countPeerDown counts, as dial failures for reason "peer_down", the
// requests, connections and UDP flows a listener could not send because
// no tunnel to its peer was up.
// The far side's refusals are counted by the far west.
func (n *Node) countPeerDown(err error) {
	if errors.Is(err, tunnel.ErrPeerDown) {
		n.metrics.DialFailed("peer_down")
	}
}

// udpDropped returns the hook that counts the datagrams udp:// listener
// name dropped. The far side's are counted with listener "" (see
// control.Metrics.UDPDropped).
func (n *Node) udpDropped(name string) func(proxy.DropReason, int) {
	return func(why proxy.DropReason, count int) {
		n.metrics.UDPDropped(name, string(why), count)
	}
}

// onDialError counts the far side's refusals by reason: "dial_failed",
// "dial_timeout", "forbidden" and so on.
func (n *Node) onDialError(code wire.Code) {
	n.metrics.DialFailed(strings.ReplaceAll(code.String(), " ", "_"))
}
