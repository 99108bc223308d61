//go:build linux

// Command westbench measures west against a direct connection on
// loopback: it builds west, starts a backend HTTP server in a process of
// its own, starts wests in the seed's one-hop shape, the same pair with a
// tcp:// listener instead of an http:// one, the case 3 chain (two hops)
// and two plain relays (the floor), and alternates direct and tunnelled
// rounds of each measurement in the same run, printing medians and their
// ratio to direct.
//
// Usage:
//
//	go run ./cmd/westbench [-quick] [-rounds 5] [-duration 5s] [-download 1GiB]
//	    [-upload 256MiB] [-rtt 20ms] [-idle-streams 10000] [-load go|wrk]
//	    [-chain=false] [-tcp=false] [-floor=false] [-west-env K=V,...]
//	    [-pair-env K=V,...] [-profile DIR]
//
// See docs/BENCHMARKS.md.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	rounds      int
	duration    time.Duration
	warmup      time.Duration
	conns       int
	download    int64
	upload      int64
	chain       bool
	tcp         bool
	floor       bool
	rtt         time.Duration
	rttWindow   int64
	rttDownload int64
	idleStreams int
	idleTunnels int
	westBin     string
	profileDir  string
	keep        bool
	only        map[string]bool // metrics to run; nil runs all
	westEnv     []string        // extra environment of the wests
	window      string          // every west's "stream_window", when set
	pairEnv     []string        // environment of an extra one-hop pair, when set
	wrk         string          // wrk's path when it generates the requests/s load
}

func main() {
	if len(os.Args) > 1 && slices.Contains([]string{nodeMode, sinkMode, relayMode, tunnelsMode, backendMode}, os.Args[1]) {
		os.Exit(runChild(os.Args[1], os.Args[2:]))
	}
	opts, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	err = run(ctx, opts)
	stop()
	if err != nil {
		if errors.Is(err, context.Canceled) {
			err = errors.New("interrupted")
		}
		fmt.Fprintf(os.Stderr, "westbench: %v\n", err)
		os.Exit(1)
	}
}

