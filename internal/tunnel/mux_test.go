package tunnel

import (
	"log/slog"
	"testing"
	"time"

	"github.com/libp2p/go-yamux/v5"
)

// TestYamuxConfig: every MuxOptions gives a configuration yamux accepts,
// with its defaults for the ping interval and the silence that is fatal
// (which Session.watch keeps, not yamux), each stream is granted its whole
// window at once, and a frame fills a 256 KiB buffer exactly.
func TestYamuxConfig(t *testing.T) {
	for _, tc := range []struct {
		in                 MuxOptions
		interval, deadline time.Duration
		window             uint32
	}{
		{MuxOptions{}, 5 * time.Second, 15 * time.Second, 16 << 20},
		{MuxOptions{KeepAliveInterval: 200 * time.Millisecond, KeepAliveTimeout: time.Second}, 200 * time.Millisecond, time.Second, 16 << 20},
		{MuxOptions{KeepAliveInterval: time.Second}, time.Second, 3 * time.Second, 16 << 20},
		{MuxOptions{KeepAliveTimeout: 3 * time.Second}, time.Second, 3 * time.Second, 16 << 20},
		{MuxOptions{KeepAliveInterval: 5 * time.Second, KeepAliveTimeout: 2 * time.Second}, 5 * time.Second, 10 * time.Second, 16 << 20},
		{MuxOptions{StreamWindow: 1}, 5 * time.Second, 15 * time.Second, 256 << 10},
		{MuxOptions{StreamWindow: 4 << 20}, 5 * time.Second, 15 * time.Second, 4 << 20},
	} {
		cfg := tc.in.yamuxConfig(slog.New(slog.DiscardHandler))
		if err := yamux.VerifyConfig(cfg); err != nil {
			t.Errorf("%+v: yamux refuses the configuration: %v", tc.in, err)
		}
		if o := tc.in.withDefaults(); o.KeepAliveInterval != tc.interval || o.KeepAliveTimeout != tc.deadline || cfg.EnableKeepAlive {
			t.Errorf("%+v: ping after %s, death after %s, yamux's keepalive %v; want a ping after %s and death after %s, Session.watch's",
				tc.in, o.KeepAliveInterval, o.KeepAliveTimeout, cfg.EnableKeepAlive, tc.interval, tc.deadline)
		}
		if cfg.MaxStreamWindowSize != tc.window || cfg.InitialStreamWindowSize != tc.window {
			t.Errorf("%+v: stream window %d growing to %d, want all %d at once",
				tc.in, cfg.InitialStreamWindowSize, cfg.MaxStreamWindowSize, tc.window)
		}
		// yamux's buffer pool rounds sizes up to a power of two: a frame
		// a few bytes over one would take a buffer twice its size.
		if cfg.MaxMessageSize != 256<<10 {
			t.Errorf("%+v: frames of up to %d bytes, want 256 KiB with the header", tc.in, cfg.MaxMessageSize)
		}
	}
}
