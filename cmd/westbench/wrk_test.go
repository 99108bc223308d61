//go:build linux

package main

import (
	"strings"
	"testing"
	"time"
)

// wrkSample is what wrk 4.1.0 printed here for 1s against the backend.
const wrkSample = `Running 1s test @ http://127.0.0.1:18080/small
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    86.66us  104.30us   1.98ms   95.55%
    Req/Sec    23.54k     2.75k   26.70k    81.82%
  Latency Distribution
     50%   64.00us
     75%  100.00us
     90%  141.00us
     99%    1.02ms
  25707 requests in 1.10s, 2.79MB read
Requests/sec:  23370.47
Transfer/sec:      2.54MB
`

func TestParseWrk(t *testing.T) {
	r, err := parseWrk(wrkSample)
	if err != nil {
		t.Fatal(err)
	}
	if r.requests != 25707 || r.elapsed != 1100*time.Millisecond || r.p50 != 64*time.Microsecond ||
		r.p99 != 1020*time.Microsecond || r.errors != 0 {
		t.Fatalf("parsed %+v", r)
	}

	failing := strings.Replace(wrkSample, "Requests/sec:",
		"  Socket errors: connect 0, read 3, write 0, timeout 2\n  Non-2xx or 3xx responses: 7\nRequests/sec:", 1)
	r, err = parseWrk(failing)
	if err != nil {
		t.Fatal(err)
	}
	if r.errors != 12 || r.firstErr == nil {
		t.Fatalf("errors %d (%v), want 12", r.errors, r.firstErr)
	}
	// The non-2xx answers are not in the rate.
	if r.requests != 25707-7 {
		t.Fatalf("requests %d, want the 25707 less the 7 non-2xx", r.requests)
	}
}

func TestParseWrkRejects(t *testing.T) {
	for name, out := range map[string]string{
		"empty":                 "",
		"no p50":                strings.Replace(wrkSample, "     50%   64.00us\n", "", 1),
		"no count":              strings.Replace(wrkSample, "  25707 requests in 1.10s, 2.79MB read\n", "", 1),
		"bad count":             strings.Replace(wrkSample, "25707 requests", "lots requests", 1),
		"bad time":              strings.Replace(wrkSample, "64.00us", "64.00ps", 1),
		"unitless time":         strings.Replace(wrkSample, "64.00us", "64.00", 1),
		"bad errors":            strings.Replace(wrkSample, "Requests/sec:", "  Socket errors: connect x, read 0\nRequests/sec:", 1),
		"more failed than sent": strings.Replace(wrkSample, "Requests/sec:", "  Non-2xx or 3xx responses: 25708\nRequests/sec:", 1),
	} {
		if r, err := parseWrk(out); err == nil {
			t.Errorf("%s: parsed %+v, want an error", name, r)
		}
	}
}

func TestLoadFlag(t *testing.T) {
	if o, err := parseFlags([]string{"-load", "go"}); err != nil || o.wrk != "" {
		t.Fatalf("-load go: %+v, %v", o, err)
	}
	if _, err := parseFlags([]string{"-load", "ab"}); err == nil || !strings.Contains(err.Error(), "want go or wrk") {
		t.Fatalf("-load ab: %v, want a complaint naming go and wrk", err)
	}
	t.Setenv("PATH", t.TempDir())
	if _, err := parseFlags([]string{"-load", "wrk"}); err == nil || !strings.Contains(err.Error(), "wrk") {
		t.Fatalf("-load wrk with no wrk on PATH: %v, want an error", err)
	}
}