// runChild runs one of the modes in which westbench re-executes itself,
// and returns the exit status.
func runChild(mode string, args []string) int {
	var err error
	switch mode {
	case nodeMode:
		err = runNode(args)
	case relayMode:
		err = runRelay(args)
	case backendMode:
		err = runBackend()
	case tunnelsMode:
		err = runTunnels(args)
	default:
		err = runSink()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "westbench %s: %v\n", mode, err)
		return 1
	}
	return 0
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("westbench", flag.ContinueOnError)
	quick := fs.Bool("quick", false, "a fast smoke run: 1 round of 1s, small transfers, 1000 idle streams (flags given explicitly still win)")
	fs.IntVar(&o.rounds, "rounds", 5, "rounds of each measurement; the table shows medians")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "timed length of each requests/s round")
	fs.DurationVar(&o.warmup, "warmup", 500*time.Millisecond, "untimed load before each requests/s round")
	fs.IntVar(&o.conns, "conns", 64, "connections of the many-connection requests/s test")
	download := fs.String("download", "1GiB", "size of the download")
	upload := fs.String("upload", "256MiB", "size of the upload")
	fs.BoolVar(&o.chain, "chain", true, "also measure the case 3 chain (two hops)")
	fs.BoolVar(&o.tcp, "tcp", true, "also measure one hop through a tcp:// listener, which carries the HTTP bytes without proxying them, as the issue's TCP tunnel peers do")
	fs.BoolVar(&o.floor, "floor", true, "also measure two plain TCP relay processes in a chain, the floor of a one-hop tunnel")
	fs.DurationVar(&o.rtt, "rtt", 20*time.Millisecond, "round-trip time of the delayed-path download test; 0 skips it")
	rttWindow := fs.String("rtt-window", "", "bytes in flight the delayed path allows each way (default: the kernel's tcp_wmem maximum)")
	rttDownload := fs.String("rtt-download", "256MiB", "size of the delayed-path download")
	fs.IntVar(&o.idleStreams, "idle-streams", 10000, "idle TCP streams for the memory test; 0 skips it")
	fs.IntVar(&o.idleTunnels, "idle-tunnels", 200, "idle tunnels to one server for the memory test; 0 skips it")
	fs.StringVar(&o.westBin, "west", "", "west `binary` to run (default: go build ./cmd/west into a temporary directory)")
	fs.StringVar(&o.profileDir, "profile", "", "run each west as a westbench child that writes CPU and allocation profiles into `dir`")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory with configs and west logs")
	westEnv := fs.String("west-env", "", "comma-separated `KEY=VALUE`s added to the wests' environment, such as GOMAXPROCS=1")
	fs.StringVar(&o.window, "stream-window", "", "every west's `stream_window` config key, such as 1MiB (default: west's own, 16MiB)")
	pairEnv := fs.String("pair-env", "", "also measure a second one-hop http:// pair whose wests have these comma-separated `KEY=VALUE`s added to their environment, in the same rounds")
	load := fs.String("load", "go", "load generator of the requests/s and latency rounds: go (built in) or wrk (wrk -t1 from PATH, as the issue's peers were measured)")
	only := fs.String("only", "", "comma-separated measurements to run, of rps1, rpsN, download, upload (default: all)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *quick {
		for name, v := range map[string]string{
			"rounds": "1", "duration": "1s", "warmup": "200ms", "download": "64MiB", "upload": "32MiB",
			"rtt-download": "16MiB", "idle-streams": "1000", "idle-tunnels": "50",
		} {
			if !set[name] {
				fs.Set(name, v)
			}
		}
	}
	var err error
	bad := func(name string, e error) error {
		err = fmt.Errorf("-%s: %w", name, e)
		fmt.Fprintf(os.Stderr, "westbench: %v\n", err)
		return err
	}
	if o.download, err = parseSize(*download); err != nil {
		return nil, bad("download", err)
	}
	if o.upload, err = parseSize(*upload); err != nil {
		return nil, bad("upload", err)
	}
	if o.rttDownload, err = parseSize(*rttDownload); err != nil {
		return nil, bad("rtt-download", err)
	}
	if *rttWindow == "" {
		o.rttWindow = kernelWmemMax()
	} else if o.rttWindow, err = parseSize(*rttWindow); err != nil {
		return nil, bad("rtt-window", err)
	}
	if o.westEnv, err = parseEnv(*westEnv); err != nil {
		return nil, bad("west-env", err)
	}
	if o.pairEnv, err = parseEnv(*pairEnv); err != nil {
		return nil, bad("pair-env", err)
	}
	switch *load {
	case "go":
	case "wrk":
		if o.wrk, err = exec.LookPath("wrk"); err != nil {
			return nil, bad("load", err)
		}
	default:
		return nil, bad("load", fmt.Errorf("want go or wrk, got %q", *load))
	}
	if *only != "" {
		o.only = map[string]bool{}
		for m := range strings.SplitSeq(*only, ",") {
			if !slices.Contains([]string{mRPS1, mRPSN, mDownload, mUpload}, m) {
				return nil, bad("only", fmt.Errorf("unknown measurement %q; want rps1, rpsN, download or upload", m))
			}
			o.only[m] = true
		}
	}
	if o.rounds < 1 || o.conns < 1 || o.duration <= 0 || o.idleStreams < 0 || o.idleTunnels < 0 {
		err = errors.New("-rounds, -conns and -duration must be positive, -idle-streams and -idle-tunnels not negative")
		fmt.Fprintf(os.Stderr, "westbench: %v\n", err)
		return nil, err
	}
	if o.profileDir != "" {
		if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
			return nil, bad("profile", err)
		}
	}
	return o, nil
}

// parseEnv reads comma-separated KEY=VALUEs; "" is none.
func parseEnv(list string) ([]string, error) {
	if list == "" {
		return nil, nil
	}
	var env []string
	for kv := range strings.SplitSeq(list, ",") {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return nil, fmt.Errorf("want KEY=VALUE, got %q", kv)
		}
		env = append(env, kv)
	}
	return env, nil
}

// parseSize reads a byte count such as 1GiB, 256MiB, 64KiB, 1GB or 1000.
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
			if err != nil || n <= 0 {
				return 0, fmt.Errorf("want a size such as 256MiB, got %q", s)
			}
			return int64(n * float64(u.mult)), nil
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("want a size such as 256MiB, got %q", s)
	}
	return n, nil
}

// kernelWmemMax is the most a Linux TCP socket may have unacknowledged in
// flight, which bounds a direct download over a long path; 4 MiB if unknown.
func kernelWmemMax() int64 {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_wmem")
	if f := strings.Fields(string(b)); err == nil && len(f) == 3 {
		if n, err := strconv.ParseInt(f[2], 10, 64); err == nil && n > 0 {
			return n
		}
	}
	return 4 << 20
}

