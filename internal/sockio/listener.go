package sockio

import "net"

// listener wraps each connection it accepts.
type listener struct{ net.Listener }

// WrapListener returns ln, accepting connections that read and write with raw
// system calls where Wrap makes them.
func WrapListener(ln net.Listener) net.Listener { return listener{ln} }

func (l listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return Wrap(c), nil
}
