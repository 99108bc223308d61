package testutil

import (
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestMain(m *testing.M) { VerifyTestMain(m) }

// echoServer echoes every connection, honouring half-close.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

func dial(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

func TestLeakCheckFindsAndFormats(t *testing.T) {
	base := ids(Goroutines())
	release := make(chan struct{})
	for range 3 {
		go func() { <-release }()
	}
	saved := LeakWait
	LeakWait = 200 * time.Millisecond
	defer func() { LeakWait = saved }()
	left := waitLeaks(base)
	close(release)
	if len(left) != 3 {
		t.Fatalf("found %d leaked goroutines, want 3", len(left))
	}
	msg := FormatLeaks(left)
	if !strings.Contains(msg, "3 goroutine(s) leaked") || !strings.Contains(msg, "--- 3 x") ||
		!strings.Contains(msg, "TestLeakCheckFindsAndFormats") {
		t.Fatalf("leak report does not group or name the leak:\n%s", msg)
	}
	if left := waitLeaks(base); len(left) != 0 {
		t.Fatalf("released goroutines still reported:\n%s", FormatLeaks(left))
	}
}

func TestCountFDs(t *testing.T) {
	before, err := CountFDs(0)
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	during, _ := CountFDs(0)
	ln.Close()
	after, _ := CountFDs(0)
	if during != before+1 || after != before {
		t.Fatalf("descriptors before/during/after a listener: %d %d %d", before, during, after)
	}
	if rss, err := RSS(0); err != nil || rss < 1<<20 {
		t.Fatalf("RSS %d, %v", rss, err)
	}
}

func TestRelayForwardsAndHalfCloses(t *testing.T) {
	VerifyNoLeaks(t)
	r := StartRelay(t, echoServer(t))
	c := dial(t, r.Addr())
	msg := strings.Repeat("west ", 20000)
	go func() {
		io.WriteString(c, msg)
		c.CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != msg {
		t.Fatalf("echoed %d bytes, %v; want %d", len(got), err, len(msg))
	}
	if s := r.Stats(); s.Accepted != 1 || s.Bytes != 2*int64(len(msg)) {
		t.Fatalf("stats %+v", s)
	}
}

func TestRelayDropResets(t *testing.T) {
	VerifyNoLeaks(t)
	r := StartRelay(t, echoServer(t))
	c := dial(t, r.Addr())
	roundTrip(t, c, "ping")
	if n := r.Drop(); n != 1 {
		t.Fatalf("dropped %d connections, want 1", n)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err := c.Read(make([]byte, 1))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after Drop: %v, want a reset", err)
	}
	// New connections still work.
	roundTrip(t, dial(t, r.Addr()), "again")
}

func TestRelayStallAndResume(t *testing.T) {
	VerifyNoLeaks(t)
	r := StartRelay(t, echoServer(t))
	c := dial(t, r.Addr())
	roundTrip(t, c, "before")
	r.Stall()
	io.WriteString(c, "held")
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := c.Read(make([]byte, 4)); n != 0 || !isTimeout(err) {
		t.Fatalf("read while stalled: %d bytes, %v; want a timeout", n, err)
	}
	r.Resume()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "held" {
		t.Fatalf("after Resume: %q, %v", buf, err)
	}
	// A connection opened while stalled is held too, and Drop frees it.
	r.Stall()
	c2 := dial(t, r.Addr())
	io.WriteString(c2, "x")
	c2.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := c2.Read(buf); !isTimeout(err) {
		t.Fatalf("new connection while stalled: %v, want a timeout", err)
	}
	r.Drop()
	r.Resume()
}

func TestRelayRefuseAndDelay(t *testing.T) {
	VerifyNoLeaks(t)
	r := StartRelay(t, echoServer(t))
	r.Refuse(true)
	// The reset may come before connect returns, or at the first read.
	if c, err := net.Dial("tcp", r.Addr()); err == nil {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err = c.Read(make([]byte, 1))
		c.Close()
		if err == nil || isTimeout(err) {
			t.Fatalf("refused connection read: %v, want a reset or EOF", err)
		}
	}
	r.Refuse(false)
	r.Delay(100 * time.Millisecond)
	c := dial(t, r.Addr())
	start := time.Now()
	roundTrip(t, c, "slow")
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("round trip with 100ms each way took %s", d)
	}
	if s := r.Stats(); s.Refused != 1 || s.Accepted != 2 {
		t.Fatalf("stats %+v", s)
	}
}

func TestRelayCloseEndsStalledConnections(t *testing.T) {
	VerifyNoLeaks(t)
	r, err := NewRelay(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, r.Addr())
	r.Stall()
	io.WriteString(c, "stuck")
	done := make(chan struct{})
	go func() { r.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("Close hung on a stalled connection")
	}
}

func roundTrip(t *testing.T, c net.Conn, s string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(s))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != s {
		t.Fatalf("round trip %q: got %q, %v", s, buf, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
