package proxy

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/wire"
)

// dropTally counts what a udp:// listener's OnDropped, or a Far's
// OnDatagramDropped, is told, by reason.
type dropTally struct {
	mu sync.Mutex
	n  map[DropReason]int
}

func (d *dropTally) add(why DropReason, n int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.n == nil {
		d.n = make(map[DropReason]int)
	}
	d.n[why] += n
}

func (d *dropTally) count(why DropReason) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n[why]
}

func (d *dropTally) String() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return fmt.Sprint(d.n)
}

// waitDrops polls until d counts at least want datagrams for why, sending
// with send before each look if it is not nil.
func waitDrops(t *testing.T, d *dropTally, why DropReason, want int, send func()) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for d.count(why) < want {
		if time.Now().After(deadline) {
			t.Fatalf("%d datagrams counted as dropped for %s (all: %v); want %d", d.count(why), why, d.String(), want)
		}
		if send != nil {
			send()
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stalledDialer opens no stream: each Dial waits until its flow ends.
var stalledDialer = DialerFunc(func(ctx context.Context, _ wire.Header) (net.Conn, error) {
	<-ctx.Done()
	return nil, ctx.Err()
})

// TestUDPEvictedFlowsDatagramsCounted: a flow ended to make room for a
// new client (MaxFlows) has the datagrams still waiting for its stream
// counted as dropped, as evicted; the datagrams still queued when the
// listener closes are not, as its series go with it.
func TestUDPEvictedFlowsDatagramsCounted(t *testing.T) {
	var drops dropTally
	srv := NewUDP(UDPOptions{Target: "127.0.0.1:1", Dialer: stalledDialer, MaxFlows: 1, OnDropped: drops.add})
	entry := listenUDP(t, srv)
	flows := func() int {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return len(srv.flows)
	}
	a, b := dialUDP(t, entry), dialUDP(t, entry)
	a.Write([]byte("one"))
	a.Write([]byte("two"))
	for deadline := time.Now().Add(5 * time.Second); srv.queued.Load() < 6; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the first client's datagrams were not queued (%d bytes)", srv.queued.Load())
		}
	}
	b.Write([]byte("three"))
	waitDrops(t, &drops, DropEvicted, 2, nil)
	if n := flows(); n != 1 {
		t.Fatalf("%d flows; want the new client's", n)
	}
	srv.Close()
	if n := drops.count(DropEvicted); n != 2 {
		t.Errorf("%d datagrams counted as evicted; want the first client's 2", n)
	}
	if got := drops.String(); got != "map[evicted:2]" {
		t.Errorf("datagrams dropped: %v; want only the evicted flow's, not those a closing listener discards", got)
	}
}

// TestUDPQueueFullCounted: a datagram that finds its flow's queue full
// (its stream not open yet) is counted as dropped, as queue_full.
func TestUDPQueueFullCounted(t *testing.T) {
	var drops dropTally
	entry := serveUDP(t, UDPOptions{Target: "127.0.0.1:1", Dialer: stalledDialer, OnDropped: drops.add})
	c, err := net.Dial("udp", entry)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitDrops(t, &drops, DropQueueFull, 1, func() {
		for range flowQueue {
			c.Write([]byte("x"))
		}
	})
}
