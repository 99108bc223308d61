// Command westsoak runs a use-case-1 pair of wests in process, with a
// fault-injecting relay on the tunnel between them, and pushes a mix of
// requests through it for minutes while faults hit the tunnel. Every few
// seconds it prints successes, failures by cause, requests that hung past
// their deadline, and the process's goroutines, descriptors and memory.
// It exits 1 if any request hung or came back corrupt, the pair did not
// recover after the faults, or goroutines outlived the wests.
//
// Usage:
//
//	westsoak [-duration 2m] [-concurrency 16] [-fault-every 15s] [-report-every 10s] [-chain]
//
// It is not a unit test; see docs/SOAK.md.
package main

import (
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"runtime/metrics"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/west-tunnel/west/internal/config"
	"github.com/west-tunnel/west/internal/node"
	"github.com/west-tunnel/west/internal/testutil"
)

type options struct {
	duration    time.Duration
	concurrency int
	faultEvery  time.Duration
	reportEvery time.Duration
	timeout     time.Duration // the listener's response timeout
	deadline    time.Duration // a request still running past it hung
	keepalive   time.Duration
	large       int64
	chain       bool   // case 3: through a listener of G's to L2
	window      string // every west's "stream_window", when set
	pprofAddr   string // serve net/http/pprof here, when set
	verbose     bool
}

func main() {
	var o options
	flag.DurationVar(&o.duration, "duration", 2*time.Minute, "how long to run")
	flag.IntVar(&o.concurrency, "concurrency", 16, "requests in flight")
	flag.DurationVar(&o.faultEvery, "fault-every", 15*time.Second, "mean time between faults on the tunnel path; 0 disables faults")
	flag.DurationVar(&o.reportEvery, "report-every", 10*time.Second, "how often to print a report line")
	flag.DurationVar(&o.timeout, "timeout", 5*time.Second, "the listener's response timeout (its \"timeout\" key)")
	flag.DurationVar(&o.deadline, "deadline", 30*time.Second, "a request running longer than this counts as hung")
	flag.DurationVar(&o.keepalive, "keepalive", time.Second, "tunnel keepalive interval; the timeout is 5 times it")
	flag.Int64Var(&o.large, "large", 16<<20, "size in bytes of the large requests")
	flag.BoolVar(&o.chain, "chain", false, "case 3: L's requests go through a listener of G's to a third west, L2, a tunnel client of G, which dials the backend")
	flag.StringVar(&o.window, "stream-window", "", "every west's `stream_window` config key, such as 1MiB (default: west's own, 16MiB)")
	flag.StringVar(&o.pprofAddr, "pprof", "", "serve net/http/pprof on this `address`, such as 127.0.0.1:6060, to take heap profiles during a run")
	flag.BoolVar(&o.verbose, "v", false, "print the wests' warnings")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	hung, err := run(ctx, o, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "westsoak:", err)
		os.Exit(2)
	}
	if hung {
		os.Exit(1)
	}
}

