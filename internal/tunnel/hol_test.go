package tunnel

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/wire"
)

// TestUnreadStreamsDoNotStallOthers: a stream whose reader has stopped
// fills its own window and no more; the tunnel goes on carrying other
// streams, however many such streams there are. (With smux, whose session
// stops reading the tunnel once its streams together hold a session
// window of unread data, the fifth stream here could not even open.)
func TestUnreadStreamsDoNotStallOthers(t *testing.T) {
	mux := MuxOptions{StreamWindow: 1 << 20}
	chunk := bytes.Repeat([]byte{'x'}, 64<<10)
	h := newHarness(t, ServerOptions{Mux: mux, Handler: StreamHandlerFunc(func(ctx context.Context, req *Request) {
		if req.Header.Target != "flood:1" {
			echoHandler(ctx, req)
			return
		}
		c, err := req.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		// Write until the window is full, then wait there until the
		// test ends and the stream is closed.
		for {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	})})
	c := h.startClient(ClientOptions{Name: "n", Mux: mux})
	for range 8 {
		st, err := c.Dial(context.Background(), wire.Header{Kind: wire.KindTCP, Target: "flood:1"})
		if err != nil {
			t.Fatalf("dial a flooding stream: %v", err)
		}
		defer st.Close()
	}
	time.Sleep(500 * time.Millisecond) // for the floods to fill their windows
	st, err := c.Dial(context.Background(), wire.Header{Kind: wire.KindTCP, Target: "echo:1"})
	if err != nil {
		t.Fatalf("dial beside the unread streams: %v", err)
	}
	st.SetDeadline(time.Now().Add(5 * time.Second))
	roundTrip(t, st, []byte("still moving"))
}
