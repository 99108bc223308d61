package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
)

// shortSoak is a soak of about two seconds with a fault every half second.
var shortSoak = options{duration: 2 * time.Second, concurrency: 4, faultEvery: 500 * time.Millisecond,
	reportEvery: time.Second, timeout: 2 * time.Second, deadline: 10 * time.Second,
	keepalive: 200 * time.Millisecond, large: 256 << 10}

// TestSoakFailsOnLeftGoroutines: a goroutine started during the soak that
// still runs once the soak has stopped everything, as one a west leaked
// would, makes the soak fail; without it, a short soak with faults passes.
func TestSoakFailsOnLeftGoroutines(t *testing.T) {
	var out testutil.Buffer
	bad, err := run(context.Background(), shortSoak, &out)
	if err != nil || bad {
		t.Fatalf("a short soak failed (%v):\n%s", err, out.String())
	}

	out = testutil.Buffer{}
	release := make(chan struct{})
	defer close(release)
	ran := make(chan bool, 1)
	go func() {
		bad, err := run(context.Background(), shortSoak, &out)
		if err != nil {
			t.Error(err)
		}
		ran <- bad
	}()
	// Once the soak has printed its header, its wests are up.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(out.String(), "G tunnel"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no header from the soak after 10s:\n%s", out.String())
		}
	}
	go func() { <-release }()
	if bad := <-ran; !bad {
		t.Fatalf("the soak passed with a goroutine left running:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "TestSoakFailsOnLeftGoroutines") {
		t.Errorf("the soak did not show the goroutine left running:\n%s", out.String())
	}
}

// TestVerdict: each reason to fail is named on the last line, which says
// PASS only when the soak exits 0.
func TestVerdict(t *testing.T) {
	for _, c := range []struct {
		s         snapshot
		recovered bool
		leaked    int
		want      string
	}{
		{snapshot{ok: 5}, true, 0, "PASS"},
		{snapshot{ok: 5, hung: 1}, true, 0, "FAIL: 1 hung, 0 corrupt"},
		{snapshot{ok: 5, corrupt: 2}, true, 0, "FAIL: 0 hung, 2 corrupt"},
		{snapshot{ok: 5}, false, 0, "FAIL: no success after healing"},
		{snapshot{ok: 5}, true, 3, "FAIL: 3 goroutines left after stopping"},
	} {
		line, bad := verdict(c.s, c.recovered, c.leaked)
		if !strings.HasPrefix(line, c.want) || bad != (c.want != "PASS") {
			t.Errorf("%+v recovered=%v leaked=%d: %q, failed %v; want %q", c.s, c.recovered, c.leaked, line, bad, c.want)
		}
	}
}
