package tunnel

// Regression tests for bugs a review found (stops 30 and 38); each failed
// before its fix.

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/wire"
)

// TestClientRedialsWhileHandlerWaits: a client whose session dies redials
// even while one of its stream handlers waits on its target, the stream read
// to its end (as proxy.Pipe waits for a half-closed TCP stream's backend).
// Handlers were given the client's Run context, which the session's death
// does not end, and Run waited for them before it redialled: the client
// stayed "up" on a dead session.
func TestClientRedialsWhileHandlerWaits(t *testing.T) {
	sawEOF := make(chan struct{}, 1)
	target := make(chan struct{}) // a target that never answers
	t.Cleanup(func() { close(target) })
	handler := StreamHandlerFunc(func(ctx context.Context, req *Request) {
		c, err := req.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(io.Discard, c) // the opener half-closes
		sawEOF <- struct{}{}
		select { // wait for the target, or for the stream's context to end
		case <-target:
		case <-ctx.Done():
		}
	})
	h := newHarness(t, ServerOptions{})
	c := h.startClient(ClientOptions{Name: "n", Handler: handler, MinBackoff: 10 * time.Millisecond})
	waitFor(t, "session", func() bool { return h.server.Session("n") != nil && c.Status().State == StateUp })

	conn, err := h.server.Dial(context.Background(), "n", wire.Header{Kind: wire.KindTCP, Target: "x:1"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("request"))
	conn.(*Stream).CloseWrite()
	<-sawEOF

	old := c.Status().Session
	h.server.Session("n").Close() // the tunnel dies
	<-old.Done()
	deadline := time.Now().Add(5 * time.Second)
	for c.Status().Connects < 2 {
		if time.Now().After(deadline) {
			st := c.Status()
			t.Fatalf("client did not redial within 5s of its session's end: state %s, connects %d, session closed but still reported: %v",
				st.State, st.Connects, st.Session == old)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestClientStopsMidHandshake: a client stopped while its handshake
// waits on a server that accepted the connection and says nothing (a
// frozen west, a load balancer holding it) stops at once. The websocket
// package ended the handshake at its deadline only, so a stop waited for
// HandshakeTimeout, and a shutdown with it.
func TestClientStopsMidHandshake(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- c // held, unanswered
		}
	}()
	c := NewClient(ClientOptions{URL: "ws://" + ln.Addr().String(), Name: "waiting", HandshakeTimeout: 20 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	select {
	case conn := <-accepted:
		defer conn.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("the client never connected")
	}
	time.Sleep(50 * time.Millisecond) // into the handshake
	stop := time.Now()
	cancel()
	select {
	case <-done:
		t.Logf("stopped in %s", time.Since(stop).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		t.Fatal("the client still waits on its handshake 5s after it was stopped")
	}
}
