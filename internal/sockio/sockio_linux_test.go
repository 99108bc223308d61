package sockio

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
)

// pair returns the two ends of a loopback TCP connection, each wrapped.
func pair(t testing.TB) (*Conn, *Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ln = WrapListener(ln)
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		t.FailNow()
	}
	a, ok := Wrap(c).(*Conn)
	b, ok2 := s.(*Conn)
	if !ok || !ok2 {
		t.Fatalf("Wrap gave %T, WrapListener %T; want *Conn", Wrap(c), s)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func TestReadWriteAndEOF(t *testing.T) {
	a, b := pair(t)
	if n, err := a.Write(nil); n != 0 || err != nil {
		t.Fatalf("empty write: %d, %v", n, err)
	}
	if n, err := b.Read(nil); n != 0 || err != nil {
		t.Fatalf("empty read: %d, %v", n, err)
	}
	if _, err := a.Write([]byte("hello, ")); err != nil {
		t.Fatal(err)
	}
	if _, err := a.WriteVec([][]byte{nil, []byte("tun"), {}, []byte("nel")}); err != nil {
		t.Fatal(err)
	}
	if err := a.CloseWrite(); err != nil { // net.TCPConn's own, through the wrapper
		t.Fatal(err)
	}
	got, err := io.ReadAll(b)
	if err != nil || string(got) != "hello, tunnel" {
		t.Fatalf("read %q, %v; want %q", got, err, "hello, tunnel")
	}
	if n, err := b.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Fatalf("read after the end: %d, %v; want io.EOF", n, err)
	}
}