// path is one way from the load generator to the backend.
type path struct {
	name  string  // "direct", "1 hop", "1 hop, K=V", "1 hop, tcp", "2 hops", "2 relays"
	url   string  // base URL
	wests []*west // the wests on the way
}

// bench holds a run's state and results.
type bench struct {
	opts    *options
	l       *launcher
	backend string // backend host:port
	paths   []*path
	wests   []*west // every west measured, in table order

	results map[string]map[string][]float64 // metric, path name: one value per round
	cpu     map[*west]map[string]float64    // CPU seconds spent during a metric's rounds
	work    map[*west]map[string]float64    // requests or bytes a west carried in those rounds
	start   map[*west]usage                 // usage once ready, before any load
	idle    []idleResult
	tunnels *tunnelsResult
	notes   []string
}

func run(ctx context.Context, opts *options) (err error) {
	dir, err := os.MkdirTemp("", "westbench-")
	if err != nil {
		return err
	}
	defer func() {
		if opts.keep || err != nil && !errors.Is(err, context.Canceled) {
			fmt.Fprintf(os.Stderr, "westbench: configs and west logs kept in %s\n", dir)
			return
		}
		os.RemoveAll(dir)
	}()
	bin := opts.westBin
	if bin == "" && opts.profileDir == "" {
		fmt.Fprintf(os.Stderr, "building west... ")
		if bin, err = buildWest(ctx, dir); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "%s\n", bin)
	}
	b := &bench{
		opts:    opts,
		l:       &launcher{bin: bin, dir: dir, profileDir: opts.profileDir, env: opts.westEnv, window: opts.window},
		results: map[string]map[string][]float64{},
		cpu:     map[*west]map[string]float64{},
		work:    map[*west]map[string]float64{},
		start:   map[*west]usage{},
	}
	defer b.l.stopAll()

	if err := b.setUp(ctx); err != nil {
		return err
	}
	if err := b.measure(ctx); err != nil {
		return err
	}
	if opts.rtt > 0 {
		if err := b.measureRTT(ctx); err != nil {
			return err
		}
	}
	if opts.idleStreams > 0 {
		if err := b.measureIdle(ctx); err != nil {
			return err
		}
	}
	if opts.idleTunnels > 0 {
		if err := b.measureTunnels(ctx); err != nil {
			return err
		}
	}
	for _, w := range b.wests {
		if err := w.alive(); err != nil {
			return err
		}
	}
	b.report(os.Stdout)
	return nil
}

// setUp starts the one-hop pair and the chain, and waits until each path
// answers.
func (b *bench) setUp(ctx context.Context) error {
	backend, err := b.l.startBackend(ctx)
	if err != nil {
		return err
	}
	b.backend = backend.addrs["backend"]
	b.paths = append(b.paths, &path{name: "direct", url: "http://" + b.backend})

	// One hop: G has the tunnel server and the listener whose "en" names
	// L; L dials G, and dials the backend for each stream.
	if err := b.startPair(ctx, "1 hop", "1hop", "bench", nil, "http"); err != nil {
		return err
	}
	if len(b.opts.pairEnv) > 0 {
		// The same pair again, its wests in another environment (such as
		// GOMAXPROCS=1), measured in the same rounds as the first.
		if err := b.startPair(ctx, "1 hop, "+strings.Join(b.opts.pairEnv, " "), "1hop-env", "env", b.opts.pairEnv, "http"); err != nil {
			return err
		}
	}
	if b.opts.tcp {
		// The same pair with a tcp:// listener: the tunnel carries the
		// HTTP bytes as they are, with no HTTP server or reverse proxy
		// in either west.
		if err := b.startPair(ctx, "1 hop, tcp", "1hop-tcp", "tcp", nil, "tcp"); err != nil {
			return err
		}
	}

	if b.opts.chain {
		// Case 3: L's listener sends to G ("ea"); G's far side dials G's own
		// listener, whose "en" sends down L2's tunnel; L2 dials the backend.
		cg, err := b.l.start(ctx, "2hop.G", fmt.Sprintf(`{
			"west": {"nm": "chain.G"},
			"wsts": {"sp": "ws://127.0.0.1:0"},
			"proxy": {"http://127.0.0.1:0": {"en": "chain.L2", "/": {"ou": "http://%s/"}}}
		}`, b.backend), "tunnel", "proxy")
		if err != nil {
			return err
		}
		cl2, err := b.l.start(ctx, "2hop.L2", fmt.Sprintf(`{
			"west": {"nm": "chain.L2"},
			"wstc": {"ws://%s": {}}
		}`, cg.addrs["tunnel"]))
		if err != nil {
			return err
		}
		cl, err := b.l.start(ctx, "2hop.L", fmt.Sprintf(`{
			"west": {"nm": "chain.L"},
			"proxy": {"http://127.0.0.1:0": {"ea": "ws://%s", "/": {"ou": "http://%s/"}}}
		}`, cg.addrs["tunnel"], cg.addrs["proxy"]), "proxy")
		if err != nil {
			return err
		}
		b.paths = append(b.paths, &path{name: "2 hops", url: "http://" + cl.addrs["proxy"], wests: []*west{cl, cg, cl2}})
	}
	if b.opts.floor {
		// The floor: the same two processes on the way as one hop, doing
		// nothing but copy bytes.
		rb, err := b.l.startRelay(ctx, "relay.B", b.backend)
		if err != nil {
			return err
		}
		ra, err := b.l.startRelay(ctx, "relay.A", rb.addrs["proxy"])
		if err != nil {
			return err
		}
		b.paths = append(b.paths, &path{name: floorPath, url: "http://" + ra.addrs["proxy"], wests: []*west{ra, rb}})
	}
	for _, p := range b.paths {
		if err := waitHTTP(ctx, p.url+"/small", p.wests...); err != nil {
			return fmt.Errorf("path %s: %w", p.name, err)
		}
		b.wests = append(b.wests, p.wests...)
	}
	time.Sleep(500 * time.Millisecond) // let start-up garbage settle before the idle RSS
	for _, w := range b.wests {
		u, err := procUsage(w.pid())
		if err != nil {
			return fmt.Errorf("west %s: %w", w.name, err)
		}
		b.start[w] = u
	}
	return nil
}

