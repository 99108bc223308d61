package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/west-tunnel/west/internal/acl"
	"github.com/west-tunnel/west/internal/config"
	"github.com/west-tunnel/west/internal/proxy"
	"github.com/west-tunnel/west/internal/tunnel"
)

// config returns the configuration in force.
func (n *Node) config() *config.Config {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cfg
}

// reloadFunc is what the control port's POST /api/reload calls: the file
// the node was started from, read anew. Nil when there is no such file.
func (n *Node) reloadFunc() func() error {
	if n.opts.ConfigPath == "" {
		return nil
	}
	return n.ReloadFile
}

// ReloadFile reads Options.ConfigPath anew and applies it with Reload.
func (n *Node) ReloadFile() (err error) {
	if n.opts.ConfigPath == "" {
		return errors.New("reload: the node was not started from a file")
	}
	n.fileMu.Lock()
	defer n.fileMu.Unlock()
	if begin := n.opts.OnReloadFile; begin != nil {
		done := begin()
		defer func() { done(err) }()
	}
	cfg, err := config.Load(n.opts.ConfigPath)
	if err != nil {
		return err
	}
	return n.Reload(cfg)
}

// Reload applies cfg to the running node without dropping what it leaves
// unchanged: tunnel clients and proxy listeners that are the same keep
// running, connections and all; removed ones drain and stop (a removed
// tunnel client once what it carries has ended, its metric series with
// it); added ones start; a changed tunnel client is replaced at once (a
// renamed one retires as a removed one does, since the server keeps the
// names apart); a listener
// whose routes or options changed (max_conns included, added or taken
// away) but not its address keeps its socket and its connections and
// serves new requests, connections or flows by the new ones, ending
// those still running whose client the new ca refuses; the metric series
// of an HTTP route it lost go once the requests the old routes were
// serving have ended. wsts.ca and wsts.tokens, whose secrets are read
// anew, apply to new handshakes and to the tunnels already up (a peer
// they no longer admit is disconnected), as do the server's certificate,
// key and client CAs, read anew too; an unchanged tunnel client reads
// its certificate, CAs and token anew for its next connection, and an
// HTTP listener its tls_ca_file for its next requests. The west object and
// the rest of wsts need a restart: a cfg that changes them is refused, as
// is one that cannot be built, and then nothing changes. Listeners that
// cannot bind are reported, after the rest has been applied, as a
// *PartialError, and in State (which the control port's /healthz reads)
// until a later reload, which tries to open them again, has opened them.
func (n *Node) Reload(cfg *config.Config) (err error) {
	defer func() {
		// A variable set since west started (in a systemd unit's
		// EnvironmentFile, say, which "west check" then reads) is not
		// in its environment: say how it gets there.
		if unset := (*config.EnvUnsetError)(nil); errors.As(err, &unset) {
			err = fmt.Errorf("%w (west reads its environment once, at start: restart it to set one)", err)
		}
	}()
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.running {
		select {
		case <-n.runningCh:
			return errors.New("reload: west is stopping")
		default:
			return errors.New("reload: west has not started yet")
		}
	}
	if err := fixedParts(n.cfg, cfg); err != nil {
		return err
	}
	// west.dial_allow and west.control_ca apply to what comes after: new
	// streams, new requests to the control port.
	targets, err := acl.ParseTargets(cfg.West.DialAllow)
	if err != nil {
		return fmt.Errorf("west.dial_allow: %w", err)
	}
	controlAllow, err := allowFunc(cfg.West.ControlACL, "west.control_ca")
	if err != nil {
		return err
	}
	// The gate and the server's TLS are built anew every time, so that a
	// token, certificate or key file (or variable) that changed takes
	// effect even when the config names it alike.
	var admission *gate
	var serverTC *tls.Config
	if cfg.Server != nil {
		g, err := newGate(cfg.Server, n.log.With("part", "tunnel-server"))
		if err != nil {
			return err
		}
		admission = g
		if serverTC, err = serverTLS(cfg.Server); err != nil {
			return err
		}
	}

	// Build everything first, so that a config that fails to build
	// changes nothing.
	oldClients := make(map[string]config.TunnelClient, len(n.cfg.Clients))
	for _, c := range n.cfg.Clients {
		oldClients[c.URL.String()] = c
	}
	clients := make(map[string]*tunnel.Client, len(cfg.Clients))
	var added []string
	var renew []func() // kept clients' credentials, read anew
	for _, c := range cfg.Clients {
		url := c.URL.String()
		if old, ok := oldClients[url]; ok && sameClient(old, c) {
			kept := n.clients[url]
			clients[url] = kept
			tc, err := clientTLS(c)
			if err != nil {
				return err
			}
			header, err := tokenHeader(c)
			if err != nil {
				return err
			}
			renew = append(renew, func() { kept.SetCredentials(tc, header) })
			continue
		}
		cl, err := n.buildClient(c)
		if err != nil {
			return err
		}
		clients[url] = cl
		added = append(added, url)
	}

	// A swap serves a listener's new requests, connections or flows by
	// its new options on the same socket; apply does it.
	type swap struct {
		l     *listener
		p     config.Proxy
		apply func()
	}
	var swaps []swap
	var stops, starts, kept []*listener
	current := make(map[string]*listener)
	var others []*listener // the tunnel server and the control port
	for _, l := range n.servers {
		if l.role == "proxy" {
			current[l.name] = l
		} else {
			others = append(others, l)
		}
	}
	for _, p := range cfg.Proxies {
		name := p.URL.String()
		old := current[name]
		delete(current, name)
		sameDialer := p.ServerURL == nil || clients[p.ServerURL.String()] == n.clients[p.ServerURL.String()]
		switch {
		// One with tls_ca_file gets a new handler even when unchanged, so
		// that the file is read anew.
		case old != nil && sameDialer && reflect.DeepEqual(old.proxy, p) && p.TLSCAFile == "":
			kept = append(kept, old)
		case old != nil && old.handler != nil && p.Kind == config.KindHTTP && old.proxy.Addr == p.Addr:
			h, err := n.buildHTTP(p, clients)
			if err != nil {
				return err
			}
			srv := old.srv.(*proxy.Server)
			gone := droppedRoutes(old.proxy, p)
			swaps = append(swaps, swap{old, p, func() {
				prev := old.handler.h.Swap(h)
				prev.Retire()
				old.setLimit(p.MaxConns)
				n.forgetRoutesLocked(old.name, prev, gone)
				// As a tcp:// listener's connections, the exchanges still
				// running (upgrades, streamed responses) of the clients a
				// narrowed ca refuses end now.
				if ended := srv.Recheck(); ended > 0 {
					n.log.Info("ended http exchanges whose route's new ca refuses their client",
						"listener", old.name, "exchanges", ended)
				}
			}})
		case old != nil && p.Kind == config.KindTCP && old.proxy.Kind == p.Kind && old.proxy.Addr == p.Addr:
			o, err := n.tcpOptions(p, clients)
			if err != nil {
				return err
			}
			srv := old.srv.(*proxy.TCP)
			swaps = append(swaps, swap{old, p, func() { srv.Reroute(o); old.setLimit(p.MaxConns) }})
		case old != nil && p.Kind == config.KindUDP && old.proxy.Kind == p.Kind && old.proxy.Addr == p.Addr:
			o, err := n.udpOptions(p, clients)
			if err != nil {
				return err
			}
			srv := old.srv.(*proxy.UDP)
			swaps = append(swaps, swap{old, p, func() {
				srv.Reroute(o)
				if !sameDialer {
					// A client that keeps sending would hold the old
					// tunnel, which retires, until shutdown_grace.
					srv.EndFlows()
				}
			}})
		default:
			l, err := n.buildProxy(p, clients)
			if err != nil {
				return err
			}
			starts = append(starts, l)
			if old != nil {
				stops = append(stops, old)
			}
		}
	}
	for _, l := range current {
		stops = append(stops, l)
	}

	// Apply. Stop first, so that a changed listener can bind its address
	// again.
	var drained []<-chan struct{}
	for _, l := range stops {
		drained = append(drained, n.stopListener(l))
	}
	var errs []error
	servers := append(others, kept...)
	// Handlers new to their listeners learn of the peers already
	// draining, which told only the handlers before them.
	var fresh []*proxy.HTTP
	var freshUDP []*proxy.UDP
	// A listener that did not open is not among servers, so the next
	// reload starts it again, with the same config or another.
	unopened := make(map[string]error)
	open := slices.Clone(servers) // the sockets a new listener may find its address taken by
	for _, sw := range swaps {
		open = append(open, sw.l)
	}
	for _, l := range starts {
		if err := n.openSocket(l); err != nil {
			err = heldBy(l, err, open)
			unopened[l.name] = err
			errs = append(errs, listenFailed(l, err))
			continue
		}
		n.serveLocked(l)
		servers = append(servers, l)
		open = append(open, l)
		if l.handler != nil {
			fresh = append(fresh, l.handler.current())
		}
		if u, ok := l.srv.(*proxy.UDP); ok {
			freshUDP = append(freshUDP, u)
		}
	}
	for _, sw := range swaps {
		sw.apply()
		sw.l.proxy = sw.p
		servers = append(servers, sw.l)
		if sw.l.handler != nil {
			fresh = append(fresh, sw.l.handler.current())
		}
		// Rerouted to a peer that drains, its new flows may start on the
		// draining tunnel too.
		if u, ok := sw.l.srv.(*proxy.UDP); ok {
			freshUDP = append(freshUDP, u)
		}
	}
	n.tellDrainingLocked(fresh, freshUDP)
	for url, stop := range n.clientStops {
		// Removed, renamed or changed, the old client finishes what it
		// carries. The server keeps a new client's session beside the old
		// one (another name, or another client of this west; see
		// tunnel.InstanceHeader); one that predates the header closes the
		// old session once the new one is up, and the wait with it.
		if clients[url] != n.clients[url] {
			n.retireClient(n.clients[url], stop, drained)
			delete(n.clientStops, url)
		}
	}
	for _, url := range added {
		n.startClientLocked(url, clients[url])
	}
	for _, f := range renew {
		f()
	}
	if admission != nil {
		admission.failDelay = n.gate.Load().failDelay
		n.useGate(admission)
		n.warnGate(cfg.Server, admission)
		// Peers admitted before are judged again: a revoked token or
		// address loses its tunnel now, not at its next handshake.
		n.server.Recheck(admission.check)
	}
	if serverTC != nil {
		n.tunnelTLS.Store(serverTC)
	}
	n.far.SetTargets(targets)
	if n.controlAllow.Load() != nil {
		n.controlAllow.Store(&controlAllow)
	}
	n.clients, n.servers, n.cfg, n.unopened = clients, servers, cfg, unopened
	n.warnConfig(cfg)
	n.recordCerts(cfg)
	n.log.Info("configuration reloaded",
		"listeners_started", len(starts)-len(errs), "listeners_failed", len(errs),
		"listeners_stopped", len(stops), "listeners_rerouted", len(swaps),
		"listeners_kept", len(kept), "tunnel_clients_started", len(added))
	if len(errs) > 0 {
		return &PartialError{Err: errors.Join(errs...)}
	}
	return nil
}

