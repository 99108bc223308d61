//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// buildWest builds ./cmd/west of the module around the working directory
// into dir and returns the binary's path.
func buildWest(ctx context.Context, dir string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("find the west module: go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("find the west module: not inside a Go module; run from the west repository or pass -west BINARY")
	}
	bin := filepath.Join(dir, "west")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/west")
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/west in %s: %w\n%s", cmd.Dir, err, out)
	}
	return bin, nil
}

// launcher starts west processes: the west binary, or, when profiling,
// this program re-executed as a west node that writes profiles.
type launcher struct {
	bin        string   // the west binary
	dir        string   // configs and logs
	profileDir string   // when set, run nodes in-process with pprof
	env        []string // added to the wests' environment
	window     string   // when set, every west's "stream_window"

	mu    sync.Mutex
	procs []*west
}

// west is one running west process.
type west struct {
	name    string // bench label, such as "1hop.G"
	cmd     *exec.Cmd
	log     string            // path of its log file
	addrs   map[string]string // bound address by role: "tunnel", "proxy"
	exited  chan struct{}     // closed when the process has exited
	waitErr error             // set before exited is closed
}

// start writes config under name, starts a west on it, and waits until it
// has logged a bound address for each role in roles.
func (l *launcher) start(ctx context.Context, name, config string, roles ...string) (*west, error) {
	return l.startEnv(ctx, name, nil, config, roles...)
}

// startEnv is start with env added to the west's environment, after the
// launcher's own.
func (l *launcher) startEnv(ctx context.Context, name string, env []string, config string, roles ...string) (*west, error) {
	cfgPath := filepath.Join(l.dir, name+".json")
	if l.window != "" {
		var err error
		if config, err = withWestKey(config, "stream_window", l.window); err != nil {
			return nil, fmt.Errorf("config of %s: %w", name, err)
		}
	}
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		return nil, err
	}
	var cmd *exec.Cmd
	if l.profileDir != "" {
		self, err := os.Executable()
		if err != nil {
			return nil, err
		}
		cmd = exec.Command(self, nodeMode, "-c", cfgPath,
			"-cpuprofile", filepath.Join(l.profileDir, name+".cpu.pprof"),
			"-memprofile", filepath.Join(l.profileDir, name+".allocs.pprof"))
	} else {
		cmd = exec.Command(l.bin, "-c", cfgPath, "-log-format", "json")
	}
	if len(env) > 0 {
		cmd.Env = l.environ(env...)
	}
	return l.run(ctx, name, cmd, roles)
}

// withWestKey returns config with key set to value in its "west" object.
func withWestKey(config, key, value string) (string, error) {
	var c map[string]map[string]any
	if err := json.Unmarshal([]byte(config), &c); err != nil {
		return "", err
	}
	if c["west"] == nil {
		return "", errors.New(`no "west" object`)
	}
	c["west"][key] = value
	b, err := json.Marshal(c)
	return string(b), err
}

// startRelay starts a plain TCP relay process (see runRelay) in front of
// target, and waits for its address, logged under the role "proxy".
func (l *launcher) startRelay(ctx context.Context, name, target string) (*west, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return l.run(ctx, name, exec.Command(self, relayMode, target), []string{"proxy"})
}

// startBackend starts the backend (see runBackend) and waits for its
// address, logged under the role "backend". The wests' extra environment
// is not its own.
func (l *launcher) startBackend(ctx context.Context) (*west, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, backendMode)
	cmd.Env = os.Environ()
	return l.run(ctx, "backend", cmd, []string{"backend"})
}

// environ is the environment of a west: this process's, then the
// launcher's additions, then extra.
func (l *launcher) environ(extra ...string) []string {
	return append(append(os.Environ(), l.env...), extra...)
}

