// Package proxy is what travels through the tunnels: HTTP listeners with a
// path table that send each request through a tunnel stream with
// httputil.ReverseProxy, and the far side's StreamHandler that dials the
// requested target and pipes bytes with half-close.
//
// An HTTP listener is a Server: a loop per connection that answers plain
// GETs and HEADs itself (fast.go) and hands each connection that brings
// anything else to net/http's server running the HTTP handler, which then
// serves it to its end. The Server tracks each connection, the loop's
// and those handed over (hijacked ones too) until they close, with the
// path of its request in progress, so that Recheck can end the exchanges
// a reload's new access lists refuse.
//
// HTTP crosses the tunnel as plain HTTP/1.1 bytes: the near side writes
// each request on a tunnel stream instead of a TCP connection, and the far
// side connects that stream to the backend. So bodies stream as they come,
// upgrades and trailers work, and kept-alive streams are reused across
// requests without the far side parsing HTTP at all. Plain bodiless
// requests go through streamTransport, which answers them in the
// handler's goroutine; the rest through an http.Transport that dials
// tunnel streams.
//
// Errors become HTTP statuses in one place (statusFor): 503 when the peer
// is not connected, 502 when the target refuses or the far side rejects
// the stream, 504 on timeouts.
package proxy
