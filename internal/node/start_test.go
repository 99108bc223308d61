package node

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/config"
	"github.com/west-tunnel/west/internal/testutil"
)

// The demo gets its request across the tunnel and stops when its context
// ends, leaving nothing running (TestMain checks).
func TestDemoRunsAndStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out testutil.Buffer
	done := make(chan error, 1)
	go func() { done <- Demo(ctx, &out, testLogger(t)) }()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(out.String(), "Press Ctrl-C") {
		if time.Now().After(deadline) {
			t.Fatalf("demo did not get through; output:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(out.String(), "200 OK") {
		t.Fatalf("demo output:\n%s", out.String())
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("demo did not stop")
	}
}

// A demo stopped (Ctrl-C) before its request is answered ends without an
// error, as one stopped after it does.
func TestDemoStoppedBeforeAnswer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out testutil.Buffer
	if err := Demo(ctx, &out, testLogger(t)); err != nil {
		t.Fatalf("demo stopped before its answer: %v\noutput:\n%s", err, out.String())
	}
}

// A start that fails on its last listener closes every socket it opened
// before, so that a corrected config can start on the same ports.
func TestPartialStartClosesAll(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	var mu sync.Mutex
	var opened []string
	opts := Options{Listen: func(network, addr string) (net.Listener, error) {
		ln, err := net.Listen(network, addr)
		if err == nil {
			mu.Lock()
			opened = append(opened, ln.Addr().String())
			mu.Unlock()
		}
		return ln, err
	}}
	cfg, err := config.Parse(fmt.Appendf(nil, `{"west": {"nm": "x", "cp": "%s"}, "wsts": {"sp": "ws://127.0.0.1:0"},
		"proxy": {"http://127.0.0.1:0": {"en": "p", "/a": {"ou": "http://127.0.0.1:1/"}},
			"tcp://127.0.0.1:0": {"en": "p", "ou": "tcp://127.0.0.1:1"}}}`, busy.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	n, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err == nil || !strings.Contains(err.Error(), busy.Addr().String()) {
		t.Fatalf("start: %v, want an error naming %s", err, busy.Addr())
	}
	if len(opened) != 3 {
		t.Fatalf("opened %v before the failure, want 3 listeners", opened)
	}
	for _, a := range opened {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("%s still bound after the failed start: %v", a, err)
		}
		ln.Close()
	}
	if err := n.Run(context.Background()); err == nil {
		t.Fatal("Run after a failed Start returned nil")
	}
}