// run soaks and reports whether it failed (see verdict).
func run(ctx context.Context, o options, out io.Writer) (bool, error) {
	// What runs now is not the soak's; whatever else still runs once the
	// soak has stopped everything has leaked.
	running := testutil.Baseline()
	logs := &logCounter{verbose: o.verbose}
	logger := slog.New(logs)
	// The keepalive goes in through the config keys an operator would use.
	deadAfter := 5 * o.keepalive
	west := func(name string) string {
		window := ""
		if o.window != "" {
			window = fmt.Sprintf(`, "stream_window": %q`, o.window)
		}
		return fmt.Sprintf(`"west": {"nm": %q, "keepalive": %q, "dead_after": %q%s}`, name, o.keepalive, deadAfter, window)
	}

	stopPprof := func() {}
	if o.pprofAddr != "" {
		var err error
		if stopPprof, err = servePprof(o.pprofAddr, out); err != nil {
			return false, err
		}
		defer stopPprof()
	}

	backendURL, stopBackend, err := startBackend()
	if err != nil {
		return false, err
	}
	defer stopBackend()

	gProxy := ""
	if o.chain {
		gProxy = fmt.Sprintf(`, "proxy": {"http://127.0.0.1:0": {"en": "soak.L2", "timeout": %q, "/s": {"ou": "%s/x"}}}`, o.timeout, backendURL)
	}
	g, stopG, err := startNode(`{`+west("soak.G")+`, "wsts": {"sp": "ws://127.0.0.1:0"}`+gProxy+`}`,
		node.Options{Logger: logger.With("west", "G")})
	if err != nil {
		return false, err
	}
	defer stopG()
	target, path := backendURL+"/x", "backend "+backendURL
	stopL2 := func() {}
	if o.chain {
		_, stopL2, err = startNode(fmt.Sprintf(`{%s, "wstc": {"ws://%s": {}}}`, west("soak.L2"), g.Addrs().Tunnel),
			node.Options{Logger: logger.With("west", "L2")})
		if err != nil {
			return false, err
		}
		defer stopL2()
		for wait := time.Now(); g.Server().Session("soak.L2") == nil; time.Sleep(10 * time.Millisecond) {
			if time.Since(wait) > 10*time.Second {
				return false, fmt.Errorf("L2 did not connect to G")
			}
		}
		for _, a := range g.Addrs().Proxies {
			target = "http://" + a + "/s"
			path = fmt.Sprintf("G listener %s -> L2 -> backend %s", a, backendURL)
		}
	}
	relay, err := testutil.NewRelay(g.Addrs().Tunnel)
	if err != nil {
		return false, err
	}
	defer relay.Close()
	tunnelURL := "ws://" + relay.Addr()
	l, stopL, err := startNode(fmt.Sprintf(`{
		%s,
		"proxy": {"http://127.0.0.1:0": {"ea": %q, "timeout": %q, "/s": {"ou": %q}}}
	}`, west("soak.L"), tunnelURL, o.timeout, target), node.Options{Logger: logger.With("west", "L")})
	if err != nil {
		return false, err
	}
	defer stopL()
	var base string
	for _, a := range l.Addrs().Proxies {
		base = "http://" + a
	}
	client := l.Client(tunnelURL)

	fmt.Fprintf(out, "westsoak: %s, %d in flight, a fault every ~%s, keepalive %s/%s, listener timeout %s, hung after %s\n",
		o.duration, o.concurrency, o.faultEvery, o.keepalive, deadAfter, o.timeout, o.deadline)
	fmt.Fprintf(out, "G tunnel %s <- relay %s <- L listener %s -> %s\n", g.Addrs().Tunnel, relay.Addr(), base, path)

	st := &stats{}
	tr := &http.Transport{MaxIdleConnsPerHost: o.concurrency, DisableCompression: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}

	runCtx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	var wg sync.WaitGroup
	for range o.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for runCtx.Err() == nil {
				st.add(doRequest(hc, base, o))
			}
		}()
	}
	faults := &faultLog{counts: map[string]int{}}
	if o.faultEvery > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			injectFaults(runCtx, relay, o, faults)
		}()
	}

	start := time.Now()
	report := func(final bool) {
		s := st.snapshot()
		fds, _ := testutil.CountFDs(0)
		rss, _ := testutil.RSS(0)
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		cs := client.Status()
		label := fmt.Sprintf("t=%-4s", time.Since(start).Round(time.Second))
		if final {
			label = "final "
		}
		fmt.Fprintf(out, "%s ok=%d fail=%d hung=%d corrupt=%d longest-outage=%s | %s | tunnel %s connects=%d faults=%s | goroutines=%d fds=%d rss=%dMiB heap=%dMiB live=%dMiB | west logs %s\n",
			label, s.ok, s.failed(), s.hung, s.corrupt, s.maxGap.Round(100*time.Millisecond), s.causes(), cs.State, cs.Connects, faults,
			runtime.NumGoroutine(), fds, rss>>20, ms.HeapInuse>>20, liveHeap()>>20, logs)
	}
	tick := time.NewTicker(o.reportEvery)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