// startPair starts a one-hop pair and adds it to the paths: G (NODE.G),
// with the tunnel server and a listener of kind "http" or "tcp" whose "en"
// names L, and L (NODE.L), a tunnel client of G that dials the backend.
// The processes are named PROC.G and PROC.L; env is added to their
// environment.
func (b *bench) startPair(ctx context.Context, pathName, proc, node string, env []string, kind string) error {
	listener := fmt.Sprintf(`"http://127.0.0.1:0": {"en": "%s.L", "/": {"ou": "http://%s/"}}`, node, b.backend)
	if kind == "tcp" {
		listener = fmt.Sprintf(`"tcp://127.0.0.1:0": {"en": "%s.L", "ou": "tcp://%s"}`, node, b.backend)
	}
	g, err := b.l.startEnv(ctx, proc+".G", env, fmt.Sprintf(`{
		"west": {"nm": "%s.G"},
		"wsts": {"sp": "ws://127.0.0.1:0"},
		"proxy": {%s}
	}`, node, listener), "tunnel", "proxy")
	if err != nil {
		return err
	}
	l, err := b.l.startEnv(ctx, proc+".L", env, fmt.Sprintf(`{
		"west": {"nm": "%s.L"},
		"wstc": {"ws://%s": {"ee": "yes"}}
	}`, node, g.addrs["tunnel"]))
	if err != nil {
		return err
	}
	b.paths = append(b.paths, &path{name: pathName, url: "http://" + g.addrs["proxy"], wests: []*west{g, l}})
	return nil
}

// Metric names.
const (
	mRPS1     = "rps1"
	mRPSN     = "rpsN"
	mP50      = "p50"
	mP99      = "p99"
	mDownload = "download"
	mUpload   = "upload"
	mRTT      = "rtt"
	mRTTBusy  = "rtt-busy"
)

func (b *bench) record(metric, pathName string, v float64) {
	if b.results[metric] == nil {
		b.results[metric] = map[string][]float64{}
	}
	b.results[metric][pathName] = append(b.results[metric][pathName], v)
}

