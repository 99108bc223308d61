package sockio

import (
	"io"
	"net"
	"testing"
)

// BenchmarkEchoProcess bounces a small message off an echo server in
// another process, which reads and writes through the net package or
// through this package. The echo process idles between messages, as a
// west does between the hops of a request: the difference is the cost
// of the runtime's wake-up on its first system call after idle.
func BenchmarkEchoProcess(b *testing.B) {
	for _, mode := range []string{"net", "sockio"} {
		b.Run(mode, func(b *testing.B) {
			pingPong(b, startEcho(b, mode))
		})
	}
}

// BenchmarkPingPong bounces a small message between two goroutines of
// this process. The process never idles, so it shows the wrapper's own
// cost and no wake-up to save.
func BenchmarkPingPong(b *testing.B) {
	for _, bc := range []struct {
		name string
		wrap func(net.Conn) net.Conn
	}{
		{"net", func(c net.Conn) net.Conn { return c }},
		{"sockio", Wrap},
	} {
		b.Run(bc.name, func(b *testing.B) {
			a, z := pair(b)
			c, d := bc.wrap(a.TCPConn), bc.wrap(z.TCPConn)
			go func() {
				buf := make([]byte, 64)
				for {
					if _, err := io.ReadFull(d, buf); err != nil {
						return
					}
					if _, err := d.Write(buf); err != nil {
						return
					}
				}
			}()
			pingPong(b, c)
		})
	}
}

func pingPong(b *testing.B, c net.Conn) {
	msg := make([]byte, 64)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, msg); err != nil {
			b.Fatal(err)
		}
	}
}