loop:
	for {
		select {
		case <-tick.C:
			report(false)
		case <-done:
			break loop
		}
	}
	tick.Stop()

	// Heal the path and check the pair recovers.
	relay.Resume()
	relay.Refuse(false)
	relay.Delay(0)
	recovered := false
	healStart := time.Now()
	for time.Since(healStart) < 30*time.Second && ctx.Err() == nil {
		if r := doOne(hc, base, "get", 1000, o.deadline); r.cause == "ok" {
			recovered = true
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	report(true)
	if recovered {
		fmt.Fprintf(out, "recovery after the last fault: first success %s after healing\n", time.Since(healStart).Round(time.Millisecond))
	} else {
		fmt.Fprintf(out, "recovery after the last fault: NO success within 30s of healing\n")
	}
	for _, e := range st.examples {
		fmt.Fprintln(out, "  example:", e)
	}

	// Stop everything and look at what is left.
	tr.CloseIdleConnections()
	stopL()
	relay.Close()
	stopL2()
	stopG()
	stopBackend()
	stopPprof()
	left := testutil.Leaked(running)
	fds, _ := testutil.CountFDs(0)
	fmt.Fprintf(out, "after stopping the wests: goroutines=%d fds=%d\n", runtime.NumGoroutine(), fds)
	if len(left) > 0 {
		fmt.Fprint(out, testutil.FormatLeaks(left))
	}

	line, bad := verdict(st.snapshot(), recovered, len(left))
	fmt.Fprintln(out, line)
	return bad, nil
}

// verdict is the soak's last line, and whether it failed: a request hung
// or came back corrupt, the pair did not recover once the faults stopped,
// or goroutines were left running after everything had stopped.
func verdict(s snapshot, recovered bool, leaked int) (string, bool) {
	var why []string
	if s.hung > 0 || s.corrupt > 0 {
		why = append(why, fmt.Sprintf("%d hung, %d corrupt", s.hung, s.corrupt))
	}
	if !recovered {
		why = append(why, "no success after healing")
	}
	if leaked > 0 {
		why = append(why, fmt.Sprintf("%d goroutines left after stopping", leaked))
	}
	if len(why) > 0 {
		return "FAIL: " + strings.Join(why, "; "), true
	}
	return "PASS: no request hung or came back corrupt, the pair recovered, nothing was left running", false
}

// liveHeap returns the heap the last garbage collection found reachable.
// Unlike HeapInuse it leaves out garbage not yet collected, so a leak shows
// as a rise in it across report lines.
func liveHeap() uint64 {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(sample)
	if sample[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return sample[0].Value.Uint64()
}

// servePprof serves the runtime's profiles on addr, so that heap profiles
// taken minutes apart can be compared with go tool pprof -diff_base.
func servePprof(addr string, out io.Writer) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening for pprof: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan struct{})
	go func() { srv.Serve(ln); close(served) }()
	fmt.Fprintf(out, "pprof: http://%s/debug/pprof/\n", ln.Addr())
	return func() { srv.Close(); <-served }, nil
}

// startNode starts a west on js and returns it with its stop function.
func startNode(js string, opts node.Options) (*node.Node, func(), error) {
	cfg, err := config.Parse([]byte(js))
	if err != nil {
		return nil, nil, err
	}
	n, err := node.New(cfg, opts)
	if err != nil {
		return nil, nil, err
	}
	if err := n.Start(); err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { n.Run(ctx); close(done) }()
	var once sync.Once
	return n, func() { once.Do(func() { cancel(); <-done }) }, nil
}