// measure runs the rounds, alternating which path goes first.
func (b *bench) measure(ctx context.Context) error {
	o := b.opts
	type step struct {
		metric string
		run    func(p *path) (value, work float64, err error)
	}
	steps := []step{
		{mRPS1, func(p *path) (float64, float64, error) {
			r, err := b.requests(ctx, p.url+"/small", 1, true)
			if err != nil {
				return 0, 0, err
			}
			b.record(mP50, p.name, float64(r.p50))
			b.record(mP99, p.name, float64(r.p99))
			b.noteErrors(p, mRPS1, r)
			return r.rate(), float64(r.all), nil
		}},
		{mRPSN, func(p *path) (float64, float64, error) {
			r, err := b.requests(ctx, p.url+"/small", o.conns, false)
			if err != nil {
				return 0, 0, err
			}
			b.noteErrors(p, mRPSN, r)
			return r.rate(), float64(r.all), nil
		}},
		{mDownload, func(p *path) (float64, float64, error) {
			v, err := download(ctx, p.url, o.download)
			return v, float64(o.download), err
		}},
		{mUpload, func(p *path) (float64, float64, error) {
			v, err := upload(ctx, p.url, o.upload)
			return v, float64(o.upload), err
		}},
	}
	for round := range o.rounds {
		order := slices.Clone(b.paths)
		if round%2 == 1 {
			slices.Reverse(order)
		}
		fmt.Fprintf(os.Stderr, "round %d/%d:", round+1, o.rounds)
		for _, s := range steps {
			if o.only != nil && !o.only[s.metric] {
				continue
			}
			fmt.Fprintf(os.Stderr, " %s", s.metric)
			for _, p := range order {
				before := b.usages(p.wests)
				v, work, err := s.run(p)
				if err != nil {
					return fmt.Errorf("%s via %s: %w", s.metric, p.name, b.explain(err, p.wests))
				}
				b.record(s.metric, p.name, v)
				b.account(p.wests, before, s.metric, work)
			}
		}
		fmt.Fprintln(os.Stderr)
	}
	return nil
}

// requests runs a timed round of small GETs with the chosen load
// generator; with latency, the Go one also records percentiles.
func (b *bench) requests(ctx context.Context, url string, conns int, latency bool) (rpsResult, error) {
	o := b.opts
	if o.wrk != "" {
		return runWrk(ctx, o.wrk, url, conns, o.warmup, o.duration)
	}
	return runRPS(ctx, url, conns, o.warmup, o.duration, latency)
}

func (b *bench) noteErrors(p *path, metric string, r rpsResult) {
	if r.errors > 0 {
		b.notes = append(b.notes, fmt.Sprintf("%s via %s: %d failed requests, first: %v", metric, p.name, r.errors, r.firstErr))
	}
}

// explain adds to err any west that has died.
func (b *bench) explain(err error, wests []*west) error {
	for _, w := range wests {
		if e := w.alive(); e != nil {
			return fmt.Errorf("%w; %w", err, e)
		}
	}
	return err
}

func (b *bench) usages(wests []*west) []usage {
	us := make([]usage, len(wests))
	for i, w := range wests {
		us[i], _ = procUsage(w.pid())
	}
	return us
}

// account charges each west the CPU it used since before, and the work
// (requests or bytes) it carried in that time, to metric.
func (b *bench) account(wests []*west, before []usage, metric string, work float64) {
	for i, w := range wests {
		after, err := procUsage(w.pid())
		if err != nil {
			continue
		}
		if b.cpu[w] == nil {
			b.cpu[w], b.work[w] = map[string]float64{}, map[string]float64{}
		}
		b.cpu[w][metric] += after.CPU - before[i].CPU
		b.work[w][metric] += work
	}
}

// measureRTT compares one download over a delayed path: direct through a
// relay in front of the backend, and through a one-hop pair whose tunnel
// runs through the same kind of relay.
func (b *bench) measureRTT(ctx context.Context) error {
	o := b.opts
	direct, err := startRelay(b.backend, o.rtt, int(o.rttWindow))
	if err != nil {
		return err
	}
	defer direct.close()
	g, err := b.l.start(ctx, "rtt.G", fmt.Sprintf(`{
		"west": {"nm": "rtt.G"},
		"wsts": {"sp": "ws://127.0.0.1:0"},
		"proxy": {"http://127.0.0.1:0": {"en": "rtt.L", "/": {"ou": "http://%s/"}}}
	}`, b.backend), "tunnel", "proxy")
	if err != nil {
		return err
	}
	defer g.stop()
	tunnelRelay, err := startRelay(g.addrs["tunnel"], o.rtt, int(o.rttWindow))
	if err != nil {
		return err
	}
	defer tunnelRelay.close()
	l, err := b.l.start(ctx, "rtt.L", fmt.Sprintf(`{
		"west": {"nm": "rtt.L"},
		"wstc": {"ws://%s": {"ee": "yes"}}
	}`, tunnelRelay.addr()))
	if err != nil {
		return err
	}
	defer l.stop()
	paths := []*path{
		{name: "direct", url: "http://" + direct.addr()},
		{name: "1 hop", url: "http://" + g.addrs["proxy"], wests: []*west{g, l}},
	}
	for _, p := range paths {
		if err := waitHTTP(ctx, p.url+"/small", p.wests...); err != nil {
			return fmt.Errorf("delayed path %s: %w", p.name, err)
		}
	}
	fmt.Fprintf(os.Stderr, "delayed path, %s RTT, %s window:", o.rtt, formatSize(o.rttWindow))
	for round := range o.rounds {
		order := slices.Clone(paths)
		if round%2 == 1 {
			slices.Reverse(order)
		}
		for _, p := range order {
			v, busy, err := downloadBeside(ctx, p.url, o.rttDownload)
			if err != nil {
				return fmt.Errorf("delayed download via %s: %w", p.name, b.explain(err, p.wests))
			}
			b.record(mRTT, p.name, v)
			b.record(mRTTBusy, p.name, float64(busy))
		}
		fmt.Fprintf(os.Stderr, " %d", round+1)
	}
	fmt.Fprintln(os.Stderr)
	return nil
}

