package node

// Fault tests (issue 6): the tunnel path is cut, black-holed and reset by a
// relay (testutil.Relay) between a tunnel client and its server, the server
// restarts mid-transfer, a backend resets mid-response, a peer accepts
// streams but never answers, and random faults hit a thousand requests.
// Every request must end, within its deadline, either with intact bytes
// (checked by SHA-256) or with a clear failure.

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/proxy"
	"github.com/west-tunnel/west/internal/testutil"
	"github.com/west-tunnel/west/internal/tunnel"
)

// fastMux makes a dead tunnel show within a second or two.
var fastMux = tunnel.MuxOptions{KeepAliveInterval: 200 * time.Millisecond, KeepAliveTimeout: time.Second}

func faultOpts(t *testing.T) Options {
	return Options{Logger: testutil.Logger(t, slog.LevelWarn), Mux: fastMux, ShutdownGrace: 2 * time.Second}
}

// relayedCase1 starts use case 1 with a relay between L's tunnel client and
// G's tunnel server. extra is spliced into L's proxy object.
func relayedCase1(t *testing.T, backendURL, extra string) (g, l *Node, relay *testutil.Relay, tunnelURL string) {
	t.Helper()
	g = startNode(t, `{"west": {"nm": "fault.G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, faultOpts(t))
	relay = testutil.StartRelay(t, g.Addrs().Tunnel)
	tunnelURL = "ws://" + relay.Addr()
	l = startNode(t, fmt.Sprintf(`{
		"west": {"nm": "fault.L"},
		"proxy": {"http://127.0.0.1:0": {"ea": %q, %s "/px": {"ou": "%s/x"}}}
	}`, tunnelURL, extra, backendURL), faultOpts(t))
	return g, l, relay, tunnelURL
}

// testClient is an HTTP client of its own, so that its connections are
// closed when the test ends and timeouts are explicit.
func testClient(t *testing.T, timeout time.Duration) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: timeout}
}

// result is how one request ended.
type result struct {
	status  int           // 0 when no response arrived
	err     error         // transport or body error
	n       int64         // body bytes read
	intact  bool          // full length and the right digest
	elapsed time.Duration // until the body was read or the request failed
}

func (r result) String() string {
	if r.err != nil {
		return fmt.Sprintf("status %d after %d bytes, %s: %v", r.status, r.n, r.elapsed.Round(time.Millisecond), r.err)
	}
	return fmt.Sprintf("status %d, %d bytes (intact %v), %s", r.status, r.n, r.intact, r.elapsed.Round(time.Millisecond))
}

// hung reports whether the client gave up waiting.
func (r result) hung() bool {
	var ne net.Error
	return errors.Is(r.err, context.DeadlineExceeded) || errors.As(r.err, &ne) && ne.Timeout()
}

// fetchBig downloads size bytes of the pattern from the backend's /x/big
// through base and checks them.
func fetchBig(c *http.Client, base string, size int64) result {
	start := time.Now()
	resp, err := c.Get(fmt.Sprintf("%s/px/big?n=%d", base, size))
	if err != nil {
		return result{err: err, elapsed: time.Since(start)}
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	r := result{status: resp.StatusCode, err: err, n: n, elapsed: time.Since(start)}
	r.intact = err == nil && resp.StatusCode == http.StatusOK && n == size && string(h.Sum(nil)) == testutil.PatternSum(size)
	return r
}

// postEcho sends size bytes of the pattern to the backend's echo and
// checks what comes back.
func postEcho(c *http.Client, base string, size int64) result {
	start := time.Now()
	resp, err := c.Post(base+"/px/echo", "application/octet-stream", io.LimitReader(&testutil.Pattern{}, size))
	if err != nil {
		return result{err: err, elapsed: time.Since(start)}
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	r := result{status: resp.StatusCode, err: err, n: n, elapsed: time.Since(start)}
	r.intact = err == nil && resp.StatusCode == http.StatusOK && n == size && string(h.Sum(nil)) == testutil.PatternSum(size)
	return r
}

// waitOK polls GETs of a small body until one succeeds, and returns how
// long that took.
func waitOK(t *testing.T, c *http.Client, base string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var last result
	for time.Since(start) < within {
		if last = fetchBig(c, base, 1000); last.intact {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no successful request within %s; last: %v", within, last)
	return 0
}

// TestFaultStallDetected black-holes the tunnel path: the keepalive must
// declare the tunnel dead and the listener answer 503, and after the path
// heals requests must succeed again within seconds.
func TestFaultStallDetected(t *testing.T) {
	be := backend(t)
	_, l, relay, url := relayedCase1(t, be.URL, "")
	base := proxyURL(t, l)
	c := testClient(t, 20*time.Second)
	waitOK(t, c, base, 5*time.Second)

	relay.Stall()
	stalled := time.Now()
	var first5xx, first503 time.Duration
	var results []string
	for time.Since(stalled) < 15*time.Second {
		r := fetchBig(c, base, 1000)
		at := time.Since(stalled)
		results = append(results, fmt.Sprintf("at %s: %v", at.Round(time.Millisecond), r))
		if r.hung() {
			t.Fatalf("request hung while the path was stalled: %v", r)
		}
		if r.status >= 500 && first5xx == 0 {
			first5xx = at
		}
		if r.status == http.StatusServiceUnavailable {
			first503 = at
			break
		}
	}
	t.Logf("stalled path: first 5xx after %s, first 503 after %s (keepalive timeout %s); client %s",
		first5xx.Round(time.Millisecond), first503.Round(time.Millisecond), fastMux.KeepAliveTimeout, l.Client(url).Status().State)
	for _, r := range results {
		t.Log(r)
	}
	if limit := fastMux.KeepAliveTimeout + 2*time.Second; first5xx == 0 || first5xx > limit {
		t.Errorf("first failure answer after %s, want within %s of the stall", first5xx, limit)
	}
	if first503 == 0 {
		t.Fatalf("no 503 within 15s of the stall")
	}

	relay.Resume()
	d := waitOK(t, c, base, 12*time.Second)
	t.Logf("path healed: first success after %s", d.Round(time.Millisecond))
	if d > 5*time.Second {
		t.Errorf("requests succeeded again only %s after the path healed", d)
	}
}

// TestFaultDropReconnects resets the tunnel's TCP connection: the client
// must reconnect by itself and requests succeed again.
func TestFaultDropReconnects(t *testing.T) {
	be := backend(t)
	g, l, relay, url := relayedCase1(t, be.URL, "")
	base := proxyURL(t, l)
	c := testClient(t, 10*time.Second)
	waitOK(t, c, base, 5*time.Second)
	before := l.Client(url).Status().Connects

	if n := relay.Drop(); n != 1 {
		t.Fatalf("dropped %d tunnel connections, want 1", n)
	}
	d := waitOK(t, c, base, 10*time.Second)
	st := l.Client(url).Status()
	t.Logf("after a reset: first success after %s, client %s, connects %d -> %d", d.Round(time.Millisecond), st.State, before, st.Connects)
	if st.Connects != before+1 {
		t.Errorf("client connected %d times after the drop, want %d", st.Connects, before+1)
	}
	if g.Server().Session("fault.L") == nil {
		t.Errorf("server has no session for fault.L after the reconnect")
	}
	for i := range 20 {
		if r := postEcho(c, base, int64(1000*i)); !r.intact {
			t.Fatalf("request %d after the reconnect: %v", i, r)
		}
	}
}

// TestFaultServerRestartMidTransfer stops the tunnel server while a large
// body crosses it, then starts it again on the same address.
func TestFaultServerRestartMidTransfer(t *testing.T) {
	be := backend(t)
	var pre prebound
	gAddr := pre.addr(t)
	gConfig := fmt.Sprintf(`{"west": {"nm": "restart.G"}, "wsts": {"sp": "ws://%s"}}`, gAddr)
	gOpts := faultOpts(t)
	gOpts.Listen = pre.listen
	_, stopG := runNode(t, gConfig, gOpts)
	l := startNode(t, fmt.Sprintf(`{
		"west": {"nm": "restart.L"},
		"proxy": {"http://127.0.0.1:0": {"ea": "ws://%s", "/px": {"ou": "%s/x"}}}
	}`, gAddr, be.URL), faultOpts(t))
	base := proxyURL(t, l)
	c := testClient(t, 20*time.Second)
	waitOK(t, c, base, 5*time.Second)

	// Start a 256 MiB download, read a little of it, and stop G under it.
	const size = 256 << 20
	resp, err := c.Get(fmt.Sprintf("%s/px/big?n=%d", base, size))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("start of the large download: %v %v", resp, err)
	}
	h := sha256.New()
	if _, err := io.CopyN(h, resp.Body, 1<<20); err != nil {
		t.Fatalf("first MiB: %v", err)
	}
	stopped := time.Now()
	stopG()
	n, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	n += 1 << 20
	t.Logf("in-flight download after the server stopped: %d of %d bytes, %v, ended %s after the stop",
		n, size, err, time.Since(stopped).Round(time.Millisecond))
	switch {
	case n == size && err == nil && string(h.Sum(nil)) != testutil.PatternSum(size):
		t.Fatalf("in-flight download completed with corrupt bytes")
	case n == size && err == nil:
		t.Logf("the download completed before the server stopped; nothing to check")
	case err == nil:
		t.Errorf("short body (%d of %d) without an error", n, size)
	}

	// While G is down: a prompt 503.
	if r := fetchBig(c, base, 1000); r.status != http.StatusServiceUnavailable || r.elapsed > 4*time.Second {
		t.Errorf("while the server is down: %v, want a prompt 503", r)
	}

	// G comes back on the same address.
	restarted := time.Now()
	g2, _ := runNode(t, gConfig, faultOpts(t))
	deadline := time.Now().Add(10 * time.Second)
	for g2.Server().Session("restart.L") == nil {
		if time.Now().After(deadline) {
			t.Fatalf("client did not reconnect within 10s of the restart")
		}
		time.Sleep(10 * time.Millisecond)
	}
	up := time.Since(restarted)
	t.Logf("tunnel back %s after the server restarted", up.Round(time.Millisecond))
	// Every request started after the tunnel is back succeeds.
	for i := range 20 {
		if r := fetchBig(c, base, int64(100_000*i)); !r.intact {
			t.Fatalf("request %d after the restart: %v", i, r)
		}
	}
	if r := fetchBig(c, base, 32<<20); !r.intact {
		t.Fatalf("32 MiB after the restart: %v", r)
	}
}

// resettingBackend sends part of a declared body and then resets.
func resettingBackend(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/x/reset" {
			io.WriteString(w, "fine")
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(1<<20))
		io.CopyN(w, &testutil.Pattern{}, 100<<10)
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		conn.(*net.TCPConn).SetLinger(0)
		conn.Close()
	})}
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return "http://" + ln.Addr().String()
}

// TestFaultBackendResetsMidResponse: the client sees a truncated body and
// an error, at once, and the node goes on serving.
func TestFaultBackendResetsMidResponse(t *testing.T) {
	_, l := case1(t, resettingBackend(t), "")
	base := proxyURL(t, l)
	c := testClient(t, 10*time.Second)
	for i := range 5 {
		start := time.Now()
		resp, err := c.Get(base + "/px/reset")
		if err != nil {
			t.Logf("request %d: %v after %s", i, err, time.Since(start))
			continue
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		t.Logf("request %d: status %d, %d of %d bytes, %v, after %s", i, resp.StatusCode, n, 1<<20, err, time.Since(start).Round(time.Millisecond))
		if err == nil {
			t.Errorf("request %d: reset mid-response read as a complete body of %d bytes", i, n)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("request %d: the reset took %s to show", i, d)
		}
		// The node still serves.
		resp, err = c.Get(base + "/px/ok")
		if err != nil {
			t.Fatalf("after the reset: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "fine" {
			t.Fatalf("after the reset: %d %q", resp.StatusCode, body)
		}
	}
}

// TestFaultPeerNeverAnswers: a tunnel client accepts streams and never
// answers them; requests to it must fail with a status within the
// listener's timeout.
func TestFaultPeerNeverAnswers(t *testing.T) {
	const timeout = 2 * time.Second
	g := startNode(t, fmt.Sprintf(`{
		"west": {"nm": "mute.G"},
		"wsts": {"sp": "ws://127.0.0.1:0"},
		"proxy": {"http://127.0.0.1:0": {"en": "mute.L", "timeout": %q, "/m": {"ou": "http://127.0.0.1:9/"}}}
	}`, timeout), faultOpts(t))
	var served atomic.Int64
	mute := tunnel.NewClient(tunnel.ClientOptions{
		URL:  "ws://" + g.Addrs().Tunnel,
		Name: "mute.L",
		Mux:  fastMux,
		Handler: tunnel.StreamHandlerFunc(func(ctx context.Context, req *tunnel.Request) {
			served.Add(1)
			<-ctx.Done() // never Accept, never Reject
		}),
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { mute.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitUp(t, g, "mute.L")

	c := testClient(t, 30*time.Second)
	base := proxyURL(t, g)
	var wg sync.WaitGroup
	results := make([]result, 4)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			resp, err := c.Get(base + "/m")
			r := result{err: err}
			if err == nil {
				r.status = resp.StatusCode
				io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
				resp.Body.Close()
			}
			r.elapsed = time.Since(start)
			results[i] = r
		}()
	}
	wg.Wait()
	if served.Load() == 0 {
		t.Fatalf("the mute peer was never asked for a stream")
	}
	for i, r := range results {
		t.Logf("request %d to a mute peer: %v", i, r)
		if r.status < 500 || r.elapsed > timeout+2*time.Second {
			t.Errorf("request %d to a mute peer: %v; want a 5xx within the %s timeout", i, r, timeout)
		}
	}
}

// fastL is use case 1's L side composed from its parts the way node.New
// composes them, but with a tunnel client that reconnects at once: a
// node-built client backs off up to its 15s cap when it is dropped often,
// and node.Options has no knob for that.
func fastL(t *testing.T, tunnelURL, backendURL string, timeout time.Duration) (base string, client *tunnel.Client) {
	t.Helper()
	log := testutil.Logger(t, slog.LevelWarn)
	client = tunnel.NewClient(tunnel.ClientOptions{
		URL: tunnelURL, Name: "fast.L", Handler: &proxy.Far{Logger: log},
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, StableAfter: 50 * time.Millisecond,
		HandshakeTimeout: 2 * time.Second, ConnectWait: 2 * time.Second,
		Mux: fastMux, Logger: log,
	})
	u, err := url.Parse(backendURL + "/x")
	if err != nil {
		t.Fatal(err)
	}
	h := proxy.NewHTTP(proxy.HTTPOptions{
		Name: "fast.L", Peer: tunnelURL, Dialer: client, Timeout: timeout, Logger: log,
		Routes: []proxy.Route{{Path: "/px", Target: u}},
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); client.Run(ctx) }()
	go func() { defer wg.Done(); srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		h.CloseIdleConnections()
		cancel()
		wg.Wait()
	})
	return "http://" + ln.Addr().String(), client
}

// tally counts how requests ended.
type tally struct {
	mu       sync.Mutex
	ok       int
	statuses map[int]int    // failure statuses
	errs     map[string]int // transport and body errors, by kind
	corrupt  int            // complete, no error, wrong bytes
	hung     int            // the client's deadline fired
	slowest  time.Duration
	examples []string
}

func (ty *tally) add(r result) {
	ty.mu.Lock()
	defer ty.mu.Unlock()
	if ty.statuses == nil {
		ty.statuses, ty.errs = map[int]int{}, map[string]int{}
	}
	ty.slowest = max(ty.slowest, r.elapsed)
	switch {
	case r.intact:
		ty.ok++
	case r.hung():
		ty.hung++
		ty.example("hung", r)
	case r.err != nil:
		k := errKind(r)
		if ty.errs[k] == 0 {
			ty.example("first error of its kind", r)
		}
		ty.errs[k]++
	case r.status >= 500:
		ty.statuses[r.status]++
	default:
		ty.corrupt++
		ty.example("corrupt", r)
	}
}

// noResponse counts the requests the listener answered with no status.
func (ty *tally) noResponse() int {
	n := 0
	for k, v := range ty.errs {
		if strings.HasPrefix(k, "request") {
			n += v
		}
	}
	return n
}

func (ty *tally) example(kind string, r result) {
	if len(ty.examples) < 10 {
		ty.examples = append(ty.examples, kind+": "+r.String())
	}
}

func (ty *tally) String() string {
	return fmt.Sprintf("ok %d, failed with status %v, errors %v, corrupt %d, hung %d, slowest %s",
		ty.ok, ty.statuses, ty.errs, ty.corrupt, ty.hung, ty.slowest.Round(time.Millisecond))
}

// errKind names an error for counting.
func errKind(r result) string {
	where := "request"
	if r.status != 0 {
		where = fmt.Sprintf("body after %d", r.status)
	}
	switch {
	case errors.Is(r.err, io.ErrUnexpectedEOF):
		return where + ": unexpected EOF"
	case errors.Is(r.err, io.EOF):
		return where + ": EOF"
	case strings.Contains(r.err.Error(), "reset by peer"):
		return where + ": reset"
	}
	return where + ": other"
}

// injectFaults hits relay with a random fault every few hundred
// milliseconds until ctx ends, and leaves the path healthy.
func injectFaults(ctx context.Context, relay *testutil.Relay, every time.Duration, counts map[string]int) {
	defer func() {
		relay.Resume()
		relay.Refuse(false)
		relay.Delay(0)
	}()
	sleep := func(d time.Duration) bool {
		tm := time.NewTimer(d)
		defer tm.Stop()
		select {
		case <-tm.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for sleep(every/2 + rand.N(every)) {
		switch p := rand.N(10); {
		case p < 4:
			counts["drop"]++
			relay.Drop()
		case p < 7:
			counts["stall"]++
			relay.Stall()
			sleep(200*time.Millisecond + rand.N(1300*time.Millisecond))
			relay.Resume()
		case p < 9:
			counts["delay"]++
			relay.Delay(rand.N(20 * time.Millisecond))
			sleep(500 * time.Millisecond)
			relay.Delay(0)
		default:
			counts["refuse+drop"]++
			relay.Refuse(true)
			relay.Drop()
			sleep(300 * time.Millisecond)
			relay.Refuse(false)
		}
	}
}

// TestFaultRandomThousand sends 1000 requests, 20 at a time, while random
// faults hit the tunnel path: each must succeed with intact bytes or fail
// clearly, and none may outlive its deadline.
func TestFaultRandomThousand(t *testing.T) {
	const (
		requests    = 1000
		concurrency = 20
		timeout     = 2 * time.Second  // the listener's response timeout
		deadline    = 12 * time.Second // the client's: a request past it hung
	)
	be := backend(t)
	g := startNode(t, `{"west": {"nm": "rand.G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, faultOpts(t))
	relay := testutil.StartRelay(t, g.Addrs().Tunnel)
	base, client := fastL(t, "ws://"+relay.Addr(), be.URL, timeout)
	c := testClient(t, deadline)
	waitOK(t, c, base, 5*time.Second)

	ctx, cancel := context.WithCancel(context.Background())
	faults := map[string]int{}
	faultsDone := make(chan struct{})
	go func() { injectFaults(ctx, relay, 300*time.Millisecond, faults); close(faultsDone) }()

	var ty tally
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= requests; i = next.Add(1) {
				size := rand.Int64N(256 << 10)
				var r result
				if i%2 == 0 {
					r = fetchBig(c, base, size)
				} else {
					r = postEcho(c, base, size/4)
				}
				ty.add(r)
				if !r.intact {
					// As a client pauses before it tries again: an outage
					// answers in microseconds, and would otherwise take
					// all the requests before the tunnel can come back.
					time.Sleep(50 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	cancel()
	<-faultsDone
	t.Logf("%d requests in %s under faults %v: %v; relay %+v; tunnel connects %d",
		requests, time.Since(start).Round(time.Millisecond), faults, &ty, relay.Stats(), client.Status().Connects)
	for _, e := range ty.examples {
		t.Log(e)
	}
	if ty.hung != 0 || ty.corrupt != 0 {
		t.Errorf("%d requests hung past %s and %d came back corrupt", ty.hung, deadline, ty.corrupt)
	}
	if n := ty.noResponse(); n != 0 {
		t.Errorf("%d requests got no response at all from the listener", n)
	}
	if ty.ok < requests/10 {
		t.Errorf("only %d of %d requests succeeded: the faults left the tunnel down", ty.ok, requests)
	}
	if ty.ok+ty.hung+ty.corrupt == requests {
		t.Logf("no request failed: the faults missed")
	}
	waitOK(t, c, base, 5*time.Second)
}

// TestFaultHygiene: after 10 000 requests and 100 tunnel reconnects, and
// once everything has stopped, goroutines and descriptors are back where
// they were.
func TestFaultHygiene(t *testing.T) {
	if testing.Short() {
		t.Skip("10 000 requests and 100 reconnects skipped in -short")
	}
	// Registered first, these run last: after every node, relay and server
	// of the test has stopped.
	testutil.VerifyNoLeaks(t)
	testutil.VerifyFDs(t, 2)
	goroutinesBefore := runtime.NumGoroutine()
	fdsBefore, _ := testutil.CountFDs(0)
	t.Cleanup(func() {
		deadline := time.Now().Add(testutil.LeakWait)
		for runtime.NumGoroutine() > goroutinesBefore && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		n, _ := testutil.WaitFDs(fdsBefore, time.Second)
		t.Logf("after stop: goroutines %d (before %d), fds %d (before %d)", runtime.NumGoroutine(), goroutinesBefore, n, fdsBefore)
	})

	const (
		requests    = 10_000
		reconnects  = 100
		concurrency = 20
	)
	be := backend(t)
	g := startNode(t, `{"west": {"nm": "hyg.G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, faultOpts(t))
	relay := testutil.StartRelay(t, g.Addrs().Tunnel)
	base, client := fastL(t, "ws://"+relay.Addr(), be.URL, 2*time.Second)
	c := testClient(t, 10*time.Second)
	waitOK(t, c, base, 5*time.Second)

	var ty tally
	var next, ok atomic.Int64
	var dropsDone atomic.Bool
	var wg sync.WaitGroup
	start := time.Now()
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// At least requests requests, and on until the drops are done.
			for i := next.Add(1); i <= requests || !dropsDone.Load(); i = next.Add(1) {
				r := fetchBig(c, base, i%2000)
				if r.intact {
					ok.Add(1)
				}
				ty.add(r)
			}
		}()
	}
	// Drop the tunnel each time requests/(reconnects+1) more requests have
	// succeeded, and wait for the reconnect.
	var peakG, peakFD int
	for drops := 0; drops < reconnects; {
		if ok.Load() < int64(drops+1)*requests/(reconnects+1) {
			time.Sleep(time.Millisecond)
			continue
		}
		connects := client.Status().Connects
		relay.Drop()
		drops++
		for client.Status().Connects == connects {
			if time.Since(start) > time.Minute {
				t.Fatalf("no reconnect after drop %d", drops)
			}
			time.Sleep(2 * time.Millisecond)
		}
		peakG = max(peakG, runtime.NumGoroutine())
		if n, err := testutil.CountFDs(0); err == nil {
			peakFD = max(peakFD, n)
		}
	}
	dropsDone.Store(true)
	wg.Wait()
	connects := client.Status().Connects
	t.Logf("%d requests with %d reconnects in %s: %v; goroutines %d before, peak %d; fds %d before, peak %d",
		next.Load()-concurrency, connects-1, time.Since(start).Round(time.Millisecond), &ty, goroutinesBefore, peakG, fdsBefore, peakFD)
	if connects < reconnects+1 {
		t.Errorf("tunnel connected %d times, want %d", connects, reconnects+1)
	}
	if ty.hung != 0 || ty.corrupt != 0 {
		t.Errorf("%d requests hung, %d corrupt", ty.hung, ty.corrupt)
	}
}

// TestFaultSlowReaderBoundedMemory: a backend streams 512 MiB as fast as
// it can while the HTTP client reads slowly; flow control must hold the
// bytes back instead of buffering them.
func TestFaultSlowReaderBoundedMemory(t *testing.T) {
	be := backend(t)
	_, l := case1(t, be.URL, "")
	base := proxyURL(t, l)
	c := testClient(t, 30*time.Second)
	waitOK(t, c, base, 5*time.Second)

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseHeap := ms.HeapInuse

	const size = 512 << 20
	resp, err := c.Get(fmt.Sprintf("%s/px/big?n=%d", base, size))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("start: %v %v", resp, err)
	}
	defer resp.Body.Close()
	var read int64
	var peak uint64
	buf := make([]byte, 16<<10)
	start := time.Now()
	for time.Since(start) < time.Second {
		n, err := io.ReadFull(resp.Body, buf)
		read += int64(n)
		if err != nil {
			t.Fatalf("slow read after %d bytes: %v", read, err)
		}
		time.Sleep(10 * time.Millisecond)
		if read%(256<<10) == 0 {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
		}
	}
	runtime.ReadMemStats(&ms)
	peak = max(peak, ms.HeapInuse)
	sess := l.Client("ws://" + l.cfg.Proxies[0].ServerURL.Host).Status().Session
	var crossed int64
	if sess != nil {
		crossed = sess.Stats().BytesIn.Load()
	}
	t.Logf("slow reader: read %d KiB in 1s; %d KiB crossed the tunnel; heap in use %d MiB before, peak %d MiB",
		read>>10, crossed>>10, baseHeap>>20, peak>>20)
	if peak > 200<<20 {
		t.Errorf("heap in use peaked at %d MiB with a slow reader: the stream is not flow-controlled", peak>>20)
	}
	if crossed > read+64<<20 {
		t.Errorf("%d MiB crossed the tunnel for %d KiB read: the stream is not flow-controlled", crossed>>20, read>>10)
	}
	resp.Body.Close()
	// The node serves on.
	if r := fetchBig(c, base, 100_000); !r.intact {
		t.Fatalf("after the slow reader: %v", r)
	}
}

// TestDownloadDoesNotDelayOtherRequests: on a slow tunnel path, a
// download through a listener leaves the other requests to it waiting
// milliseconds, not behind the megabytes the download's window would let
// the far west queue (two seconds and more at this path's 8 MiB/s).
func TestDownloadDoesNotDelayOtherRequests(t *testing.T) {
	be := backend(t)
	_, l, relay, _ := relayedCase1(t, be.URL, "")
	base := proxyURL(t, l)
	c := testClient(t, 20*time.Second)
	waitOK(t, c, base, 5*time.Second)
	relay.Rate(8 << 20)

	ctx, cancel := context.WithCancel(context.Background())
	downloaded := make(chan int64, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "GET", base+"/px/big?n="+fmt.Sprint(64<<20), nil)
		resp, err := c.Do(req)
		if err != nil {
			downloaded <- 0
			return
		}
		defer resp.Body.Close()
		n, _ := io.Copy(io.Discard, resp.Body)
		downloaded <- n
	}()
	defer func() {
		cancel()
		<-downloaded
	}()
	time.Sleep(time.Second) // for the download to fill whatever it may

	for i := range 3 {
		r := fetchBig(c, base, 1000)
		if !r.intact {
			t.Fatalf("small request %d beside the download: %v", i, r)
		}
		t.Logf("small request %d beside the download: %v", i, r.elapsed.Round(time.Millisecond))
		if r.elapsed > time.Second {
			t.Fatalf("small request %d beside the download took %v, want well under 1s", i, r.elapsed.Round(time.Millisecond))
		}
	}
	select {
	case n := <-downloaded:
		downloaded <- n // for the deferred wait
		t.Fatalf("the download ended early, after %d bytes", n)
	default:
	}
}

// TestFaultSlowLinkBusyTunnelStaysUp: a transfer that saturates a slow
// tunnel path keeps bytes arriving, so the tunnel is not silent and must
// not be declared dead, however long a ping waits behind the data. Scaled
// down: keepalive and dead_after at their least (100 and 300 ms) over a
// 512 KiB/s path behave as the defaults (5 and 15 s) do over a link of
// tens of KiB/s, where one 256 KiB frame takes seconds.
func TestFaultSlowLinkBusyTunnelStaysUp(t *testing.T) {
	be := backend(t)
	opts := Options{Logger: testutil.Logger(t, slog.LevelWarn), ShutdownGrace: 2 * time.Second}
	g := startNode(t, `{"west": {"nm": "slow.G", "keepalive": "100ms", "dead_after": "300ms"},
		"wsts": {"sp": "ws://127.0.0.1:0"}}`, opts)
	relay := testutil.StartRelay(t, g.Addrs().Tunnel)
	url := "ws://" + relay.Addr()
	l := startNode(t, fmt.Sprintf(`{"west": {"nm": "slow.L", "keepalive": "100ms", "dead_after": "300ms"},
		"proxy": {"http://127.0.0.1:0": {"ea": %q, "/px": {"ou": "%s/x"}}}}`, url, be.URL), opts)
	base := proxyURL(t, l)
	c := testClient(t, 30*time.Second)
	waitOK(t, c, base, 5*time.Second)
	relay.Rate(512 << 10)
	before := l.Client(url).Status().Connects

	if r := fetchBig(c, base, 2<<20); !r.intact {
		t.Errorf("download over the slow path: %v", r)
	}
	if r := postEcho(c, base, 1<<20); !r.intact {
		t.Errorf("upload over the slow path: %v", r)
	}
	if after := l.Client(url).Status().Connects; after != before {
		t.Errorf("the busy tunnel was redialled %d times, want none", after-before)
	}
}

// TestFaultTunnelLossResetsRawTCP cuts the tunnel under two raw TCP
// connections, one downloading and one uploading without end. Neither the
// listener's client nor the target may take the cut for the other side's
// clean end of stream: a close-delimited transfer (nc, an FTP data
// connection, HTTP/1.0 without a length) would otherwise end truncated and
// look complete. Each must see its connection fail (a reset), as over a
// TCP connection whose path died no FIN would ever have come.
func TestFaultTunnelLossResetsRawTCP(t *testing.T) {
	target, uploadEnd := dlUploadTarget(t)
	g := startNode(t, `{"west": {"nm": "cut.G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, faultOpts(t))
	relay := testutil.StartRelay(t, g.Addrs().Tunnel)
	l := startNode(t, fmt.Sprintf(`{
		"west": {"nm": "cut.L"},
		"proxy": {"tcp://127.0.0.1:0": {"ea": "ws://%s", "ou": "tcp://%s"}}
	}`, relay.Addr(), target), faultOpts(t))
	var addr string
	for _, a := range l.Addrs().Proxies {
		addr = a
	}
	waitFor(t, "the tunnel", func() bool { return g.Server().Session("cut.L") != nil })

	down := downloadAndUpload(t, addr)

	relay.Drop() // the tunnel's TCP connection is gone
	wantBothReset(t, down, down, uploadEnd)
}

// wantBothReset checks, once a tunnel is lost under a download read from
// down (whose deadline is set on conn) and an upload whose target tells
// uploadEnd how its read ended, that neither side took the loss for the
// other's clean end of stream.
func wantBothReset(t *testing.T, conn net.Conn, down io.Reader, uploadEnd <-chan error) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, downErr := io.Copy(io.Discard, down)
	var upErr error
	select {
	case upErr = <-uploadEnd:
	case <-time.After(20 * time.Second):
		t.Fatal("the target's connection did not end")
	}
	t.Logf("the client's download ended with %v; the target's upload with %v", downErr, upErr)
	if downErr == nil {
		t.Errorf("the client read a clean end of stream when the tunnel was lost mid-download; want a reset")
	}
	if upErr == nil {
		t.Errorf("the target read a clean end of stream when the tunnel was lost mid-upload; want a reset")
	}
}

// TestFaultUDPStopOnStalledTunnel: G's udp:// listener sends through L,
// whose tunnel stalls (black-holed path) while a client sends. G, told to
// stop with a shutdown_grace of 1s, should stop within about the grace,
// as it does with a tcp:// connection on the same tunnel. Three things
// held it until the tunnel was declared dead (dead_after): a flow blocked
// writing to its stream; the drain notice, whose failed stream was closed
// waiting on the stalled queue; and the flow's own close, whose frames
// waited in the same queue while the listener's Close waited on the flow
// (it failed 4 runs in 6 without the race detector).
func TestFaultUDPStopOnStalledTunnel(t *testing.T) {
	sink := udpEcho(t)
	gUDP := freeUDPAddr(t)
	g, stop := runNode(t, fmt.Sprintf(`{"west": {"nm": "G", "shutdown_grace": "1s", "dead_after": "20s"}, "wsts": {"sp": "ws://127.0.0.1:0"},
		"proxy": {"udp://%s": {"en": "L", "ou": "udp://%s"}}}`, gUDP, sink), Options{})
	relay := testutil.StartRelay(t, g.Addrs().Tunnel)
	runNode(t, fmt.Sprintf(`{"west": {"nm": "L", "dead_after": "20s"}, "wstc": {"ws://%s": {}}}`, relay.Addr()), Options{})
	waitUp(t, g, "L")
	c, err := net.Dial("udp", gUDP)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := askUDP(c); got != "echo hi" {
		t.Fatalf("before the stall: %q", got)
	}
	relay.Stall()
	// Enough to fill the relay's and the kernel's buffers and the stream's
	// share of the tunnel's send queue.
	big := make([]byte, 60000)
	for range 1500 {
		c.Write(big)
		time.Sleep(time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	took := stop()
	if took > 5*time.Second {
		t.Errorf("G took %v to stop with a grace of 1s: its udp flow, blocked on the stalled tunnel, held it", took.Round(time.Millisecond))
	}
}

// TestFaultStopOnStalledTunnel is TestFaultUDPStopOnStalledTunnel for a
// tcp:// and an http:// listener: a client uploads without pause while
// the tunnel stalls, and G, told to stop with a shutdown_grace of 1s,
// must stop within about the grace, not when the tunnel is found dead.
func TestFaultStopOnStalledTunnel(t *testing.T) {
	sink, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	discard := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
	})}
	go discard.Serve(sink)
	t.Cleanup(func() { discard.Close() })

	for _, scheme := range []string{"tcp", "http"} {
		t.Run(scheme, func(t *testing.T) {
			var pre prebound
			listen := pre.addr(t)
			rule := fmt.Sprintf(`{"en": "L", "ou": "tcp://%s"}`, sink.Addr())
			if scheme == "http" {
				rule = fmt.Sprintf(`{"en": "L", "/": {"ou": "http://%s/"}}`, sink.Addr())
			}
			g, stop := runNode(t, fmt.Sprintf(`{"west": {"nm": "G", "shutdown_grace": "1s", "dead_after": "20s"}, "wsts": {"sp": "ws://127.0.0.1:0"},
				"proxy": {"%s://%s": %s}}`, scheme, listen, rule), withListen(Options{}, pre.listen))
			relay := testutil.StartRelay(t, g.Addrs().Tunnel)
			runNode(t, fmt.Sprintf(`{"west": {"nm": "L", "shutdown_grace": "1s", "dead_after": "20s"}, "wstc": {"ws://%s": {}}}`, relay.Addr()), Options{})
			waitUp(t, g, "L")

			c, err := net.Dial("tcp", listen)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if scheme == "http" {
				fmt.Fprintf(c, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", int64(1)<<40)
			}
			uploading := make(chan struct{})
			go func() {
				defer close(uploading)
				big := make([]byte, 256<<10)
				for {
					if _, err := c.Write(big); err != nil {
						return
					}
				}
			}()
			time.Sleep(300 * time.Millisecond)
			relay.Stall()
			time.Sleep(time.Second) // the buffers on the way fill
			took := stop()
			if took > 5*time.Second {
				t.Errorf("G took %v to stop with a grace of 1s: its %s client's upload, blocked on the stalled tunnel, held it", took.Round(time.Millisecond), scheme)
			}
			c.Close()
			<-uploading
		})
	}
}