// startBackend serves /x/big?n= (n pattern bytes with a Content-Length),
// /x/echo (the body back, full duplex) and /x/stream?n= (n pattern bytes in
// flushed 16 KiB chunks, no Content-Length).
func startBackend() (string, func(), error) {
	mux := http.NewServeMux()
	mux.HandleFunc("/x/big", func(w http.ResponseWriter, r *http.Request) {
		var n int64
		fmt.Sscan(r.URL.Query().Get("n"), &n)
		w.Header().Set("Content-Length", fmt.Sprint(n))
		io.CopyN(w, &testutil.Pattern{}, n)
	})
	mux.HandleFunc("/x/echo", func(w http.ResponseWriter, r *http.Request) {
		http.NewResponseController(w).EnableFullDuplex()
		io.Copy(w, r.Body)
	})
	mux.HandleFunc("/x/stream", func(w http.ResponseWriter, r *http.Request) {
		var n int64
		fmt.Sscan(r.URL.Query().Get("n"), &n)
		p := &testutil.Pattern{}
		f := w.(http.Flusher)
		for n > 0 && r.Context().Err() == nil {
			c, _ := io.CopyN(w, p, min(n, 16<<10))
			n -= c
			f.Flush()
			time.Sleep(time.Millisecond)
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }()
	var once sync.Once
	return "http://" + ln.Addr().String(), func() { once.Do(func() { srv.Close(); <-done }) }, nil
}

// outcome is how one request ended.
type outcome struct {
	cause   string // "ok", "status 503", "truncated", "no response", "corrupt", "hung", ...
	detail  string
	elapsed time.Duration
}

// doRequest sends one request of the mix.
func doRequest(hc *http.Client, base string, o options) outcome {
	switch p := rand.N(100); {
	case p < 40:
		return doOne(hc, base, "get", 1+rand.Int64N(64<<10), o.deadline)
	case p < 65:
		return doOne(hc, base, "post", 1+rand.Int64N(256<<10), o.deadline)
	case p < 75:
		return doOne(hc, base, "get", o.large, o.deadline)
	case p < 85:
		return doOne(hc, base, "post", o.large/4, o.deadline)
	default:
		return doOne(hc, base, "stream", 1+rand.Int64N(1<<20), o.deadline)
	}
}

func doOne(hc *http.Client, base, kind string, size int64, deadline time.Duration) outcome {
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	var req *http.Request
	switch kind {
	case "get":
		req, _ = http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/s/big?n=%d", base, size), nil)
	case "post":
		req, _ = http.NewRequestWithContext(ctx, "POST", base+"/s/echo", io.LimitReader(&testutil.Pattern{}, size))
		req.ContentLength = size
	case "stream":
		req, _ = http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/s/stream?n=%d", base, size), nil)
	}
	o := func(cause, detail string) outcome {
		return outcome{cause: kind + " " + cause, detail: detail, elapsed: time.Since(start)}
	}
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return o("hung", err.Error())
		}
		return o("no response", err.Error())
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return o(fmt.Sprintf("status %d", resp.StatusCode), resp.Status)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	switch {
	case err != nil && ctx.Err() != nil:
		return o("hung", fmt.Sprintf("body after %d of %d bytes: %v", n, size, err))
	case err != nil:
		return o("truncated", fmt.Sprintf("%d of %d bytes: %v", n, size, err))
	case n != size:
		return o("corrupt", fmt.Sprintf("%d of %d bytes without an error", n, size))
	case string(h.Sum(nil)) != testutil.PatternSum(size):
		return o("corrupt", fmt.Sprintf("%d bytes, wrong digest", n))
	}
	return outcome{cause: "ok", elapsed: time.Since(start)}
}

// stats counts outcomes.
type stats struct {
	mu       sync.Mutex
	ok       int
	hung     int
	corrupt  int
	byCause  map[string]int
	examples []string
	seen     map[string]bool
	lastOK   time.Time     // when the latest success ended
	maxGap   time.Duration // the longest time without a success
}

type snapshot struct {
	ok, hung, corrupt int
	byCause           map[string]int
	maxGap            time.Duration
}

func (s *stats) add(o outcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byCause == nil {
		s.byCause, s.seen = map[string]int{}, map[string]bool{}
	}
	switch {
	case o.cause == "ok":
		s.ok++
		now := time.Now()
		if !s.lastOK.IsZero() {
			s.maxGap = max(s.maxGap, now.Sub(s.lastOK))
		}
		s.lastOK = now
		return
	case strings.HasSuffix(o.cause, "hung"):
		s.hung++
	case strings.HasSuffix(o.cause, "corrupt"):
		s.corrupt++
	}
	s.byCause[o.cause]++
	if !s.seen[o.cause] && len(s.examples) < 20 {
		s.seen[o.cause] = true
		s.examples = append(s.examples, fmt.Sprintf("%s after %s: %s", o.cause, o.elapsed.Round(time.Millisecond), o.detail))
	}
}

func (s *stats) snapshot() snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := make(map[string]int, len(s.byCause))
	for k, v := range s.byCause {
		c[k] = v
	}
	gap := s.maxGap
	if !s.lastOK.IsZero() {
		gap = max(gap, time.Since(s.lastOK))
	}
	return snapshot{ok: s.ok, hung: s.hung, corrupt: s.corrupt, byCause: c, maxGap: gap}
}