// PartialError is a reload that was applied but for the listeners that
// could not be opened: the configuration in force is the new one, less
// those. It is not a refusal, and must not be reported as one.
type PartialError struct{ Err error }

func (e *PartialError) Error() string {
	return "reload applied, but for listeners that could not be opened: " + e.Err.Error()
}

func (e *PartialError) Unwrap() error { return e.Err }

// Applied tells the control port that the reload took effect.
func (e *PartialError) Applied() bool { return true }

// setLimit applies max_conns n (0: none) to the socket of l, an http://
// or tcp:// listener, whose limit counts its connections with a bound or
// without, so that one added later counts those already open.
func (l *listener) setLimit(n int) {
	if l.limit != nil {
		l.limit.SetLimit(n)
	}
	l.maxConns = n
}

// droppedRoutes are the paths of old's routes that p has no more.
func droppedRoutes(old, p config.Proxy) []string {
	var gone []string
	for _, r := range old.Routes {
		if !slices.ContainsFunc(p.Routes, func(nr config.Route) bool { return nr.Path == r.Path }) {
			gone = append(gone, r.Path)
		}
	}
	return gone
}

// forgetRoutesLocked drops the metric series of the routes paths that a
// reload took from listener name, once prev, the handler that served
// them, has finished its requests, and again each time a request that
// entered it late has ended (proxy.HTTP.AfterFinish); or once the
// shutdown grace has passed, if that comes first: as stopListener does
// for a listener. Unless a reload since has given the listener a route of
// that path again. n.mu must be held.
func (n *Node) forgetRoutesLocked(name string, prev *proxy.HTTP, paths []string) {
	if len(paths) == 0 {
		return
	}
	forget := func() { n.forgetRoutes(name, paths) }
	prev.AfterFinish(forget)
	n.group.Go(func() error {
		grace := time.NewTimer(n.opts.ShutdownGrace)
		defer grace.Stop()
		select {
		case <-prev.Finished():
		case <-grace.C:
			// A request still running (a WebSocket, a long download)
			// counts when it ends, bringing its route's series back
			// until AfterFinish drops it again.
			forget()
		case <-n.groupCtx.Done(): // the node is stopping, and its metrics with it
		}
		return nil
	})
}