// run starts cmd, a west or a relay that logs JSON lines on its standard
// output, and waits until it has logged a bound address for each role.
func (l *launcher) run(ctx context.Context, name string, cmd *exec.Cmd, roles []string) (*west, error) {
	if len(l.env) > 0 && cmd.Env == nil {
		cmd.Env = l.environ()
	}
	logPath := filepath.Join(l.dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stderr = logFile
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logFile.Close()
		return nil, err
	}
	// Pdeathsig kills the west if this program dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	w := &west{name: name, cmd: cmd, log: logPath, addrs: map[string]string{}, exited: make(chan struct{})}
	l.mu.Lock()
	l.procs = append(l.procs, w)
	l.mu.Unlock()

	listening := make(chan [2]string, 8)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Bytes()
			logFile.Write(line)
			logFile.Write([]byte{'\n'})
			var rec struct{ Msg, Role, Addr string }
			if json.Unmarshal(line, &rec) == nil && rec.Msg == "listening" {
				select {
				case listening <- [2]string{rec.Role, rec.Addr}:
				default:
				}
			}
		}
		io.Copy(io.Discard, stdout)
		w.waitErr = cmd.Wait()
		logFile.Close()
		close(w.exited)
	}()

	deadline := time.NewTimer(15 * time.Second)
	defer deadline.Stop()
	for !w.hasRoles(roles) {
		select {
		case la := <-listening:
			if _, ok := w.addrs[la[0]]; !ok {
				w.addrs[la[0]] = la[1]
			}
		case <-w.exited:
			return nil, fmt.Errorf("west %s exited: %v\n%s", name, w.waitErr, tail(logPath))
		case <-deadline.C:
			return nil, fmt.Errorf("west %s: no listening addresses for %v after 15s\n%s", name, roles, tail(logPath))
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return w, nil
}

func (w *west) hasRoles(roles []string) bool {
	for _, r := range roles {
		if _, ok := w.addrs[r]; !ok {
			return false
		}
	}
	return true
}

func (w *west) pid() int { return w.cmd.Process.Pid }

// stop asks the west to end, and kills it after 5 s.
func (w *west) stop() {
	select {
	case <-w.exited:
		return
	default:
	}
	w.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-w.exited:
	case <-time.After(5 * time.Second):
		syscall.Kill(-w.pid(), syscall.SIGKILL)
		<-w.exited
	}
}

// alive reports an error if the west has exited.
func (w *west) alive() error {
	select {
	case <-w.exited:
		return fmt.Errorf("west %s exited during the benchmark: %v\n%s", w.name, w.waitErr, tail(w.log))
	default:
		return nil
	}
}

// stopAll stops every west started, all at once.
func (l *launcher) stopAll() {
	l.mu.Lock()
	procs := l.procs
	l.procs = nil
	l.mu.Unlock()
	var wg sync.WaitGroup
	for _, w := range procs {
		wg.Add(1)
		go func() { defer wg.Done(); w.stop() }()
	}
	wg.Wait()
}

// tail returns the last lines of a log file, for error messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := bytes.Split(bytes.TrimSpace(b), []byte{'\n'})
	if len(lines) > 10 {
		lines = lines[len(lines)-10:]
	}
	return "  " + string(bytes.Join(lines, []byte("\n  ")))
}

// usage is what /proc says of a process.
type usage struct {
	RSS, HWM int64   // resident set size and its peak, bytes
	CPU      float64 // user plus system CPU seconds
}

// clockTick is USER_HZ, which Linux fixes at 100 for /proc.
const clockTick = 100

func procUsage(pid int) (usage, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return usage{}, err
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return usage{}, err
	}
	u := parseStatus(status)
	if u.CPU, err = parseStatCPU(stat); err != nil {
		return u, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return u, nil
}

// parseStatus reads VmRSS and VmHWM, in kB, of a /proc/PID/status.
func parseStatus(status []byte) usage {
	var u usage
	for line := range strings.Lines(string(status)) {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			u.RSS = kb << 10
		case "VmHWM:":
			u.HWM = kb << 10
		}
	}
	return u
}

// parseStatCPU returns utime+stime of a /proc/PID/stat line, in seconds.
func parseStatCPU(stat []byte) (float64, error) {
	// Fields after the command name, which may hold spaces, in parentheses.
	rest := stat[bytes.LastIndexByte(stat, ')')+1:]
	f := strings.Fields(string(rest))
	if len(f) < 13 {
		return 0, errors.New("too few fields")
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64) // field 14 of the whole line
	stime, _ := strconv.ParseInt(f[12], 10, 64) // field 15
	return float64(utime+stime) / clockTick, nil
}

// waitHTTP polls url until it answers 200, as a proxy does once its
// tunnel is up.
func waitHTTP(ctx context.Context, url string, procs ...*west) error {
	deadline := time.Now().Add(15 * time.Second)
	c := &http.Client{Timeout: 2 * time.Second}
	var last string
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		resp, err := c.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		for _, w := range procs {
			if err := w.alive(); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("GET %s: not ready after 15s: %s", url, last)
}