func (s snapshot) failed() int {
	n := 0
	for _, v := range s.byCause {
		n += v
	}
	return n
}

func (s snapshot) causes() string {
	if len(s.byCause) == 0 {
		return "no failures"
	}
	return formatCounts(s.byCause)
}

// formatCounts writes counts as "key:n key:n", keys sorted.
func formatCounts(counts map[string]int) string {
	keys := slices.Sorted(maps.Keys(counts))
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s:%d", k, counts[k]))
	}
	return strings.Join(parts, " ")
}

// faultLog counts the faults injected.
type faultLog struct {
	mu     sync.Mutex
	counts map[string]int
}

func (f *faultLog) add(kind string) {
	f.mu.Lock()
	f.counts[kind]++
	f.mu.Unlock()
}

func (f *faultLog) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return "{" + formatCounts(f.counts) + "}"
}

// injectFaults hits the relay with a random fault about every o.faultEvery
// until ctx ends.
func injectFaults(ctx context.Context, relay *testutil.Relay, o options, log *faultLog) {
	sleep := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for sleep(o.faultEvery/2 + rand.N(o.faultEvery)) {
		switch p := rand.N(10); {
		case p < 4:
			log.add("drop")
			relay.Drop()
		case p < 7:
			// Up to twice the keepalive timeout: some stalls heal before the
			// tunnel is declared dead, others do not.
			log.add("stall")
			relay.Stall()
			sleep(rand.N(10 * o.keepalive))
			relay.Resume()
		case p < 9:
			log.add("delay")
			relay.Delay(20*time.Millisecond + rand.N(80*time.Millisecond))
			sleep(3 * time.Second)
			relay.Delay(0)
		default:
			log.add("refuse")
			relay.Refuse(true)
			relay.Drop()
			sleep(2 * time.Second)
			relay.Refuse(false)
		}
	}
}

// logCounter is a slog handler that counts the wests' warnings and errors,
// and the HTTP servers' recovered panics (logged at debug level), and
// prints warnings when verbose.
type logCounter struct {
	verbose bool
	warn    atomic.Int64
	errs    atomic.Int64
	panics  atomic.Int64
}

// Enabled leaves out the access log, one line per request.
func (h *logCounter) Enabled(_ context.Context, l slog.Level) bool { return l != node.LevelVerbose }

func (h *logCounter) Handle(_ context.Context, r slog.Record) error {
	switch {
	case r.Level >= slog.LevelError:
		h.errs.Add(1)
	case r.Level >= slog.LevelWarn:
		h.warn.Add(1)
	}
	if strings.Contains(r.Message, "panic serving") {
		h.panics.Add(1)
		if first, _, _ := strings.Cut(r.Message, "\n"); h.verbose {
			fmt.Fprintln(os.Stderr, "west:", first)
		}
		return nil
	}
	if h.verbose && r.Level >= slog.LevelWarn {
		var b strings.Builder
		fmt.Fprintf(&b, "%s %s %s", r.Time.Format("15:04:05.000"), r.Level, r.Message)
		r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s", a); return true })
		fmt.Fprintln(os.Stderr, b.String())
	}
	return nil
}

func (h *logCounter) WithAttrs(attrs []slog.Attr) slog.Handler { return &child{h, attrs} }

func (h *logCounter) WithGroup(string) slog.Handler { return h }

func (h *logCounter) String() string {
	return fmt.Sprintf("warn=%d error=%d http-panics=%d", h.warn.Load(), h.errs.Load(), h.panics.Load())
}

// child carries attributes while sharing the counters.
type child struct {
	root  *logCounter
	attrs []slog.Attr
}

func (c *child) Enabled(ctx context.Context, l slog.Level) bool { return c.root.Enabled(ctx, l) }

func (c *child) Handle(ctx context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(c.attrs...)
	return c.root.Handle(ctx, r)
}

func (c *child) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &child{c.root, append(slices.Clip(c.attrs), attrs...)}
}

func (c *child) WithGroup(string) slog.Handler { return c }
