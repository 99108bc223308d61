package testutil

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// CountFDs returns how many file descriptors process pid has open; pid 0
// means this process. It needs /proc (Linux).
func CountFDs(pid int) (int, error) {
	dir := "/proc/self/fd"
	if pid != 0 {
		dir = fmt.Sprintf("/proc/%d/fd", pid)
	}
	f, err := os.Open(dir)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return 0, err
	}
	if pid == 0 {
		return len(names) - 1, nil // the descriptor reading the directory
	}
	return len(names), nil
}

// RSS returns the resident set size of process pid in bytes; pid 0 means
// this process. It needs /proc (Linux).
func RSS(pid int) (int64, error) {
	path := "/proc/self/status"
	if pid != 0 {
		path = fmt.Sprintf("/proc/%d/status", pid)
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse VmRSS %q: %w", v, err)
		}
		return kb << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no VmRSS in %s", path)
}

// VerifyFDs records how many descriptors this process has open now and,
// when t ends, fails t if more than slack others are still open after
// LeakWait. Call it before anything the test must clean up is started.
func VerifyFDs(t testing.TB, slack int) {
	t.Helper()
	base, err := CountFDs(0)
	if err != nil {
		t.Skipf("cannot count descriptors: %v", err)
	}
	t.Cleanup(func() {
		n, _ := WaitFDs(base+slack, LeakWait)
		if n > base+slack {
			t.Errorf("%d file descriptors open after the test, %d before (slack %d)", n, base, slack)
		}
	})
}

// WaitFDs polls until this process has at most max descriptors open or
// wait has passed, and returns the last count.
func WaitFDs(max int, wait time.Duration) (int, error) {
	deadline := time.Now().Add(wait)
	for {
		n, err := CountFDs(0)
		if err != nil || n <= max || time.Now().After(deadline) {
			return n, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}