// forgetRoutes drops the metric series of listener name's routes paths
// but for those the configuration has again.
func (n *Node) forgetRoutes(name string, paths []string) {
	// Under n.mu, so that a reload adding a route back comes wholly
	// before this or after it.
	n.mu.Lock()
	defer n.mu.Unlock()
	i := slices.IndexFunc(n.cfg.Proxies, func(p config.Proxy) bool { return p.URL.String() == name })
	for _, path := range paths {
		if i >= 0 && slices.ContainsFunc(n.cfg.Proxies[i].Routes, func(r config.Route) bool { return r.Path == path }) {
			continue
		}
		n.metrics.ForgetRoute(name, path)
	}
}

// stopListener stops accepting on l at once and lets its requests in
// flight finish within the shutdown grace, in the background. The channel
// it returns closes when they have.
func (n *Node) stopListener(l *listener) <-chan struct{} {
	n.log.Info("stopping listener", "role", l.role, "name", l.name)
	l.closeSocket()
	// The rest of the shutdown waits for exchanges in flight, in the
	// background; a request that comes after the reload, on a connection
	// kept alive (a client's, or a stream a west handed over), must not
	// find the listener still serving.
	if b, ok := l.srv.(interface{ BeginShutdown() }); ok {
		b.BeginShutdown()
	}
	done := make(chan struct{})
	n.drains.Add(1)
	go func() {
		defer n.drains.Done()
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), n.opts.ShutdownGrace)
		defer cancel()
		if err := l.srv.Shutdown(ctx); errors.Is(err, context.DeadlineExceeded) {
			l.srv.Close()
		}
		if l.after != nil {
			l.after()
		}
		// Its metrics go with it, unless a reload since has a listener
		// of the same name (restarted, or added back).
		forget := func() {
			// Under the lock, as forgetRoutesLocked: a reload that adds
			// the listener back must not have its new series dropped.
			n.mu.Lock()
			defer n.mu.Unlock()
			i := slices.IndexFunc(n.cfg.Proxies, func(p config.Proxy) bool { return p.URL.String() == l.name })
			if i < 0 {
				n.metrics.ForgetListener(l.name)
				return
			}
			// Back, but perhaps without some of its routes: theirs go.
			for _, r := range l.proxy.Routes {
				if !slices.ContainsFunc(n.cfg.Proxies[i].Routes, func(nr config.Route) bool { return nr.Path == r.Path }) {
					n.metrics.ForgetRoute(l.name, r.Path)
				}
			}
		}
		forget()
		if l.handler != nil {
			// Close does not wait for the handlers of the requests it
			// cut, and each is counted as it ends, which brings the
			// series back: they go again once the retired handler has
			// finished, as a removed route's do.
			l.handler.current().AfterFinish(forget)
		}
	}()
	return done
}

