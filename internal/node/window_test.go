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
// crossed the tunnel and was not read stays within it.
func TestStreamWindowKey(t *testing.T) {
	const gWindow, lWindow = 1 << 20, 512 << 10
	// A sender's write stuck halfway, for the window, is not counted
	// yet: what crossed shows up to about a frame less than the window
	// (one run in thirty on a loaded machine, 282 KiB less of 512 KiB).
	// The bound that tells the key works is the upper one: without it
	// the window is 16 MiB.
	const least = tunnel.MaxPayload + 64<<10
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

	g := startNode(t, `{"west": {"nm": "G", "stream_window": "1MiB"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	l := startNode(t, fmt.Sprintf(`{
		"west": {"nm": "L", "stream_window": "512KiB"},
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
	if unread > lWindow || unread < lWindow-least {
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
	if unread > gWindow || unread < gWindow-least {
		t.Errorf("G, receiving an upload: %d bytes crossed and %d unread, want about its window of %d", sent, unread, gWindow)
	}
}
