package node

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
	"github.com/west-tunnel/west/internal/tunnel"
)

// TestStreamWindowKey: west.stream_window is the window of every stream a
// west receives on, as a tunnel client (L, receiving a download) and as a
// tunnel server (G, receiving an upload): with the reader stopped, what
// crossed the tunnel and was not read stays within it, give or take a frame.
func TestStreamWindowKey(t *testing.T) {
	const gWindow, lWindow = 2 << 20, 1 << 20
	// Where the reader stops, go-yamux holds more than half the window
	// unread: it grants more credit only once half has been read. What
	// the counters show differs from that by a frame at most each way:
	// the sender's frame stuck halfway in the window is not counted sent
	// yet, and the reader's frame stuck in its write to the client is
	// not counted read. Both bounds are far from the default 16 MiB.
	bounds := func(window int64) (lo, hi int64) {
		return window/2 - tunnel.MaxPayload, window + tunnel.MaxPayload
	}
	release := make(chan struct{})
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost { // take no body: the upload stalls in G
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		chunk := make([]byte, 64<<10)
		for {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	defer be.Close()
	defer close(release)

	g := startNode(t, `{"west": {"nm": "G", "stream_window": "2MiB"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	l := startNode(t, fmt.Sprintf(`{
		"west": {"nm": "L", "stream_window": "1MiB"},
		"proxy": {"http://127.0.0.1:0": {"ea": "ws://%s", "/px": {"ou": "%s/x"}}}
	}`, g.Addrs().Tunnel, be.URL), Options{})
	base := proxyURL(t, l)
	waitClient(t, l, "ws://"+g.Addrs().Tunnel, tunnel.StateUp)
	waitUp(t, g, "L")
	gStats := g.Server().Session("L").Stats()
	lStats := l.Client("ws://" + g.Addrs().Tunnel).Status().Session.Stats()

	c := testClient(t, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// A download whose client reads nothing past the headers.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/px", nil)
	resp, err := c.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("download: %v %v", resp, err)
	}
	defer resp.Body.Close()
	sent := testutil.Settle(t, &gStats.BytesOut, 500*time.Millisecond)
	unread := sent - lStats.BytesIn.Load()
	t.Logf("download: %d KiB crossed, %d KiB unread in L", sent>>10, unread>>10)
	if lo, hi := bounds(lWindow); unread < lo || unread > hi {
		t.Errorf("L, downloading: %d bytes crossed and %d unread, want about its window of %d", sent, unread, lWindow)
	}

	// An upload whose backend reads nothing.
	body, w := io.Pipe()
	defer w.Close()
	go func() {
		chunk := make([]byte, 64<<10)
		for {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}()
	req, _ = http.NewRequestWithContext(ctx, http.MethodPost, base+"/px", body)
	go func() {
		if resp, err := c.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	sent = testutil.Settle(t, &lStats.BytesOut, 500*time.Millisecond)
	unread = sent - gStats.BytesIn.Load()
	t.Logf("upload: %d KiB crossed, %d KiB unread in G", sent>>10, unread>>10)
	if lo, hi := bounds(gWindow); unread < lo || unread > hi {
		t.Errorf("G, receiving an upload: %d bytes crossed and %d unread, want about its window of %d", sent, unread, gWindow)
	}
}