// retireClient stops c, a tunnel client the configuration no longer names
// (or names otherwise: another nm, other options), by stop, once what it
// carries has ended: the requests of the listeners
// stopped with it (drained), and the streams still open on its session,
// such as a rerouted listener's requests by its old routes. The shutdown
// grace bounds the wait, as it bounds theirs. A client whose session has
// ended stops at once rather than redial: a reload that named its server
// again has a new client, with a tunnel of its own. n.mu must be held.
func (n *Node) retireClient(c *tunnel.Client, stop context.CancelFunc, drained []<-chan struct{}) {
	if n.retiring == nil {
		n.retiring = make(map[*tunnel.Client]struct{})
	}
	n.retiring[c] = struct{}{}
	n.group.Go(func() error {
		defer stop()
		defer func() {
			n.mu.Lock()
			delete(n.retiring, c)
			n.mu.Unlock()
		}()
		graceCtx, cancel := context.WithTimeout(n.groupCtx, n.opts.ShutdownGrace)
		defer cancel()
		poll := time.NewTicker(retirePoll)
		defer poll.Stop()
		var noticed *tunnel.Session
		for {
			st := c.Status()
			sess := st.Session
			// A client still connecting may have requests waiting for
			// its tunnel (Dial waits for an attempt under way): they get
			// it, as those of a client up do. One whose tunnel has ended
			// since stops, rather than redial.
			if sess == nil && (noticed != nil || st.State != tunnel.StateConnecting || c.Dialing() == 0) {
				return nil
			}
			if sess != nil && sess != noticed {
				// The server may keep HTTP streams to us idle for reuse,
				// which would hold the retirement for the whole grace:
				// told that this tunnel drains, it closes them as their
				// exchanges end.
				noticed = sess
				<-n.noticeDrain(n.groupCtx, sess)
			}
			// Streams, not StreamsOpen: a stream the server opened just
			// before it took the notice may not have reached a handler
			// yet. Dialing: a request that saw the tunnel come up may
			// not have opened its stream yet.
			if sess != nil && allClosed(drained) && sess.Streams() == 0 && c.Dialing() == 0 {
				// The last bytes of those streams may still wait in the
				// tunnel's send queue, which the stop would drop.
				sess.WaitSent(graceCtx)
				return nil
			}
			select {
			case <-poll.C:
			case <-graceCtx.Done(): // the grace has passed, or the node is stopping
				return nil
			}
		}
	})
}

