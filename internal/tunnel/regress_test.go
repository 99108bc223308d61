package tunnel

// Regression tests for bugs a review found (stop 30); each failed before
// its fix.

import (
	"context"
	"io"
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
