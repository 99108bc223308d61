package procs

import (
	"context"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
)

// TestMain fails the package's tests if they leave goroutines running.
func TestMain(m *testing.M) { testutil.VerifyTestMain(m) }

// waitProcs waits until GOMAXPROCS is want, or fails after 15s.
func waitProcs(t *testing.T, want int, what string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for runtime.GOMAXPROCS(0) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: GOMAXPROCS is %d, want %d", what, runtime.GOMAXPROCS(0), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The adapter starts the process on one thread, gives it Max threads
// while the one is busy, takes them back once the process is quiet, and
// puts back what it found when it stops.
func TestAdapterFollowsLoad(t *testing.T) {
	found := runtime.GOMAXPROCS(0)
	// Thresholds below the defaults: the test's process shares a small
	// machine with other tests, and may get only part of a core.
	stop := runAdapter(&Adapter{Max: 3, Interval: 20 * time.Millisecond, RaiseAt: 0.3, LowerAt: 0.1, LowerAfter: 200 * time.Millisecond})
	defer func() {
		stop()
		if got := runtime.GOMAXPROCS(0); got != found {
			t.Errorf("after Run: GOMAXPROCS is %d, want %d as found", got, found)
		}
	}()
	waitProcs(t, 1, "at start")

	stopBurning := burnCPUs(2)
	waitProcs(t, 3, "while busy")
	stopBurning()
	waitProcs(t, 1, "once quiet")
}

// runAdapter runs a until stop, which waits for Run to return and may be
// called again.
func runAdapter(a *Adapter) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.Run(ctx)
	}()
	return sync.OnceFunc(func() {
		cancel()
		<-done
	})
}

// burnCPUs keeps n goroutines busy until stop, which returns once they
// have ended.
func burnCPUs(n int) (stop func()) {
	var quit atomic.Bool
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for !quit.Load() {
				for i := 0; i < 1e5; i++ {
					_ = i * i
				}
			}
		})
	}
	return func() {
		quit.Store(true)
		wg.Wait()
	}
}

// Where the machine allows only one thread, the adapter has nothing to
// do: it returns, leaving GOMAXPROCS alone.
func TestAdapterWithOneThread(t *testing.T) {
	found := runtime.GOMAXPROCS(0)
	done := make(chan struct{})
	go func() {
		defer close(done)
		(&Adapter{Max: 1}).Run(context.Background())
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run with Max 1 did not return")
	}
	if got := runtime.GOMAXPROCS(0); got != found {
		t.Errorf("GOMAXPROCS is %d, want %d", got, found)
	}
}

func TestEnabledRespectsGOMAXPROCS(t *testing.T) {
	t.Setenv("GOMAXPROCS", "2")
	if Enabled() {
		t.Error("Enabled with GOMAXPROCS set in the environment")
	}
	os.Unsetenv("GOMAXPROCS") // t.Setenv puts back what was there
	if !Enabled() {
		t.Error("not Enabled without GOMAXPROCS in the environment")
	}
}

// Start's stop ends the adapter and puts GOMAXPROCS back.
func TestStartStop(t *testing.T) {
	found := runtime.GOMAXPROCS(0)
	stop := Start(nil)
	stop()
	if got := runtime.GOMAXPROCS(0); got != found {
		t.Errorf("after stop: GOMAXPROCS is %d, want %d", got, found)
	}
}
