package tunnel

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/west-tunnel/west/internal/wire"
)

// TestDrainNotice: a side's notice that it drains reaches the peer's hook
// once, marks the peer's session and the streams already open on it, and
// never reaches the stream handler or the stream counts.
func TestDrainNotice(t *testing.T) {
	var kinds sync.Map // the kinds the server's handler was given
	handler := StreamHandlerFunc(func(ctx context.Context, req *Request) {
		kinds.Store(req.Header.Kind, true)
		echoHandler(ctx, req)
	})
	h := newHarness(t, ServerOptions{Handler: handler})
	var told atomic.Int32
	var toldOf atomic.Pointer[Session]
	c := h.startClient(ClientOptions{Name: "near", OnPeerDraining: func(s *Session) {
		told.Add(1)
		toldOf.Store(s)
	}})
	waitFor(t, "session", func() bool { return h.server.Session("near") != nil })
	ctx := context.Background()
	before, err := c.Dial(ctx, wire.Header{Kind: wire.KindHTTP, Target: "echo:1"})
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()
	near, far := c.Status().Session, h.server.Session("near")
	opened := near.Stats().StreamsTotal.Load()
	if near.PeerDraining() || before.(*Stream).PeerDraining() || far.DrainNoticed() {
		t.Fatal("a drain is seen before any notice")
	}

	// The server side drains and says so.
	if err := far.NoticeDrain(ctx); err != nil {
		t.Fatalf("notice: %v", err)
	}
	if !far.DrainNoticed() {
		t.Error("the peer answered the notice, but DrainNoticed is false")
	}
	// The hook ran before the answer.
	if told.Load() != 1 || toldOf.Load() != near {
		t.Errorf("hook told %d times, of %p; want once, of the client's session %p", told.Load(), toldOf.Load(), near)
	}
	if !near.PeerDraining() || !before.(*Stream).PeerDraining() {
		t.Error("the near session or its open stream does not see the peer draining")
	}
	after, err := c.Dial(ctx, wire.Header{Kind: wire.KindHTTP, Target: "echo:1"})
	if err != nil {
		t.Fatalf("a stream after the notice: %v", err)
	}
	if !after.(*Stream).PeerDraining() {
		t.Error("a stream opened after the notice does not see the peer draining")
	}
	roundTrip(t, after, []byte("still served")) // a draining peer still serves
	if far.PeerDraining() {
		t.Error("the drainer's own session thinks its peer drains")
	}

	// Said again, the hook is not told again.
	if err := far.NoticeDrain(ctx); err != nil {
		t.Fatalf("second notice: %v", err)
	}
	if told.Load() != 1 {
		t.Errorf("hook told %d times after a second notice, want once", told.Load())
	}
	// Notices are not streams: they reach no handler and no count.
	if got := near.Stats().StreamsTotal.Load(); got != opened+1 {
		t.Errorf("client session counted %d streams, want %d (one more, the echo)", got, opened+1)
	}
	if _, ok := kinds.Load(wire.KindDrain); ok {
		t.Error("a drain notice reached the stream handler")
	}

	// The other way: the client drains.
	if err := near.NoticeDrain(ctx); err != nil || !far.PeerDraining() || !near.DrainNoticed() {
		t.Errorf("client's notice: %v; server sees it %v, noticed %v", err, far.PeerDraining(), near.DrainNoticed())
	}
}

// TestDrainNoticeRefused: a peer that does not take the notice (here at
// its stream limit; an older west answers "bad header") leaves
// DrainNoticed false, and the refusal is the error.
func TestDrainNoticeRefused(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	h := newHarness(t, ServerOptions{Handler: holdUntil(release), Mux: MuxOptions{MaxStreams: 1}})
	c := h.startClient(ClientOptions{Name: "n"})
	waitFor(t, "session", func() bool { return c.Status().State == StateUp })
	held, err := c.Dial(context.Background(), wire.Header{Kind: wire.KindTCP, Target: "x:1"})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	sess := c.Status().Session
	err = sess.NoticeDrain(context.Background())
	var re *wire.RejectError
	if !errors.As(err, &re) || re.Code != wire.CodeOverloaded {
		t.Fatalf("notice to a peer at its limit: %v, want overloaded", err)
	}
	if sess.DrainNoticed() {
		t.Error("DrainNoticed after a refused notice")
	}
	if h.server.Session("n").PeerDraining() {
		t.Error("the peer took a notice it refused")
	}
}
