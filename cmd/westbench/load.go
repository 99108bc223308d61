//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// newTransport is a keep-alive HTTP/1.1 client transport for conns
// connections to one host, with large buffers and no compression.
func newTransport(conns int) *http.Transport {
	return &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
		ReadBufferSize:      64 << 10,
		WriteBufferSize:     64 << 10,
	}
}

// rpsResult is one timed run of small GETs.
type rpsResult struct {
	requests int64 // in the timed part
	elapsed  time.Duration
	all      int64         // every request that succeeded, warm-up included: the work the CPU read around the round did
	p50, p99 time.Duration // latency percentiles, when recorded
	errors   int64
	firstErr error
}

func (r rpsResult) rate() float64 { return float64(r.requests) / r.elapsed.Seconds() }

// percentile returns the p-th percentile (0..100) of sorted latencies.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p / 100)
	return sorted[i]
}

// runRPS sends small GETs to url from conns workers, each on its own
// kept-alive connection, for warmup and then for d, counting only the
// requests that finish within d. With record it keeps every latency.
func runRPS(ctx context.Context, url string, conns int, warmup, d time.Duration, record bool) (rpsResult, error) {
	tr := newTransport(conns)
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var (
		measuring, stop atomic.Bool
		errCount        atomic.Int64
		errOnce         sync.Once
		firstErr        error
		wg              sync.WaitGroup
	)
	counts := make([]int64, conns)
	all := make([]int64, conns)
	lats := make([][]time.Duration, conns)
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 4096)
			var lat []time.Duration
			if record {
				lat = make([]time.Duration, 0, 1<<16)
			}
			for !stop.Load() && ctx.Err() == nil {
				start := time.Now()
				err := getSmall(ctx, client, url, buf)
				if err != nil {
					errCount.Add(1)
					errOnce.Do(func() { firstErr = err })
					time.Sleep(10 * time.Millisecond)
					continue
				}
				all[i]++
				if measuring.Load() && !stop.Load() {
					counts[i]++
					if record {
						lat = append(lat, time.Since(start))
					}
				}
			}
			lats[i] = lat
		}()
	}
	sleep(ctx, warmup)
	errCount.Store(0)
	begin := time.Now()
	measuring.Store(true)
	sleep(ctx, d)
	stop.Store(true)
	elapsed := time.Since(begin)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return rpsResult{}, err
	}
	r := rpsResult{elapsed: elapsed, errors: errCount.Load(), firstErr: firstErr}
	var sorted []time.Duration
	for i := range conns {
		r.requests += counts[i]
		r.all += all[i]
		sorted = append(sorted, lats[i]...)
	}
	slices.Sort(sorted)
	r.p50, r.p99 = percentile(sorted, 50), percentile(sorted, 99)
	if r.requests == 0 {
		return r, fmt.Errorf("GET %s: no request succeeded: %v", url, firstErr)
	}
	return r, nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func getSmall(ctx context.Context, c *http.Client, url string, buf []byte) error {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := discard(resp.Body, buf); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// download fetches size bytes from base+"/download" on a fresh
// connection and returns the rate in MB/s (10^6 bytes per second).
func download(ctx context.Context, base string, size int64) (float64, error) {
	tr := newTransport(1)
	defer tr.CloseIdleConnections()
	url := base + "/download?n=" + strconv.FormatInt(size, 10)
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return 0, fmt.Errorf("download: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("download: %s", resp.Status)
	}
	n, err := discard(resp.Body, make([]byte, 256<<10))
	elapsed := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("download: after %d bytes: %w", n, err)
	}
	if n != size {
		return 0, fmt.Errorf("download: got %d of %d bytes", n, size)
	}
	return float64(size) / 1e6 / elapsed.Seconds(), nil
}

// downloadBeside runs download while a second client sends small GETs
// to the same base one after another on a connection of its own, and also
// returns their median latency. Through a tunnel both share it, so this
// is how long a short request waits behind a download in flight.
func downloadBeside(ctx context.Context, base string, size int64) (mbps float64, p50 time.Duration, err error) {
	tr := newTransport(1)
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	buf := make([]byte, 4096)
	// The first GET opens the connection, which is not what is measured.
	if err := getSmall(ctx, client, base+"/small", buf); err != nil {
		return 0, 0, err
	}
	var (
		done     atomic.Bool
		probeErr error
	)
	probed := make(chan []time.Duration, 1)
	go func() {
		var lats []time.Duration
		for !done.Load() {
			start := time.Now()
			if probeErr = getSmall(ctx, client, base+"/small", buf); probeErr != nil {
				break
			}
			if !done.Load() {
				lats = append(lats, time.Since(start))
			}
		}
		probed <- lats
	}()
	mbps, err = download(ctx, base, size)
	done.Store(true)
	lats := <-probed
	if err != nil {
		return 0, 0, err
	}
	if probeErr != nil {
		return 0, 0, fmt.Errorf("small GET beside the download: %w", probeErr)
	}
	if len(lats) == 0 {
		return 0, 0, fmt.Errorf("no small GET to %s finished during the download", base)
	}
	slices.Sort(lats)
	return mbps, percentile(lats, 50), nil
}

// upload posts size bytes to base+"/upload" on a fresh connection and
// returns the rate in MB/s.
func upload(ctx context.Context, base string, size int64) (float64, error) {
	tr := newTransport(1)
	defer tr.CloseIdleConnections()
	body := &patternReader{left: size}
	req, err := http.NewRequestWithContext(ctx, "POST", base+"/upload", body)
	if err != nil {
		return 0, err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	start := time.Now()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return 0, fmt.Errorf("upload: %w", err)
	}
	defer resp.Body.Close()
	reply, err := io.ReadAll(resp.Body)
	elapsed := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("upload: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("upload: %s: %s", resp.Status, reply)
	}
	if got, _ := strconv.ParseInt(string(reply), 10, 64); got != size {
		return 0, fmt.Errorf("upload: backend read %s of %d bytes", reply, size)
	}
	return float64(size) / 1e6 / elapsed.Seconds(), nil
}

// patternReader yields left bytes copied from chunk.
type patternReader struct{ left int64 }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.left <= 0 {
		return 0, io.EOF
	}
	n := copy(b[:min(int64(len(b)), p.left)], chunk)
	p.left -= int64(n)
	return n, nil
}

// openIdle opens n TCP connections to addr, 64 at a time, and waits for
// the one byte the sink sends on each, so every stream is known to reach
// the far end.
func openIdle(ctx context.Context, addr string, n int) ([]net.Conn, error) {
	conns := make([]net.Conn, n)
	var next atomic.Int64
	errs := make(chan error, 64)
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{Timeout: 10 * time.Second}
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				c, err := d.DialContext(ctx, "tcp", addr)
				if err == nil {
					c.SetReadDeadline(time.Now().Add(30 * time.Second))
					var one [1]byte
					_, err = io.ReadFull(c, one[:])
					c.SetReadDeadline(time.Time{})
					if err != nil {
						c.Close()
					}
				}
				if err != nil {
					errs <- fmt.Errorf("idle stream %d: %w", i, err)
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	close(errs)
	var first error
	failed := 0
	for e := range errs {
		if first == nil {
			first = e
		}
		failed++
	}
	if first != nil {
		closeAll(conns)
		if failed > 1 {
			return nil, fmt.Errorf("%w (and %d more dialers failed)", first, failed-1)
		}
		return nil, first
	}
	return conns, nil
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}
