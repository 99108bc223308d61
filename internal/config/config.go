// Package config reads west's configuration: the seed program's JSON format
// (objects "west", "wsts", "wstc" and "proxy"), typed, defaulted and
// validated by Parse and Load. Every error is an *Error naming the JSON path
// of the offending value and what was expected there (a JSON syntax error
// gives a line and column instead). Duplicate and unknown keys are errors.
// Render prints a Config back in the seed's control-port format.
//
// The package does no networking. The composition root (internal/node),
// cmd/west and, for rendering, internal/control import it; it imports only
// internal/acl and the standard library.
package config

import (
	"net/url"
	"time"
)

// DefaultListenPort is the port a proxy listener URL without a port gets, as
// in the seed program.
const DefaultListenPort = 18889

// Config is a whole, validated configuration.
type Config struct {
	West    West
	Server  *TunnelServer  // nil when "wsts" has no "sp"
	Clients []TunnelClient // "wstc" entries plus those implied by "ea", sorted by URL
	Proxies []Proxy        // "proxy" entries, sorted by listen URL
}

// West is the "west" object.
type West struct {
	Name string // "nm": required, free text (the seed's samples include "ws//case1.G.flap.org")

	// ControlAddr is "cp" as a host:port to listen on (":9701" binds every
	// address, as in the seed), its port in canonical form. Empty means no
	// control port.
	ControlAddr string
	ControlACL  []string // "control_ca": who may read the control port; empty allows all

	// DialAllow is "dial_allow": the targets peers may make this west dial,
	// as host:port patterns and CIDR ranges (see acl.ParseTargets). Empty
	// allows every target, as the seed did.
	DialAllow []string
	// KeepAlive is "keepalive", how long a tunnel may receive or send
	// nothing before it pings, and DeadAfter is "dead_after", how long a
	// tunnel may receive nothing before it is declared dead. Zero means the tunnel
	// package's defaults (5s, or a third of DeadAfter; three times
	// KeepAlive).
	KeepAlive, DeadAfter time.Duration
	// ShutdownGrace is "shutdown_grace": how long requests in flight may
	// take to finish on shutdown. Zero means 5s.
	ShutdownGrace time.Duration
	// StreamWindow is "stream_window", in bytes: how much data one stream
	// of this west's tunnels may receive that its reader has not yet
	// taken. It bounds memory, and one stream's throughput to about
	// window/(2×RTT). Zero means the tunnel package's default (16 MiB).
	StreamWindow int
}

// The range of "stream_window": the multiplexer's least window, and a
// ceiling far below its 32-bit limit.
const (
	MinStreamWindow = 256 << 10
	MaxStreamWindow = 1 << 30
)

// MinKeepAlive is the shortest "keepalive", and a third of the shortest
// "dead_after": pings more often than this would be traffic, not a check.
const MinKeepAlive = 100 * time.Millisecond

// TunnelServer is the "wsts" object.
type TunnelServer struct {
	URL  *url.URL // "sp", scheme ws or wss
	Addr string   // host:port to listen on, from URL (port defaults to 80 for ws, 443 for wss)
	Path string   // URL path to serve the upgrade on; "/" when the URL has none
	ACL  []string // "ca": addresses, CIDR ranges or peer names allowed to connect; empty allows all

	// TLSCertFile and TLSKeyFile are "tls_cert_file" and "tls_key_file",
	// PEM files required with a wss:// URL.
	TLSCertFile, TLSKeyFile string
	// ClientCAFile is "client_ca_file": when set, every tunnel client must
	// present a certificate signed by a CA in this PEM file (mutual TLS).
	ClientCAFile string
	// CertNames is "cert_names": "yes" binds each peer name to its client
	// certificate, whose common name or a DNS or URI name must equal it.
	CertNames bool
	// Tokens is "tokens": when set, only these peer names may connect, each
	// presenting its own secret.
	Tokens map[string]Secret
	// MaxStreams is "max_streams": streams one tunnel may have open towards
	// this west at once; more are refused as overloaded. Zero means
	// node.DefaultMaxStreams.
	MaxStreams int
}

// Secret names where a secret is kept: "env:NAME" (an environment
// variable) or "file:PATH" (a file, trailing white space trimmed), so that
// secrets never sit in the config file or on a command line.
type Secret string

// TunnelClient is one "wstc" entry: a tunnel server this west dials.
type TunnelClient struct {
	URL     *url.URL // the entry's key, scheme ws or wss
	Name    string   // "nm", or West.Name when absent: sent as the Origin
	Early   bool     // "ee": true unless "no"
	Implied bool     // added because a proxy names it in "ea"

	Token      Secret // "token": presented to the server as a bearer token
	CAFile     string // "ca_file": PEM CAs to verify a wss:// server by, instead of the system roots
	ServerName string // "server_name": the name to verify the server's certificate for, instead of the URL's host
	// CertFile and KeyFile are "cert_file" and "key_file": a client
	// certificate for servers that require one.
	CertFile, KeyFile string

	// MaxStreams is "max_streams": streams the server may have open
	// towards this west on the tunnel at once. Zero means
	// node.DefaultMaxStreams.
	MaxStreams int
}

// Proxy is one "proxy" entry: a listener and where its traffic goes.
type Proxy struct {
	URL  *url.URL // the entry's key: http://host:port or tcp://host:port
	Kind Kind
	Addr string // host:port to listen on; port DefaultListenPort when absent

	// Exactly one of Peer and ServerURL is set.
	Peer      string   // "en": name of a tunnel client connected to our tunnel server
	ServerURL *url.URL // "ea": tunnel server we dial (present in Config.Clients)

	// Timeout bounds the wait for a backend's response headers ("timeout",
	// a Go duration string such as "90s"). Zero means DefaultTimeout; Parse
	// fills that in for KindHTTP and leaves KindTCP at zero.
	Timeout time.Duration

	Routes []Route  // KindHTTP: path keys, sorted longest first
	Target *url.URL // KindTCP, KindUDP: "ou" directly inside the entry, tcp:// or udp://host:port
	ACL    []string // KindTCP, KindUDP: "ca" directly inside the entry

	// TLSCAFile is "tls_ca_file" (KindHTTP): PEM CAs to verify https://
	// outgoing URLs by, instead of the system roots.
	TLSCAFile string
	// MaxConns is "max_conns": connections the listener serves at once,
	// more waiting in the kernel's backlog; for udp, flows at once, a new
	// client's ending the flow idle longest. Zero means no limit (udp:
	// the listener's default).
	MaxConns int
	// BriefErrors is "error_detail": "no" (KindHTTP): the listener's own
	// error answers give their status alone, and why only to the log, for
	// a listener that clients outside the operator's trust reach.
	BriefErrors bool
}

// DefaultTimeout is the default of Proxy.Timeout.
const DefaultTimeout = 60 * time.Second

// Kind is the kind of a proxy listener.
type Kind int

const (
	KindHTTP Kind = iota // http:// listener with a path table
	KindTCP              // tcp:// listener carrying raw bytes
	KindUDP              // udp:// listener carrying datagrams, a stream per client address
)

// Route is one path key of an HTTP proxy.
type Route struct {
	Path     string   // the key, starting with "/"
	Outgoing *url.URL // "ou": http or https URL
	ACL      []string // "ca": addresses or CIDR ranges of HTTP clients allowed; empty allows all
}
