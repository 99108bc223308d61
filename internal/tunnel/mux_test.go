package tunnel

import (
	"log/slog"
	"testing"
	"time"

	"github.com/libp2p/go-yamux/v5"
)

// TestYamuxConfig: every MuxOptions gives a configuration yamux accepts,
// in which a ping after KeepAliveInterval of silence and its answer's
// timeout add up to KeepAliveTimeout.
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
		if cfg.KeepAliveInterval != tc.interval || cfg.KeepAliveInterval+cfg.ConnectionWriteTimeout != tc.deadline {
			t.Errorf("%+v: ping after %s, answer within %s more; want a ping after %s and death after %s",
				tc.in, cfg.KeepAliveInterval, cfg.ConnectionWriteTimeout, tc.interval, tc.deadline)
		}
		if cfg.MaxStreamWindowSize != tc.window {
			t.Errorf("%+v: stream window %d, want %d", tc.in, cfg.MaxStreamWindowSize, tc.window)
		}
	}
}

// TestWindowBudget: first windows are always granted and not counted;
// growth is granted while the session's total stays within the limit, and
// a stream's growth returns to the session when it ends.
func TestWindowBudget(t *testing.T) {
	newSpan := windowBudget(1 << 20)
	a, _ := newSpan()
	b, _ := newSpan()
	for range 10 {
		if err := a.ReserveMemory(minStreamWindow, firstWindow); err != nil {
			t.Fatalf("first window refused: %v", err)
		}
	}
	if err := a.ReserveMemory(512<<10, 128); err != nil {
		t.Fatalf("growth within the budget refused: %v", err)
	}
	if err := b.ReserveMemory(512<<10, 128); err != nil {
		t.Fatalf("growth up to the budget refused: %v", err)
	}
	if err := b.ReserveMemory(1, 128); err == nil {
		t.Fatal("growth beyond the budget granted")
	}
	a.Done()
	a.Done() // yamux may end a span twice
	if err := b.ReserveMemory(512<<10, 128); err != nil {
		t.Fatalf("growth after another stream ended refused: %v", err)
	}
	b.ReleaseMemory(256 << 10)
	if err := b.ReserveMemory(256<<10, 128); err != nil {
		t.Fatalf("growth after a release refused: %v", err)
	}
	if err := b.ReserveMemory(1, 128); err == nil {
		t.Fatal("growth beyond the budget granted after a span ended twice")
	}
}
