// Package tunnel carries streams between wests over WebSocket tunnels.
//
// One tunnel is one WebSocket connection (binary messages, no compression)
// carrying a yamux session (go-yamux: 12-byte frame headers, one frame of
// up to 256 KiB per message, and flow control per stream only, so that a
// stream nobody reads stalls no other). Either end
// may open streams; each stream starts with a wire.Header and the far
// side's wire.Reply, then carries raw bytes both ways with half-close.
// yamux sends every stream's frames through one queue; a Stream keeps only
// about 5 ms of the tunnel's sending rate in it (sendQueue), and the
// kernel holds little unsent beyond it, so one busy stream cannot make the
// others wait long.
//
// A Server is an http.Handler that upgrades tunnel clients, names each by
// its Origin header, and keeps the newest session per name. A Client dials
// one tunnel server and keeps a session up, redialling with capped,
// jittered exponential backoff. Streams the peer opens are handed to a
// StreamHandler, which package proxy implements.
//
// Invariants: every session's goroutines end when its WebSocket ends;
// Server.Close and Client.Run's return wait for them. Nothing here knows
// the config format, HTTP routing or dial policy.
package tunnel
