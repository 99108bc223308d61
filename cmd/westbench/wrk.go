//go:build linux

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// runWrk measures small GETs to url with wrk, one thread and conns
// connections, as the peers were measured: an untimed run for
// warmup, then a timed one of d. wrk counts whole seconds, so both are
// rounded up to one.
func runWrk(ctx context.Context, bin, url string, conns int, warmup, d time.Duration) (rpsResult, error) {
	var warm rpsResult
	if warmup > 0 {
		var err error
		if warm, err = wrkOnce(ctx, bin, url, conns, warmup); err != nil {
			return rpsResult{}, err
		}
	}
	r, err := wrkOnce(ctx, bin, url, conns, d)
	r.all = warm.requests + r.requests
	return r, err
}

func wrkOnce(ctx context.Context, bin, url string, conns int, d time.Duration) (rpsResult, error) {
	secs := max(1, int(math.Ceil(d.Seconds())))
	cmd := exec.CommandContext(ctx, bin, "-t1", "-c"+strconv.Itoa(conns), "-d"+strconv.Itoa(secs)+"s", "--latency", url)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return rpsResult{}, fmt.Errorf("wrk %s: %w\n%s", url, err, out)
	}
	r, err := parseWrk(string(out))
	if err != nil {
		return rpsResult{}, fmt.Errorf("wrk %s: %w\n%s", url, err, out)
	}
	if r.requests == 0 {
		return r, fmt.Errorf("wrk %s: no request succeeded\n%s", url, out)
	}
	return r, nil
}

// parseWrk reads what wrk --latency prints: the requests and time of
// "N requests in 4.00s", the 50% and 99% lines of the latency
// distribution, and any socket errors or non-2xx answers. wrk counts a
// non-2xx answer as a request; here it is an error, as with the Go load
// generator, so the rate counts only requests that succeeded.
func parseWrk(out string) (rpsResult, error) {
	var r rpsResult
	var haveCount, have50, have99 bool
	var failedAnswers int64
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) >= 4 && f[1] == "requests" && f[2] == "in":
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return r, fmt.Errorf("request count %q: %w", f[0], err)
			}
			el, err := parseWrkDuration(strings.TrimSuffix(f[3], ","))
			if err != nil {
				return r, err
			}
			r.requests, r.elapsed, haveCount = n, el, true
		case len(f) == 2 && (f[0] == "50%" || f[0] == "99%"):
			v, err := parseWrkDuration(f[1])
			if err != nil {
				return r, err
			}
			if f[0] == "50%" {
				r.p50, have50 = v, true
			} else {
				r.p99, have99 = v, true
			}
		case len(f) > 2 && f[0] == "Socket" && f[1] == "errors:":
			// "Socket errors: connect 0, read 0, write 0, timeout 0"
			for i := 3; i < len(f); i += 2 {
				n, err := strconv.ParseInt(strings.TrimSuffix(f[i], ","), 10, 64)
				if err != nil {
					return r, fmt.Errorf("socket errors %q: %w", sc.Text(), err)
				}
				r.errors += n
			}
			if r.errors > 0 && r.firstErr == nil {
				r.firstErr = errors.New(strings.TrimSpace(sc.Text()))
			}
		case len(f) == 5 && strings.Join(f[:4], " ") == "Non-2xx or 3xx responses:":
			n, err := strconv.ParseInt(f[4], 10, 64)
			if err != nil {
				return r, fmt.Errorf("non-2xx count %q: %w", f[4], err)
			}
			r.errors += n
			failedAnswers = n
			r.firstErr = errors.New(strings.TrimSpace(sc.Text()))
		}
	}
	if !haveCount || !have50 || !have99 {
		return r, errors.New("no request count or latency distribution in wrk's output")
	}
	if failedAnswers > r.requests {
		return r, fmt.Errorf("%d non-2xx answers of %d requests", failedAnswers, r.requests)
	}
	r.requests -= failedAnswers
	return r, nil
}

// parseWrkDuration reads wrk's times: 64.00us, 1.40ms, 4.00s, 1.02m.
func parseWrkDuration(s string) (time.Duration, error) {
	for _, u := range []struct {
		suffix string
		unit   time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"m", time.Minute}, {"s", time.Second}, {"h", time.Hour}} {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseFloat(num, 64)
			if err != nil || v < 0 {
				return 0, fmt.Errorf("wrk time %q", s)
			}
			return time.Duration(v * float64(u.unit)), nil
		}
	}
	return 0, fmt.Errorf("wrk time %q has no unit", s)
}
