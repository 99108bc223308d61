// Package procs sets how many threads run Go code at once (GOMAXPROCS)
// from the load: one while a west is lightly loaded, every core the
// runtime would use once one is not enough.
//
// A request crosses several goroutines in each west: the listener's
// handler, the multiplexer's send and receive loops, the far side's pipe.
// With several threads, handing a request from one goroutine to the next
// often means waking another thread, which on a small virtual machine
// costs tens of microseconds; with one, it is a switch inside the Go
// scheduler. On a 2-core VM one thread took a one-connection request's
// median latency through a tunnel from 462 to 272 µs, but it also caps a
// west at one core, so the adapter gives the cores back when the one
// thread is busy.
package procs

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"time"
)

// Adapter moves GOMAXPROCS between 1 and Max with the process's CPU use.
type Adapter struct {
	// Max is the most threads; zero means the runtime's default (the
	// machine's cores, or the container's CPU limit), which the runtime
	// keeps up to date while the adapter gives it, and after Run.
	Max int
	// Interval is how often CPU use is measured; zero means 100ms.
	Interval time.Duration
	// RaiseAt is the share of one busy thread, over one interval, at
	// which Max threads are given; zero means 0.75.
	RaiseAt float64
	// LowerAt is the CPU use, in cores, under which one thread is enough;
	// zero means 0.4. It must stay under RaiseAt, or the adapter would
	// swing between the two.
	LowerAt float64
	// LowerAfter is how long use must stay under LowerAt before the
	// threads go back to one; zero means 3s.
	LowerAfter time.Duration
	// Logger is told of each change at debug level; nil discards.
	Logger *slog.Logger
}

// Enabled reports whether the adapter should run: not where the operator
// has set GOMAXPROCS, and not where the process's CPU time cannot be read.
func Enabled() bool {
	_, set := os.LookupEnv("GOMAXPROCS")
	return !set && cpuTimeWorks()
}

// Start runs an Adapter with its defaults, if Enabled, until the returned
// function is called.
func Start(log *slog.Logger) (stop func()) {
	if !Enabled() {
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		(&Adapter{Logger: log}).Run(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// Run adapts GOMAXPROCS until ctx ends, then puts back the setting it
// found.
//
// Setting GOMAXPROCS turns off the runtime's own updates of it, which
// follow a change of the CPUs the process may use or of its container's
// CPU limit (Go 1.25). With Max zero, and GOMAXPROCS not set in the
// environment, the adapter gives the threads back, and puts back what it
// found, with runtime.SetDefaultGOMAXPROCS, which turns the updates on
// again: only one thread is a setting of its own. A Max from a limit
// read at Run would stay while the limit is lowered (a container resized
// in place), or keep a process at its limit's old value after Run.
func (a *Adapter) Run(ctx context.Context) {
	_, envSet := os.LookupEnv("GOMAXPROCS")
	runtimeDefault := a.Max == 0 && !envSet
	a.withDefaults()
	if a.Max <= 1 {
		return // nothing to adapt, and nothing to touch
	}
	found := runtime.GOMAXPROCS(0)
	defer func() {
		if runtimeDefault {
			runtime.SetDefaultGOMAXPROCS()
		} else {
			runtime.GOMAXPROCS(found)
		}
	}()
	raise := func() { a.set(a.Max) }
	if runtimeDefault {
		raise = func() {
			runtime.SetDefaultGOMAXPROCS()
			a.Logger.Debug("scheduler threads set", "gomaxprocs", runtime.GOMAXPROCS(0))
		}
	}
	a.set(1)
	raised := false
	tick := time.NewTicker(a.Interval)
	defer tick.Stop()
	lastCPU, lastAt := cpuTime(), time.Now()
	var calmSince time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			cpu := cpuTime()
			used := (cpu - lastCPU).Seconds() / now.Sub(lastAt).Seconds()
			lastCPU, lastAt = cpu, now
			switch {
			case !raised && used >= a.RaiseAt:
				raise()
				raised = true
				calmSince = time.Time{}
			case raised && used < a.LowerAt:
				if calmSince.IsZero() {
					calmSince = now
				} else if now.Sub(calmSince) >= a.LowerAfter {
					a.set(1)
					raised = false
				}
			default:
				calmSince = time.Time{}
			}
		}
	}
}

func (a *Adapter) withDefaults() {
	if a.Max == 0 {
		a.Max = runtime.GOMAXPROCS(0)
	}
	if a.Interval == 0 {
		a.Interval = 100 * time.Millisecond
	}
	if a.RaiseAt == 0 {
		a.RaiseAt = 0.75
	}
	if a.LowerAt == 0 {
		a.LowerAt = 0.4
	}
	if a.LowerAfter == 0 {
		a.LowerAfter = 3 * time.Second
	}
	if a.Logger == nil {
		a.Logger = slog.New(slog.DiscardHandler)
	}
}

func (a *Adapter) set(n int) {
	runtime.GOMAXPROCS(n)
	a.Logger.Debug("scheduler threads set", "gomaxprocs", n)
}
