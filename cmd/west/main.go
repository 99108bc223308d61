// Command west carries HTTP and TCP between cooperating nodes over
// WebSocket tunnels, so that a client can reach a server behind NAT.
//
// Usage:
//
//	west -c CONFIG [-O FILE] [-v] [-d ...] [--debug N] [--log-format text|json]
//	west check -c CONFIG
//	west demo
//	west --version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/west-tunnel/west/internal/config"
	"github.com/west-tunnel/west/internal/node"
	"github.com/west-tunnel/west/internal/procs"
	"github.com/west-tunnel/west/internal/sdnotify"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// Exit statuses.
const (
	exitOK      = 0
	exitRuntime = 1 // the node failed while running, or could not start
	exitConfig  = 2 // bad flags or configuration

	exitCheckFailed = 1 // west check: the configuration is invalid
)

func main() {
	// A job a shell script starts in the background begins with SIGINT
	// ignored, and stop restores that, not the default action.
	intIgnored := signal.Ignored(syscall.SIGINT)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	go func() {
		// The first signal starts the drain, which may last shutdown_grace;
		// a second one takes the default action and ends west at once.
		<-ctx.Done()
		if !intIgnored {
			stop()
			return
		}
		again := make(chan os.Signal, 1)
		signal.Notify(again, syscall.SIGINT)
		stop()
		<-again
		os.Exit(128 + int(syscall.SIGINT)) // as a shell reports an end by SIGINT
	}()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// counter is a flag that counts its occurrences, for the seed's "-d -d".
type counter int

func (c *counter) String() string { return strconv.Itoa(int(*c)) }
func (c *counter) Set(s string) error {
	on, err := strconv.ParseBool(s) // "-d" alone sets "true"
	if err != nil {
		return fmt.Errorf("want -d alone, or -d=true or -d=false, got %q", s)
	}
	if on {
		*c++
	} else {
		*c = 0
	}
	return nil
}
func (c *counter) IsBoolFlag() bool { return true }

type flags struct {
	config    string
	output    string
	verbose   bool
	debug     counter
	debugN    int
	input     string
	logFormat string
	version   bool
	help      bool
	quiet     bool // warnings and errors only
}

// argparseForms respells the forms of the seed's argument parser
// (Python's argparse) that the flag package does not read: one-letter
// flags grouped ("-dd", "-vd", "-vc FILE"), a value joined to its
// one-letter flag ("-cFILE"), and a long flag cut to a unique prefix
// ("--verb"). A long flag cut short to a prefix of several it refuses,
// naming them, as argparse does ("--ver": --verbose or --version); what
// else it cannot read as one of these it leaves for the flag package to
// refuse.
func argparseForms(fs *flag.FlagSet, args []string) ([]string, error) {
	var out []string
	for i := 0; i < len(args); i++ {
		if args[i] == "--" {
			return append(out, args[i:]...), nil
		}
		if name, ok := strings.CutPrefix(args[i], "--"); ok {
			name, _, _ = strings.Cut(name, "=")
			if all := longFlags(fs, name); !longFlag(fs, name) && len(all) > 1 {
				return nil, fmt.Errorf("ambiguous option: --%s could match --%s", name, strings.Join(all, ", --"))
			}
		}
		spelled, wantsValue := respell(fs, args[i])
		out = append(out, spelled...)
		if wantsValue && i+1 < len(args) {
			i++
			out = append(out, args[i]) // a value, whatever it looks like
		}
	}
	return out, nil
}

// respell spells one argument as flags the flag package reads, and says
// whether the last of them takes the next argument as its value.
func respell(fs *flag.FlagSet, arg string) (spelled []string, wantsValue bool) {
	if len(arg) < 2 || arg[0] != '-' {
		return []string{arg}, false
	}
	long := strings.HasPrefix(arg, "--")
	name, _, hasValue := strings.Cut(strings.TrimLeft(arg, "-"), "=")
	if full := uniqueLongFlag(fs, name); long && !longFlag(fs, name) && full != "" {
		arg, name = "--"+full+strings.TrimPrefix(arg, "--"+name), full
	}
	if fs.Lookup(name) != nil {
		return []string{arg}, !hasValue && takesValue(fs, name)
	}
	if long {
		return []string{arg}, false
	}
	for j := 1; j < len(arg); j++ {
		letter := arg[j : j+1]
		if fs.Lookup(letter) == nil {
			return []string{arg}, false
		}
		spelled = append(spelled, "-"+letter)
		if takesValue(fs, letter) {
			if rest := arg[j+1:]; rest != "" {
				return append(spelled, rest), false
			}
			return spelled, true
		}
	}
	return spelled, false
}

// longFlag says whether name is a flag of more than a letter. After two
// dashes argparse reads only those: "--d" is --debug cut short, not -d.
func longFlag(fs *flag.FlagSet, name string) bool {
	return len(name) > 1 && fs.Lookup(name) != nil
}

// uniqueLongFlag returns the one flag of more than a letter whose name
// starts with prefix, or "" if none or several do.
func uniqueLongFlag(fs *flag.FlagSet, prefix string) string {
	if found := longFlags(fs, prefix); len(found) == 1 {
		return found[0]
	}
	return ""
}

// longFlags returns the flags of more than a letter whose names start
// with prefix, in order.
func longFlags(fs *flag.FlagSet, prefix string) []string {
	var found []string
	fs.VisitAll(func(f *flag.Flag) {
		if len(f.Name) > 1 && prefix != "" && strings.HasPrefix(f.Name, prefix) {
			found = append(found, f.Name)
		}
	})
	return found
}

// takesValue says whether the named flag reads a value (it is not a
// boolean flag).
func takesValue(fs *flag.FlagSet, name string) bool {
	b, ok := fs.Lookup(name).Value.(interface{ IsBoolFlag() bool })
	return !ok || !b.IsBoolFlag()
}

func parseFlags(name string, args []string, stderr io.Writer) (*flags, *flag.FlagSet, error) {
	f := &flags{}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.config, "c", "", "the configuration `file`")
	fs.StringVar(&f.output, "O", "", "write logs to `file` instead of stdout (\"-\" is stdout)")
	fs.StringVar(&f.output, "output", "", "same as -O")
	fs.BoolVar(&f.verbose, "v", false, "verbose: also log every proxied request")
	fs.BoolVar(&f.verbose, "verbose", false, "same as -v")
	fs.Var(&f.debug, "d", "debug logging (may be repeated)")
	fs.IntVar(&f.debugN, "debug", 0, "debug `level` (1 or more enables debug logging)")
	fs.StringVar(&f.input, "input", "", "accepted for the seed's compatibility and ignored")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fs.BoolVar(&f.version, "version", false, "print the version and exit")
	// Defined rather than left to the flag package, which prints the
	// usage on stderr: asked for, it goes to stdout, as argparse's does.
	fs.BoolVar(&f.help, "h", false, "print this help and exit")
	fs.BoolVar(&f.help, "help", false, "same as -h")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: west -c CONFIG [flags]\n       west check -c CONFIG\n       west demo\n\nflags:\n")
		fs.PrintDefaults()
	}
	args, err := argparseForms(fs, args)
	if err == nil {
		// The flag package would print its errors bare, and the usage;
		// they are printed below, as west's own are.
		fs.SetOutput(io.Discard)
		err = fs.Parse(args)
		fs.SetOutput(stderr)
	}
	switch {
	case err != nil:
	case f.help:
	case fs.NArg() > 0:
		err = fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case f.logFormat != "text" && f.logFormat != "json":
		err = fmt.Errorf("-log-format: %q is neither text nor json", f.logFormat)
	}
	if err != nil {
		fmt.Fprintf(stderr, "west: %v\n", err)
		fs.Usage()
		return nil, fs, err
	}
	return f, fs, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := ""
	if len(args) > 0 && (args[0] == "check" || args[0] == "demo") {
		cmd, args = args[0], args[1:]
	}
	f, fs, err := parseFlags("west", args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		return exitConfig
	}
	if f.help {
		fs.SetOutput(stdout)
		fs.Usage()
		return exitOK
	}
	if f.version {
		fmt.Fprintf(stdout, "west %s\n", version)
		return exitOK
	}

	logOut := stdout
	if f.output != "" && f.output != "-" { // "-" is the seed's stdout
		file, err := os.OpenFile(f.output, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			fmt.Fprintf(stderr, "west: open log output: %v\n", err)
			return exitConfig
		}
		defer file.Close()
		logOut = file
	}
	// The demo prints its own story; its logs stay quiet unless asked for.
	if cmd == "demo" && !f.verbose && f.debug == 0 && f.debugN == 0 {
		f.quiet = true
	}
	logger := newLogger(logOut, f)
	if f.input != "" {
		logger.Warn("--input is accepted for compatibility with the seed and ignored", "input", f.input)
	}

	switch cmd {
	case "demo":
		if err := node.Demo(ctx, stdout, logger); err != nil {
			fmt.Fprintf(stderr, "west demo: %v\n", err)
			return exitRuntime
		}
		return exitOK
	}

	if f.config == "" {
		fmt.Fprintf(stderr, "west: no configuration: give -c CONFIG (or try \"west demo\")\n")
		fs.Usage()
		return exitConfig
	}
	var hup chan os.Signal
	if cmd == "" {
		// A SIGHUP while west starts is kept for when it runs, rather than
		// ending it as the signal's default action would: a reload may
		// follow a start at once (a script's kill -HUP, or a unit of Type=exec's ExecReload).
		hup = make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
	}
	cfg, err := config.Load(f.config)
	if err != nil {
		fmt.Fprintf(stderr, "west: %v\n", err)
		if cmd == "check" {
			return exitCheckFailed
		}
		return exitConfig
	}
	logger.Debug("configuration loaded", "file", f.config, "listeners", len(cfg.Proxies), "tunnel_clients", len(cfg.Clients), "tunnel_server", cfg.Server != nil)
	if cmd == "check" {
		// Listen addresses by the addresses their names resolve to here:
		// clashes that config.Load, which resolves none, cannot see.
		unresolved, err := node.CheckBinds(cfg)
		if err != nil {
			if ce := (*config.Error)(nil); errors.As(err, &ce) {
				ce.File = f.config
			}
			fmt.Fprintf(stderr, "west: %v\n", err)
			return exitCheckFailed
		}
		// The files a config names are part of it: a renewed certificate
		// is checked before the reload or restart that would load it.
		if err := node.CheckTLS(cfg); err != nil {
			fmt.Fprintf(stderr, "west: config %s: %v\n", f.config, err)
			return exitCheckFailed
		}
		weak, err := node.CheckSecrets(cfg)
		if err != nil {
			fmt.Fprintf(stderr, "west: config %s: %v\n", f.config, err)
			return exitCheckFailed
		}
		for _, w := range slices.Concat(unresolved, node.Warnings(cfg, time.Now()), weak) {
			fmt.Fprintf(stderr, "west: warning: %s\n", w)
		}
		fmt.Fprint(stdout, cfg.Render())
		return exitOK
	}
	// Under systemd's Type=notify: started once the listeners are open,
	// reloading while a reload (a SIGHUP's or the control port's) runs,
	// and stopping from the signal on, through the drain.
	sd := &notifier{log: logger}
	n, err := node.New(cfg, node.Options{Logger: logger, ConfigPath: f.config, OnReloadFile: sd.reload})
	if err != nil {
		// A file or secret the config names: say which config, as for
		// the config's own errors.
		fmt.Fprintf(stderr, "west: config %s: %v\n", f.config, err)
		return exitConfig
	}
	if err := n.Start(); err != nil {
		fmt.Fprintf(stderr, "west: %v\n", err)
		return exitRuntime
	}
	sd.ready("running")
	defer context.AfterFunc(ctx, sd.stopping)()
	stopReloads := reloadOnHangup(ctx, n, logger, hup)
	defer stopReloads()
	defer procs.Start(logger)()
	if err := n.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "west: %v\n", err)
		return exitRuntime
	}
	return exitOK
}

