package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/wire"
)

// hopsHandler refuses a stream for "loop:1" as a loop, and answers any
// other with its hop count, as one byte, and ends it.
var hopsHandler = StreamHandlerFunc(func(ctx context.Context, req *Request) {
	if req.Header.Target == "loop:1" {
		req.Reject(wire.CodeLoop, "loop")
		return
	}
	c, err := req.Accept()
	if err != nil {
		return
	}
	c.Write([]byte{req.Header.Hops})
	c.Close()
})

// TestHopsHandshake: a client and a server that both read stream header
// version 2 say so in the handshake and send each other their streams'
// hop counts; when either predates it (MuxOptions.NoHops), neither sends
// that version, so the streams still work, as version 1, without the
// count, and a loop's refusal reaches the older side as a dial failure.
func TestHopsHandshake(t *testing.T) {
	for _, tc := range []struct{ clientOld, serverOld bool }{{false, false}, {true, false}, {false, true}, {true, true}} {
		t.Run(fmt.Sprintf("client old %v, server old %v", tc.clientOld, tc.serverOld), func(t *testing.T) {
			h := newHarness(t, ServerOptions{Handler: hopsHandler, Mux: MuxOptions{NoHops: tc.serverOld}})
			c := h.startClient(ClientOptions{Name: "node-a", Handler: hopsHandler, Mux: MuxOptions{NoHops: tc.clientOld}})
			waitFor(t, "session", func() bool { return h.server.Session("node-a") != nil && c.Status().Session != nil })
			both := !tc.clientOld && !tc.serverOld
			if got := h.server.Session("node-a").PeerHops(); got != both {
				t.Errorf("server's session: PeerHops %v, want %v", got, both)
			}
			if got := c.Status().Session.PeerHops(); got != both {
				t.Errorf("client's session: PeerHops %v, want %v", got, both)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			wantHops := byte(0)
			if both {
				wantHops = 7
			}
			wantLoop := wire.CodeDialFailed
			if both {
				wantLoop = wire.CodeLoop
			}
			for name, dial := range map[string]func(wire.Header) (io.ReadCloser, error){
				"client to server": func(hd wire.Header) (io.ReadCloser, error) { return c.Dial(ctx, hd) },
				"server to client": func(hd wire.Header) (io.ReadCloser, error) { return h.server.Dial(ctx, "node-a", hd) },
			} {
				s, err := dial(wire.Header{Kind: wire.KindTCP, Target: "x:1", Hops: 7})
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				got, err := io.ReadAll(s)
				s.Close()
				if err != nil || len(got) != 1 || got[0] != wantHops {
					t.Errorf("%s: the far side read hop count %v (%v), want %d", name, got, err, wantHops)
				}
				_, err = dial(wire.Header{Kind: wire.KindTCP, Target: "loop:1", Hops: 7})
				var re *wire.RejectError
				if !errors.As(err, &re) || re.Code != wantLoop || re.Reason != "loop" {
					t.Errorf("%s: a loop's refusal read as %v, want %s", name, err, wantLoop)
				}
			}
		})
	}
}

// TestNoHopsRefusesVersion2: a west that predates header version 2
// answers it as a bad header, which is why a west sends it only to a peer
// that announced it; the tunnel stays up.
func TestNoHopsRefusesVersion2(t *testing.T) {
	h := newHarness(t, ServerOptions{Handler: hopsHandler, Mux: MuxOptions{NoHops: true}})
	c := h.startClient(ClientOptions{Name: "node-a", Handler: hopsHandler})
	waitFor(t, "session", func() bool { return c.Status().Session != nil })
	st, err := c.Status().Session.OpenRaw()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.SetDeadline(time.Now().Add(5 * time.Second))
	hdr, _ := wire.Header{Kind: wire.KindTCP, Target: "x:1", Hops: 1}.AppendBinary(nil, wire.VersionHops)
	st.Write(hdr)
	err = wire.ReadReply(st)
	var re *wire.RejectError
	if !errors.As(err, &re) || re.Code != wire.CodeBadHeader {
		t.Fatalf("a version-2 header to a version-1 west: %v, want bad header", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := c.Dial(ctx, wire.Header{Kind: wire.KindTCP, Target: "x:1", Hops: 3})
	if err != nil {
		t.Fatalf("a stream after it: %v", err)
	}
	if got, _ := io.ReadAll(s); len(got) != 1 || got[0] != 0 {
		t.Errorf("the older west read hop count %v, want 0 (version 1)", got)
	}
	s.Close()
}
