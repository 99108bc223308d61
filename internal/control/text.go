package control

import (
	"time"

	"github.com/west-tunnel/west/internal/config"
)

// Render returns what GET / shows: cfg in the seed's four sections
// ("--- west object ---" and so on, as config.Render prints them) with the
// live fields of s added, under the same names as in the JSON:
//
//   - wsts: "peers", a list of {"name", "remote_addr", "since"} for every
//     tunnel client connected to us;
//   - each wstc entry: "state", "since", "connects", and "last_error",
//     "retry_at" or "remote_addr" when they apply;
//   - each proxy entry: "peer_up", whether the tunnel to its en or ea is up,
//     and "last_error" when it is not listening.
//
// As the seed's did, wstc also lists the peer of each en listener, under
// this west's name, with "ee" "no": the seed's config check added such an
// entry, and its README's dump shows one. west never dials it, and `west
// check` leaves it out, so that what it prints loads as a configuration.
//
// Times are RFC 3339 in UTC, to the second.
func Render(cfg *config.Config, s State) string {
	west, wsts, wstc, proxy := cfg.RenderObjects()
	for _, p := range cfg.Proxies {
		if _, ok := wstc[p.Peer]; p.ServerURL == nil && !ok {
			wstc[p.Peer] = map[string]any{"nm": cfg.West.Name, "ee": "no"}
		}
	}
	if s.ControlAddr != "" {
		west["control_addr"] = s.ControlAddr
	}
	if s.Server != nil {
		peers := make([]any, 0, len(s.Server.Peers))
		for _, p := range s.Server.Peers {
			peers = append(peers, map[string]any{
				"name":        p.Name,
				"remote_addr": p.RemoteAddr,
				"since":       stamp(p.Since),
			})
		}
		wsts["peers"] = peers
	}
	for _, c := range s.Clients {
		o, ok := wstc[c.URL].(map[string]any)
		if !ok {
			continue
		}
		o["state"] = c.State
		o["since"] = stamp(c.Since)
		o["connects"] = c.Connects
		if c.LastError != "" {
			o["last_error"] = c.LastError
		}
		if c.RetryAt != nil {
			o["retry_at"] = stamp(*c.RetryAt)
		}
		if c.Session != nil {
			o["remote_addr"] = c.Session.RemoteAddr
		}
	}
	for _, p := range s.Proxies {
		o, ok := proxy[p.URL].(map[string]any)
		if !ok {
			continue
		}
		o["peer_up"] = p.PeerUp // the peer itself is "en" or "ea"
		if p.LastError != "" {
			o["last_error"] = p.LastError
		}
	}
	return config.RenderSections(west, wsts, wstc, proxy)
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
