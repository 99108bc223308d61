package procs

import (
	"os"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestAdapterKeepsRuntimeUpdates: with Max zero, the runtime goes on
// following the CPUs the process may use (as it follows a container's
// CPU limit) while the adapter gives it the threads, and after Run. Here
// the CPUs are the process's affinity, which a test can change.
func TestAdapterKeepsRuntimeUpdates(t *testing.T) {
	if _, set := os.LookupEnv("GOMAXPROCS"); set {
		t.Skip("GOMAXPROCS is set in the environment")
	}
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		t.Skipf("affinity: %v", err)
	}
	runtime.SetDefaultGOMAXPROCS() // other tests set it
	found := runtime.GOMAXPROCS(0)
	if found < 2 || all.Count() < 2 {
		t.Skipf("GOMAXPROCS %d over %d CPUs: the test needs two", found, all.Count())
	}
	var one unix.CPUSet
	for cpu := 0; ; cpu++ {
		if all.IsSet(cpu) {
			one.Set(cpu)
			break
		}
	}
	if err := setAffinity(&one); err != nil {
		t.Skipf("affinity: %v", err)
	}
	t.Cleanup(func() {
		if err := setAffinity(&all); err != nil {
			t.Errorf("affinity not put back: %v", err)
		}
		runtime.SetDefaultGOMAXPROCS()
	})
	if err := setAffinity(&all); err != nil {
		t.Fatal(err)
	}

	// Low thresholds, as in TestAdapterFollowsLoad; never back to one
	// thread on its own, so that only the runtime lowers GOMAXPROCS.
	stop := runAdapter(&Adapter{Interval: 20 * time.Millisecond, RaiseAt: 0.3, LowerAt: 0.1, LowerAfter: time.Hour})
	defer stop()
	waitProcs(t, 1, "at start")

	defer burnCPUs(2)()
	waitProcs(t, found, "while busy")
	if err := setAffinity(&one); err != nil {
		t.Fatal(err)
	}
	waitProcs(t, 1, "while busy, with one CPU left")
	if err := setAffinity(&all); err != nil {
		t.Fatal(err)
	}
	waitProcs(t, found, "while busy, with the CPUs back")

	stop()
	if err := setAffinity(&one); err != nil {
		t.Fatal(err)
	}
	waitProcs(t, 1, "after Run, with one CPU left")
	if err := setAffinity(&all); err != nil {
		t.Fatal(err)
	}
	waitProcs(t, found, "after Run, with the CPUs back")
}

// setAffinity gives every thread of the process the CPUs in set, until a
// pass over the threads finds no new one (a thread inherits its
// creator's CPUs).
func setAffinity(set *unix.CPUSet) error {
	var seen []int
	for {
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		fresh := false
		for _, e := range ents {
			tid, err := strconv.Atoi(e.Name())
			if err != nil || slices.Contains(seen, tid) {
				continue
			}
			fresh = true
			seen = append(seen, tid)
			if err := unix.SchedSetaffinity(tid, set); err != nil && err != unix.ESRCH {
				return err
			}
		}
		if !fresh {
			return nil
		}
	}
}