// TestBulkThroughFullSocket writes far more than the socket buffers hold,
// so that writes wait in the poller, in one Write and in one WriteVec of
// uneven parts, and checks every byte.
func TestBulkThroughFullSocket(t *testing.T) {
	a, b := pair(t)
	const size = 48 << 20
	data := make([]byte, size)
	io.ReadFull(&testutil.Pattern{}, data)
	parts := [][]byte{data[:1], data[1 : 5<<20], nil, data[5<<20 : 5<<20+3], data[5<<20+3:]}
	done := make(chan error, 1)
	go func() {
		if n, err := a.Write(data); n != size || err != nil {
			done <- errors.Join(err, errors.New("short write"))
			return
		}
		if n, err := a.WriteVec(parts); n != size || err != nil {
			done <- errors.Join(err, errors.New("short vector write"))
			return
		}
		done <- a.CloseWrite()
	}()
	h := sha256.New()
	buf := make([]byte, 7<<10) // small reads, so that the writer fills the socket
	// One byte more than was sent would be a writer that repeats itself.
	n, err := io.CopyBuffer(h, io.LimitReader(b, 2*size+1), buf)
	if err != nil || n != 2*size {
		t.Fatalf("read %d bytes, %v; want %d", n, err, 2*size)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want := sha256.New()
	want.Write(data)
	want.Write(data)
	if !bytes.Equal(h.Sum(nil), want.Sum(nil)) {
		t.Fatal("the bytes read are not the bytes written")
	}
}

// TestConcurrentWritesStayWhole checks that each Write's bytes arrive
// together, as net.TCPConn's do, when two goroutines write at once.
func TestConcurrentWritesStayWhole(t *testing.T) {
	a, b := pair(t)
	const record, count = 64 << 10, 200
	done := make(chan error, 2)
	for _, fill := range []byte{'x', 'y'} {
		go func() {
			rec := bytes.Repeat([]byte{fill}, record)
			for range count {
				if _, err := a.Write(rec); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	go func() {
		err := errors.Join(<-done, <-done)
		a.CloseWrite()
		done <- err
	}()
	got, err := io.ReadAll(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(got) != 2*record*count {
		t.Fatalf("read %d bytes, want %d", len(got), 2*record*count)
	}
	for off := 0; off < len(got); off += record {
		r := got[off : off+record]
		if bytes.Count(r, r[:1]) != record {
			t.Fatalf("record at %d mixes writes", off)
		}
	}
}

func TestDeadlines(t *testing.T) {
	a, b := pair(t)
	b.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := b.Read(make([]byte, 8))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past its deadline: %v; want a timeout", err)
	}
	if oe, ok := err.(*net.OpError); !ok || oe.Op != "read" {
		t.Fatalf("read past its deadline: %#v; want a *net.OpError for read", err)
	}

	// Nobody reads b: a write fills the socket and stops at its deadline,
	// saying how much went.
	a.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
	n, err := a.Write(make([]byte, 64<<20))
	if !errors.Is(err, os.ErrDeadlineExceeded) || n <= 0 || n >= 64<<20 {
		t.Fatalf("write past its deadline: %d bytes, %v; want some bytes and a timeout", n, err)
	}
	if oe, ok := err.(*net.OpError); !ok || oe.Op != "write" {
		t.Fatalf("write past its deadline: %#v; want a *net.OpError for write", err)
	}
}

func TestClose(t *testing.T) {
	_, b := pair(t)
	read := make(chan error, 1)
	go func() {
		_, err := b.Read(make([]byte, 8))
		read <- err
	}()
	time.Sleep(20 * time.Millisecond) // let the read wait in the poller
	b.Close()
	if err := <-read; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read cut by Close: %v; want net.ErrClosed", err)
	}
	if _, err := b.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close: %v; want net.ErrClosed", err)
	}

	// The peer's reset is an error of its own, not an end of stream.
	c, d := pair(t)
	c.SetLinger(0)
	c.Close()
	time.Sleep(20 * time.Millisecond)
	_, err := d.Read(make([]byte, 8))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after the peer's reset: %v; want ECONNRESET", err)
	}
}

func TestWrapLeavesOthersAlone(t *testing.T) {
	p, q := net.Pipe()
	defer p.Close()
	defer q.Close()
	if got := Wrap(p); got != p {
		t.Fatalf("Wrap(pipe) = %T, want the pipe itself", got)
	}
}

func TestNoAllocations(t *testing.T) {
	a, b := pair(t)
	msg := []byte("ping")
	buf := make([]byte, 64)
	vec := make([][]byte, 2)
	allocs := testing.AllocsPerRun(200, func() {
		a.Write(msg)
		b.Read(buf)
		vec[0], vec[1] = msg, msg
		b.WriteVec(vec)
		io.ReadFull(a, buf[:8])
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per round trip, want 0", allocs)
	}
}

// TestSwitchedOff checks WEST_SOCKIO=off's effect: connections as the net
// package makes them, and reads that still work.
func TestSwitchedOff(t *testing.T) {
	enabled = false
	defer func() { enabled = true }()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := Wrap(c); got != c {
		t.Fatalf("Wrap with WEST_SOCKIO=off gave %T, want its argument", got)
	}
	s, err := WrapListener(ln).Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, ok := s.(*net.TCPConn); !ok {
		t.Fatalf("WrapListener with WEST_SOCKIO=off accepted a %T, want a *net.TCPConn", s)
	}
	c.Write([]byte("hi"))
	rc, _ := s.(*net.TCPConn).SyscallConn()
	buf := make([]byte, 8)
	var n int
	var errno syscall.Errno
	rc.Read(func(fd uintptr) bool {
		n, errno = Read(fd, buf)
		return errno != syscall.EAGAIN
	})
	if string(buf[:n]) != "hi" || errno != 0 {
		t.Fatalf("Read: %q, %v", buf[:n], errno)
	}
}

// TestHappensBefore passes a value beside a byte sent over loopback, as
// tests through the net package do: under -race it fails unless reads
// and writes tell the race detector that the kernel orders them.
func TestHappensBefore(t *testing.T) {
	a, b := pair(t)
	var value int
	go func() {
		value = 42
		a.Write([]byte{1})
	}()
	if _, err := io.ReadFull(b, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if value != 42 {
		t.Fatalf("value %d, want 42", value)
	}
	go func() {
		value = 43
		b.WriteVec([][]byte{{1}, {2}})
	}()
	if _, err := io.ReadFull(a, make([]byte, 2)); err != nil {
		t.Fatal(err)
	}
	if value != 43 {
		t.Fatalf("value %d, want 43", value)
	}
}

// TestZeroLength checks reads and writes of nothing against the net
// package's: nothing happens on an open connection, but a write past its
// deadline times out, one after CloseWrite fails with EPIPE, and both
// fail once the connection is closed. A caller whose buffer is full must
// not take a closed connection for one that goes on.
func TestZeroLength(t *testing.T) {
	a, _ := pair(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	plain := testutil.DialClient(t, ln.Addr().String())
	for _, c := range []net.Conn{plain, a} {
		name := fmt.Sprintf("%T", c)
		if n, err := c.Read(nil); n != 0 || err != nil {
			t.Errorf("%s: empty read: %d, %v; want 0, nil", name, n, err)
		}
		c.SetWriteDeadline(time.Unix(1, 0))
		if _, err := c.Write(nil); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s: empty write past its deadline: %v; want a timeout", name, err)
		}
		c.SetWriteDeadline(time.Time{})
		if n, err := c.Write([]byte{}); n != 0 || err != nil {
			t.Errorf("%s: empty write: %d, %v; want 0, nil", name, n, err)
		}
		if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if n, err := c.Write(nil); n != 0 || !errors.Is(err, syscall.EPIPE) {
			t.Errorf("%s: empty write after CloseWrite: %d, %v; want EPIPE", name, n, err)
		}
		c.Close()
		for op, f := range map[string]func() (int, error){
			"read":  func() (int, error) { return c.Read(nil) },
			"write": func() (int, error) { return c.Write(nil) },
		} {
			n, err := f()
			if oe, ok := err.(*net.OpError); n != 0 || !ok || oe.Op != op || !errors.Is(err, net.ErrClosed) {
				t.Errorf("%s: empty %s after Close: %d, %#v; want a *net.OpError for %[2]s with net.ErrClosed", name, op, n, err)
			}
		}
	}
	if _, err := a.WriteVec([][]byte{nil, {}}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("empty vector write after Close: %v; want net.ErrClosed", err)
	}
}
