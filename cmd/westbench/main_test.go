//go:build linux

package main

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"1GiB": 1 << 30, "256MiB": 256 << 20, "64KiB": 64 << 10, "1.5MiB": 3 << 19,
		"1GB": 1e9, "10MB": 1e7, "2KB": 2000, "7B": 7, "4096": 4096,
	} {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1MiB", "0", "1TiB", "ten"} {
		if n, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, n)
		}
	}
}

func TestMedianAndPercentile(t *testing.T) {
	if m := median([]float64{5, 1, 3}); m != 3 {
		t.Errorf("median of 5 1 3 = %v", m)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Errorf("median of 4 1 3 2 = %v", m)
	}
	lat := make([]time.Duration, 100)
	for i := range lat {
		lat[i] = time.Duration(i+1) * time.Millisecond
	}
	if p := percentile(lat, 50); p != 50*time.Millisecond {
		t.Errorf("p50 = %v", p)
	}
	if p := percentile(lat, 99); p != 99*time.Millisecond {
		t.Errorf("p99 = %v", p)
	}
}

func TestProcUsage(t *testing.T) {
	u, err := procUsage(os.Getpid())
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	if u.RSS <= 0 || u.HWM < u.RSS || u.CPU < 0 {
		t.Fatalf("usage of this process: %+v", u)
	}
}

func TestWindow(t *testing.T) {
	w := newWindow(100)
	if n := w.acquire(64); n != 64 {
		t.Fatalf("first acquire got %d, want 64", n)
	}
	if n := w.acquire(64); n != 36 {
		t.Fatalf("second acquire got %d, want the 36 left", n)
	}
	got := make(chan int)
	go func() { got <- w.acquire(64) }()
	w.release(10)
	if n := <-got; n != 10 {
		t.Fatalf("acquire after a release of 10 got %d", n)
	}
	go func() { got <- w.acquire(1) }()
	w.close()
	if n := <-got; n != 0 {
		t.Fatalf("acquire on a closed window got %d, want 0", n)
	}
}

func TestEnvFlags(t *testing.T) {
	o, err := parseFlags([]string{"-west-env", "GODEBUG=x=1", "-pair-env", "GOMAXPROCS=1,GOGC=200"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(o.westEnv, []string{"GODEBUG=x=1"}) || !slices.Equal(o.pairEnv, []string{"GOMAXPROCS=1", "GOGC=200"}) {
		t.Fatalf("west-env %q, pair-env %q", o.westEnv, o.pairEnv)
	}
	if o, err := parseFlags(nil); err != nil || o.westEnv != nil || o.pairEnv != nil {
		t.Fatalf("no env flags: %+v, %v", o, err)
	}
	for _, bad := range []string{"GOMAXPROCS", "=1", "GOMAXPROCS=1,"} {
		if _, err := parseFlags([]string{"-pair-env", bad}); err == nil || !strings.Contains(err.Error(), "-pair-env: want KEY=VALUE") {
			t.Errorf("-pair-env %q: %v, want a complaint", bad, err)
		}
	}
}