// reloadOnHangup re-reads the config file on every signal on hup, from
// when n runs (one that came while it started included) until ctx ends or
// the returned function is called. A bad file is logged and the running
// configuration stays; a listener that cannot be opened is logged too.
func reloadOnHangup(ctx context.Context, n *node.Node, logger *slog.Logger, hup chan os.Signal) func() {
	done := make(chan struct{})
	go func() {
		select {
		case <-n.Running():
		case <-ctx.Done():
			return
		case <-done:
			return
		}
		for {
			select {
			case <-hup:
				var partial *node.PartialError
				switch err := n.ReloadFile(); {
				case errors.As(err, &partial):
					logger.Error("reload applied in part", "err", err)
				case err != nil:
					logger.Error("reload rejected; the running configuration stays", "err", err)
				}
			case <-ctx.Done():
				return
			case <-done:
				return
			}
		}
	}()
	return func() { close(done) }
}

// notifier tells systemd, under Type=notify, how west is doing
// (sdnotify), one notification at a time, and none after STOPPING=1. A
// reload under way when the signal to stop comes, or one whose signal
// came with it (the reloads' select picks either), would send its
// READY=1 after it; and systemd, which keeps the last of READY=1,
// RELOADING=1 and STOPPING=1 it was told for when a reload's ExecReload
// ends, would go back to running a west that drains and exits.
type notifier struct {
	log *slog.Logger

	mu      sync.Mutex // held while a notification is sent
	stopped bool       // STOPPING=1 sent
}

