package tunnel

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"
)

// TestStopAsDialReturns stops a client in the moment its TCP dial to a
// server that accepts and never answers has returned, before the
// websocket package sets the handshake's deadline on the connection: the
// stop must still end the handshake at once, not at HandshakeTimeout.
func TestStopAsDialReturns(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var accepted []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range accepted {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			accepted = append(accepted, c) // held, never answered
			mu.Unlock()
		}
	}()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stopped time.Time
	hook := func(c net.Conn) {
		if c.RemoteAddr().String() != ln.Addr().String() {
			return
		}
		stopped = time.Now()
		cancel()
		// Wait for the stop to set its past deadline: a read of the
		// silent server ends only then, and reads nothing.
		read := make(chan error, 1)
		go func() {
			_, err := c.Read(make([]byte, 1))
			read <- err
		}()
		select {
		case err := <-read:
			if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
				t.Errorf("read from the silent server: %v, want a timeout", err)
			}
		case <-time.After(2 * time.Second):
			t.Error("the stop set no deadline on the connection it dialled")
		}
	}
	dialledHook.Store(&hook)
	t.Cleanup(func() { dialledHook.Store(nil) })

	c := NewClient(ClientOptions{URL: "ws://" + ln.Addr().String() + "/", Name: "silent", Handler: echoHandler, HandshakeTimeout: 5 * time.Second})
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the client never dialled, or never stopped")
	}
	if stopped.IsZero() {
		t.Fatal("the client stopped without dialling")
	}
	if d := time.Since(stopped); d > 2*time.Second {
		t.Errorf("the stop took %v, the server silent; want it at once", d)
	}
}
