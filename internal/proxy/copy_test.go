package proxy

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// TestCopyConnSocket copies a socket in bursts with pauses between them,
// so that the copy waits in the poller between reads, and checks every
// byte, the end-of-stream, and that a tracked connection saw the reads.
func TestCopyConnSocket(t *testing.T) {
	src, peer := tcpPair(t)
	want := make([]byte, 3<<20+17)
	rand.Read(want)
	go func() {
		for rest := want; len(rest) > 0; {
			n := min(len(rest), 700<<10)
			peer.Write(rest[:n])
			rest = rest[n:]
			time.Sleep(5 * time.Millisecond)
		}
		peer.(*net.TCPConn).CloseWrite()
	}()
	act := &activity{}
	act.awaiting.Store(true)
	var got bytes.Buffer
	n, err := copyConn(&got, trackedConn{src, act})
	if err != nil {
		t.Fatalf("copyConn: %v", err)
	}
	if n != int64(len(want)) || !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("copied %d bytes, want %d; equal=%v", n, len(want), bytes.Equal(got.Bytes(), want))
	}
	if act.awaiting.Load() || act.last.Load() == 0 {
		t.Errorf("the tracked connection did not see the reads: awaiting=%v last=%d", act.awaiting.Load(), act.last.Load())
	}
}

// TestCopyConnErrors: a reset from the peer and a close of the source both
// end the copy with an error, never a clean end-of-stream.
func TestCopyConnErrors(t *testing.T) {
	t.Run("reset", func(t *testing.T) {
		src, peer := tcpPair(t)
		peer.Write([]byte("partial"))
		peer.(*net.TCPConn).SetLinger(0)
		peer.Close()
		n, err := copyConn(io.Discard, src)
		if err == nil {
			t.Fatalf("copyConn after a reset: %d bytes, no error", n)
		}
	})
	t.Run("closed locally", func(t *testing.T) {
		src, _ := tcpPair(t)
		time.AfterFunc(50*time.Millisecond, func() { src.Close() })
		_, err := copyConn(io.Discard, src)
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("copyConn on a closed socket: %v, want net.ErrClosed", err)
		}
	})
	t.Run("write fails", func(t *testing.T) {
		src, peer := tcpPair(t)
		peer.Write([]byte("x"))
		_, err := copyConn(failWriter{}, src)
		if !errors.Is(err, errWrite) {
			t.Fatalf("copyConn into a failing writer: %v", err)
		}
	})
}

var errWrite = errors.New("write refused")

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errWrite }
