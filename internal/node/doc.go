// Package node is the composition root: it turns a config.Config into
// running parts — the tunnel server, tunnel clients, proxy listeners, the
// far-side dialer and the control port — and runs them under one lifetime.
//
// It is the only package that knows both the config format and the
// engines; each engine takes its own Options. Run returns only after every
// goroutine it started has stopped.
package node