// idleResult is the memory of one west with and without idle streams.
type idleResult struct {
	name                   string
	base, loaded, released usage
}

// measureIdle starts a fresh pair with a tcp:// listener and holds
// -idle-streams connections open through it to a sink that only waits.
func (b *bench) measureIdle(ctx context.Context) error {
	n := b.opts.idleStreams
	self, err := os.Executable()
	if err != nil {
		return err
	}
	sink := exec.Command(self, sinkMode)
	sink.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	sinkIn, err := sink.StdinPipe()
	if err != nil {
		return err
	}
	sinkOut, err := sink.StdoutPipe()
	if err != nil {
		return err
	}
	sink.Stderr = os.Stderr
	if err := sink.Start(); err != nil {
		return fmt.Errorf("start idle sink: %w", err)
	}
	defer func() { sinkIn.Close(); sink.Wait() }()
	line, err := bufio.NewReader(sinkOut).ReadString('\n')
	if err != nil {
		return fmt.Errorf("idle sink: %w", err)
	}
	sinkAddr := strings.TrimSpace(line)

	g, err := b.l.start(ctx, "idle.G", fmt.Sprintf(`{
		"west": {"nm": "idle.G"},
		"wsts": {"sp": "ws://127.0.0.1:0"},
		"proxy": {"tcp://127.0.0.1:0": {"en": "idle.L", "ou": "tcp://%s"}}
	}`, sinkAddr), "tunnel", "proxy")
	if err != nil {
		return err
	}
	defer g.stop()
	// The streams go from G to L, which takes 8192 at once unless its
	// wstc entry says more (a west from before that key took any number).
	limit := ""
	if n > 8192 {
		limit = fmt.Sprintf(`, "max_streams": %d`, n+n/10)
	}
	l, err := b.l.start(ctx, "idle.L", fmt.Sprintf(`{
		"west": {"nm": "idle.L"},
		"wstc": {"ws://%s": {"ee": "yes"%s}}
	}`, g.addrs["tunnel"], limit))
	if err != nil {
		return err
	}
	defer l.stop()
	listener := g.addrs["proxy"]
	deadline := time.Now().Add(15 * time.Second)
	for {
		conns, err := openIdle(ctx, listener, 1)
		if err == nil {
			closeAll(conns)
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("idle pair never carried a stream: %w", b.explain(err, []*west{g, l}))
		}
		time.Sleep(50 * time.Millisecond)
	}
	wests := []*west{g, l}
	sleep(ctx, time.Second)
	base := b.usages(wests)
	fmt.Fprintf(os.Stderr, "idle streams: opening %d... ", n)
	start := time.Now()
	conns, err := openIdle(ctx, listener, n)
	if err != nil {
		return fmt.Errorf("open %d idle streams: %w", n, b.explain(err, wests))
	}
	fmt.Fprintf(os.Stderr, "in %s; ", time.Since(start).Round(time.Millisecond))
	sleep(ctx, 2*time.Second)
	loaded := b.usages(wests)
	closeAll(conns)
	fmt.Fprintf(os.Stderr, "closed\n")
	sleep(ctx, 3*time.Second)
	released := b.usages(wests)
	for i, w := range wests {
		b.idle = append(b.idle, idleResult{name: w.name, base: base[i], loaded: loaded[i], released: released[i]})
	}
	return ctx.Err()
}

// formatSize writes n bytes in binary units.
func formatSize(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

// machine describes where the run happened, for the report.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("%s/%s, %d CPUs (%s), Linux %s, %s", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(),
		model, strings.TrimSpace(string(kernel)), runtime.Version())
}
