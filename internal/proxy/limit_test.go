package proxy

import (
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
)

// TestLimitSetInPlace: a Limited without a bound counts what it accepts,
// so that a bound set later holds new connections while those open fill
// it, even one already being accepted when the bound came; taking the
// bound away, or closing a connection, lets the held ones in.
func TestLimitSetInPlace(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lim := LimitListener(ln, 0)
	accepted := make(chan net.Conn)
	served := make(chan struct{})
	go func() {
		defer close(served)
		for {
			c, err := lim.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	t.Cleanup(func() { lim.Close(); <-served })
	dial := func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	next := func(what string) net.Conn {
		t.Helper()
		select {
		case c := <-accepted:
			t.Cleanup(func() { c.Close() })
			return c
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: not accepted", what)
			return nil
		}
	}
	held := func(what string) {
		t.Helper()
		select {
		case c := <-accepted:
			c.Close()
			t.Fatalf("%s: accepted beyond the bound", what)
		case <-time.After(200 * time.Millisecond):
		}
	}

	dial()
	first := next("without a bound")
	lim.SetLimit(1) // the accept loop is in the kernel's accept by now
	dial()
	held("a bound set with one connection open")
	lim.SetLimit(0)
	second := next("once the bound was taken away")

	lim.SetLimit(1)
	first.Close()
	dial()
	held("two open, bound 1, one closed")
	second.Close()
	next("both closed")
}

// nopConn is a connection whose Close does nothing, handed out again and
// again by oneConnListener.
type nopConn struct{ net.Conn }

func (nopConn) Close() error { return nil }

type oneConnListener struct {
	net.Listener
	c net.Conn
}

func (l oneConnListener) Accept() (net.Conn, error) { return l.c, nil }

// BenchmarkLimitedAccept is what a limit adds to an accept and its
// close, bounded and not, against no limit: every http:// and tcp://
// listener's socket goes through one. A loopback accept itself takes
// microseconds.
func BenchmarkLimitedAccept(b *testing.B) {
	bare := oneConnListener{c: nopConn{}}
	for _, bound := range []int{-1, 0, 1 << 20} {
		name := "limit=" + strconv.Itoa(bound)
		var ln net.Listener = bare
		switch bound {
		case -1:
			name = "none"
		default:
			ln = LimitListener(bare, bound)
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c, _ := ln.Accept()
				c.Close()
			}
		})
	}
}

// TestLimitSeveralAccepts: with several goroutines waiting in Accept
// when a bound comes, the client that arrives is served: an Accept
// waiting in the socket does not hold a slot another needs.
func TestLimitSeveralAccepts(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lim := LimitListener(ln, 0)
	accepted := make(chan net.Conn)
	var acceptors sync.WaitGroup
	for range 3 {
		acceptors.Add(1)
		go func() {
			defer acceptors.Done()
			for {
				c, err := lim.Accept()
				if err != nil {
					return
				}
				accepted <- c
			}
		}()
	}
	t.Cleanup(func() { lim.Close(); acceptors.Wait() })
	// All three are blocked in Accept, in the socket or waiting for it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		blocked := 0
		for _, g := range testutil.Goroutines() {
			if strings.Contains(g.Stack, "(*Limited).Accept(") && g.State != "running" && g.State != "runnable" {
				blocked++
			}
		}
		if blocked == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 3 goroutines blocked in Accept", blocked)
		}
		time.Sleep(time.Millisecond)
	}

	lim.SetLimit(1)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case s := <-accepted:
		s.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("the one client of a listener bounded to 1 was not accepted")
	}
}