// allClosed reports whether every channel in chans is closed.
func allClosed(chans []<-chan struct{}) bool {
	for _, ch := range chans {
		select {
		case <-ch:
		default:
			return false
		}
	}
	return true
}

// retirePoll is how often a retiring client's open streams are counted.
const retirePoll = 50 * time.Millisecond

// sameClient reports whether two wstc entries dial alike; whether an
// entry was written or implied by an "ea" does not matter.
func sameClient(a, b config.TunnelClient) bool {
	a.Implied, b.Implied = false, false
	return reflect.DeepEqual(a, b)
}

// fixedParts refuses changes that Reload cannot apply in place.
func fixedParts(old, cfg *config.Config) error {
	var changed []string
	ow, nw := old.West, cfg.West
	for _, f := range []struct {
		key  string
		same bool
	}{
		{"west.nm", ow.Name == nw.Name},
		{"west.cp", ow.ControlAddr == nw.ControlAddr},
		{"west.keepalive", ow.KeepAlive == nw.KeepAlive},
		{"west.dead_after", ow.DeadAfter == nw.DeadAfter},
		{"west.shutdown_grace", ow.ShutdownGrace == nw.ShutdownGrace},
		{"west.stream_window", ow.StreamWindow == nw.StreamWindow},
	} {
		if !f.same {
			changed = append(changed, f.key)
		}
	}
	// What the keys above do not name, and a reload may not change either.
	ow.Name, ow.ControlAddr, ow.KeepAlive, ow.DeadAfter, ow.ShutdownGrace, ow.StreamWindow = nw.Name, nw.ControlAddr, nw.KeepAlive, nw.DeadAfter, nw.ShutdownGrace, nw.StreamWindow
	ow.DialAllow, nw.DialAllow = nil, nil
	ow.ControlACL, nw.ControlACL = nil, nil
	if !reflect.DeepEqual(ow, nw) {
		changed = append(changed, "west (but for dial_allow and control_ca)")
	}
	switch {
	case (old.Server == nil) != (cfg.Server == nil):
		changed = append(changed, "wsts.sp")
	case old.Server != nil:
		a, b := *old.Server, *cfg.Server
		if a.URL.String() != b.URL.String() || a.Addr != b.Addr || a.Path != b.Path {
			changed = append(changed, "wsts.sp")
		}
		if a.CertNames != b.CertNames {
			changed = append(changed, "wsts.cert_names")
		}
		if a.MaxStreams != b.MaxStreams {
			changed = append(changed, "wsts.max_streams")
		}
		a.URL, a.Addr, a.Path, a.CertNames, a.MaxStreams = b.URL, b.Addr, b.Path, b.CertNames, b.MaxStreams
		a.ACL, b.ACL = nil, nil
		a.Tokens, b.Tokens = nil, nil
		a.TLSCertFile, b.TLSCertFile = "", ""
		a.TLSKeyFile, b.TLSKeyFile = "", ""
		a.ClientCAFile, b.ClientCAFile = "", ""
		if !reflect.DeepEqual(a, b) {
			changed = append(changed, "wsts (but for ca, tokens and the TLS files)")
		}
	}
	if len(changed) > 0 {
		return fmt.Errorf("reload: %s changed, which needs a restart", strings.Join(changed, ", "))
	}
	return nil
}