// ready says west serves, with status for systemctl status.
func (sd *notifier) ready(status string) {
	sd.send(func() error { return sdnotify.Ready(status) }, false)
}

// reload says a reload begins, and the function it returns how it
// ended (node.Options.OnReloadFile).
func (sd *notifier) reload() func(error) {
	sd.send(sdnotify.Reloading, false)
	return func(err error) {
		status := "running"
		var partial *node.PartialError
		switch {
		case errors.As(err, &partial):
			status = "running; last reload applied in part: " + err.Error()
		case err != nil:
			status = "running; last reload rejected: " + err.Error()
		}
		sd.ready(status)
	}
}

// stopping says west drains and will exit; nothing is sent after it.
func (sd *notifier) stopping() { sd.send(sdnotify.Stopping, true) }

func (sd *notifier) send(notify func() error, last bool) {
	sd.mu.Lock()
	defer sd.mu.Unlock()
	if sd.stopped {
		return
	}
	sd.stopped = last
	if err := notify(); err != nil {
		// A unit of Type=notify then waits for it, and times out.
		sd.log.Warn("could not notify systemd", "err", err)
	}
}

func newLogger(w io.Writer, f *flags) *slog.Logger {
	level := slog.LevelInfo
	if f.quiet {
		level = slog.LevelWarn
	}
	if f.verbose {
		level = node.LevelVerbose
	}
	if f.debug > 0 || f.debugN > 0 {
		level = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: node.ReplaceLevelNames}
	if f.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
