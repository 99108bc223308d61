package control

import (
	"fmt"
	"time"
)

// State is a snapshot of a running west, served as JSON by GET /api/state.
// The JSON field names are part of west's interface: add fields, never
// rename them.
type State struct {
	Name        string   `json:"name"`         // "west.nm"
	ControlAddr string   `json:"control_addr"` // the control port's bound address
	Server      *Server  `json:"server"`       // the tunnel server ("wsts"); null without one
	Clients     []Client `json:"clients"`      // tunnel clients ("wstc" and those implied by "ea"), by URL
	Proxies     []Proxy  `json:"proxies"`      // proxy listeners ("proxy"), by listen URL
	Draining    bool     `json:"draining"`     // stopping: finishing what it carries, taking nothing new
}

// Server is the tunnel server and the peers connected to it.
type Server struct {
	URL   string `json:"url"`   // "wsts.sp" as configured
	Addr  string `json:"addr"`  // bound address
	Peers []Peer `json:"peers"` // live tunnels, by name; never null
}

// Peer is one live tunnel: a tunnel client connected to our server, or the
// session of one of our tunnel clients.
type Peer struct {
	Name         string    `json:"name"`          // the peer's name (its Origin), or the server URL we dialled
	RemoteAddr   string    `json:"remote_addr"`   // the other end's network address
	Since        time.Time `json:"since"`         // when the tunnel came up (RFC 3339)
	StreamsOpen  int64     `json:"streams_open"`  // streams open now, both directions
	StreamsTotal int64     `json:"streams_total"` // streams opened since the tunnel came up
	BytesIn      int64     `json:"bytes_in"`      // payload bytes received through the tunnel
	BytesOut     int64     `json:"bytes_out"`     // payload bytes sent through the tunnel
}

// Client states, as Client.State reports them.
const (
	ClientIdle       = "idle"       // lazy ("ee": "no"), waiting for the first request
	ClientConnecting = "connecting" // a connection attempt is under way
	ClientUp         = "up"         // connected
	ClientBackoff    = "backoff"    // the last attempt failed; waiting until retry_at
	ClientStopped    = "stopped"    // the node is shutting down
)

// Client is one tunnel client: a tunnel server this west dials.
type Client struct {
	URL       string     `json:"url"`                  // the tunnel server's URL
	Name      string     `json:"name"`                 // the name sent to it (Origin)
	Early     bool       `json:"early"`                // "ee": connect at start rather than on first request
	State     string     `json:"state"`                // one of idle, connecting, up, backoff, stopped
	Since     time.Time  `json:"since"`                // when State was entered
	LastError string     `json:"last_error,omitempty"` // the last connection or tunnel error
	RetryAt   *time.Time `json:"retry_at,omitempty"`   // in backoff: when the next attempt starts
	Connects  int        `json:"connects"`             // tunnels established so far
	Session   *Peer      `json:"session,omitempty"`    // when up: the live tunnel
}

// Proxy is one proxy listener.
type Proxy struct {
	URL    string  `json:"url"`              // the listen URL as configured
	Kind   string  `json:"kind"`             // "http", "tcp" or "udp"
	Addr   string  `json:"addr"`             // bound address
	Peer   string  `json:"peer"`             // "en" (a peer name) or "ea" (a tunnel server URL)
	Via    string  `json:"via"`              // "server" for "en" (the peer dials us), "client" for "ea"
	PeerUp bool    `json:"peer_up"`          // whether a tunnel to Peer is up now
	Routes []Route `json:"routes,omitempty"` // http: the path table, longest path first
	Target string  `json:"target,omitempty"` // tcp: where the far side connects
	// Why the listener is not listening (Addr is "" then): the error a
	// reload met opening its socket. A later reload tries again.
	LastError string `json:"last_error,omitempty"`
}

// Route is one path of an HTTP proxy listener.
type Route struct {
	Path   string `json:"path"`   // the path prefix
	Target string `json:"target"` // "ou": the outgoing URL
}

// Problems lists, one line each, why the state is not healthy: a west
// that is stopping (draining), an early
// tunnel client that is not up, a lazy one that has been asked for and is
// not up, a peer named by an "en" listener that is not connected to our
// tunnel server, or a listener that is not listening (a reload could not
// open its socket). It is empty when every tunnel that should be up is up
// and every listener listens.
func (s State) Problems() []string {
	var out []string
	if s.Draining {
		out = append(out, "west is stopping: it finishes what it carries and takes nothing new")
	}
	for _, c := range s.Clients {
		if c.State == ClientUp || c.State == ClientIdle && !c.Early {
			continue
		}
		p := fmt.Sprintf("tunnel client to %s is %s", c.URL, c.State)
		if c.State == ClientBackoff && c.RetryAt != nil {
			p += fmt.Sprintf(" until %s", c.RetryAt.UTC().Format(time.RFC3339))
		}
		if c.LastError != "" {
			p += ": " + c.LastError
		}
		out = append(out, p)
	}
	connected := make(map[string]bool)
	if s.Server != nil {
		for _, p := range s.Server.Peers {
			connected[p.Name] = true
		}
	}
	reported := make(map[string]bool)
	for _, p := range s.Proxies {
		if p.Via != "server" || connected[p.Peer] || reported[p.Peer] {
			continue
		}
		reported[p.Peer] = true
		out = append(out, fmt.Sprintf("peer %s is not connected (needed by %s)", p.Peer, p.URL))
	}
	for _, p := range s.Proxies {
		if p.LastError != "" {
			out = append(out, fmt.Sprintf("listener %s is not listening: %s", p.URL, p.LastError))
		}
	}
	return out
}
