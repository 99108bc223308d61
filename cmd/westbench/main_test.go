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

// TestWithWestKey: -stream-window reaches the west object of a config and
// leaves the rest as it was.
func TestWithWestKey(t *testing.T) {
	got, err := withWestKey(`{"west": {"nm": "a"}, "wstc": {"ws://h:1": {"ee": "yes"}}}`, "stream_window", "1MiB")
	if want := `{"west":{"nm":"a","stream_window":"1MiB"},"wstc":{"ws://h:1":{"ee":"yes"}}}`; err != nil || got != want {
		t.Errorf("got %s, %v; want %s", got, err, want)
	}
	for _, bad := range []string{`{"wsts": {}}`, `{"west": `} {
		if got, err := withWestKey(bad, "stream_window", "1MiB"); err == nil {
			t.Errorf("%s: got %s, want an error", bad, got)
		}
	}
}

func TestReportFloor(t *testing.T) {
	b := &bench{
		paths: []*path{{name: "direct"}, {name: "1 hop"}, {name: "1 hop, tcp"}, {name: "2 hops"}, {name: floorPath}},
		results: map[string]map[string][]float64{
			mRPSN: {"direct": {100}, "1 hop": {30, 30, 40}, "1 hop, tcp": {40}, "2 hops": {10}, floorPath: {40}},
			mP50:  {"direct": {10}, "1 hop": {60}, floorPath: {30}},
			mRTT:  {"direct": {200}, "1 hop": {190}},
		},
	}
	rows := []row{{label: "64 conns", metric: mRPSN}, {label: "p50", metric: mP50}, {label: "rtt", metric: mRTT}}
	var out strings.Builder
	b.reportFloor(&out, rows)
	got := out.String()
	for _, want := range []string{"1 hop/floor", "1 hop, tcp/floor", "0.75", "1.00", "2.00×"} {
		if !strings.Contains(got, want) {
			t.Errorf("floor table lacks %q:\n%s", want, got)
		}
	}
	// Two hops are not set against a one-hop floor, and the delayed path
	// has no floor.
	for _, unwanted := range []string{"2 hops", "rtt"} {
		if strings.Contains(got, unwanted) {
			t.Errorf("floor table has %q:\n%s", unwanted, got)
		}
	}
	// Without a floor there is no table.
	delete(b.results[mRPSN], floorPath)
	delete(b.results[mP50], floorPath)
	out.Reset()
	b.reportFloor(&out, rows)
	if out.Len() != 0 {
		t.Errorf("a table without a floor:\n%s", out.String())
	}
}

// TestParseProc reads RSS in kB and CPU in clock ticks from known lines,
// with a command name holding spaces and parentheses.
func TestParseProc(t *testing.T) {
	status := "Name:\twest\nVmPeak:\t  999999 kB\nVmHWM:\t   20480 kB\nVmRSS:\t   12345 kB\nThreads:\t7\n"
	if u := parseStatus([]byte(status)); u.RSS != 12345<<10 || u.HWM != 20480<<10 {
		t.Errorf("status: RSS %d, HWM %d; want %d and %d bytes", u.RSS, u.HWM, 12345<<10, 20480<<10)
	}
	// pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
	// majflt cmajflt utime stime cutime cstime ...
	stat := "4242 (we st) (x)) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 75 9 9 20 0 7 0 100 0 0\n"
	if cpu, err := parseStatCPU([]byte(stat)); err != nil || cpu != 3.25 {
		t.Errorf("stat: CPU %v, %v; want 3.25 s (325 ticks of utime+stime, not the children's)", cpu, err)
	}
	if _, err := parseStatCPU([]byte("4242 (west) S 1 2 3")); err == nil {
		t.Error("a short stat line parsed")
	}
}
