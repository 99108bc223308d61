package testutil

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// LeakWait is how long the leak checks wait for goroutines to end before
// they report the ones left over.
var LeakWait = 5 * time.Second

// Goroutine is one goroutine of a runtime.Stack dump.
type Goroutine struct {
	ID    int
	State string // "running", "IO wait", "select", ...
	Stack string // the whole block, header line included
	Top   string // the function the goroutine is in
}

// Goroutines returns every goroutine but the caller's.
func Goroutines() []Goroutine {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []Goroutine
	for i, block := range strings.Split(string(buf), "\n\n") {
		if i == 0 {
			continue // the caller
		}
		if g, ok := parseGoroutine(block); ok {
			out = append(out, g)
		}
	}
	return out
}

// parseGoroutine reads a block starting "goroutine 7 [select, 2 minutes]:".
func parseGoroutine(block string) (Goroutine, bool) {
	header, rest, _ := strings.Cut(strings.TrimSpace(block), "\n")
	id, state, ok := strings.Cut(strings.TrimPrefix(header, "goroutine "), " [")
	if !ok {
		return Goroutine{}, false
	}
	n, err := strconv.Atoi(id)
	if err != nil {
		return Goroutine{}, false
	}
	state, _, _ = strings.Cut(strings.TrimSuffix(state, "]:"), ",")
	top, _, _ := strings.Cut(rest, "\n")
	if i := strings.LastIndexByte(top, '('); i > 0 {
		top = top[:i]
	}
	return Goroutine{ID: n, State: state, Stack: strings.TrimSpace(block), Top: top}, true
}

// ignored marks the goroutines the runtime, the testing package and the
// standard library keep for the whole process, by a frame in their stack.
var ignored = []string{
	"testing.RunTests(",
	"testing.(*M).",
	"testing.tRunner(",
	"testing.runFuzzing(",
	"os/signal.signal_recv(",
	"os/signal.loop(",
	"runtime.ensureSigM(",
	"runtime/trace.",
	"runtime.ReadTrace(",
}

func isIgnored(g Goroutine) bool {
	for _, s := range ignored {
		if strings.Contains(g.Stack, "\n"+s) {
			return true
		}
	}
	return false
}

// interesting returns the goroutines not in base and not ignored.
func interesting(base map[int]bool) []Goroutine {
	var out []Goroutine
	for _, g := range Goroutines() {
		if base[g.ID] || isIgnored(g) {
			continue
		}
		out = append(out, g)
	}
	return out
}

func ids(gs []Goroutine) map[int]bool {
	m := make(map[int]bool, len(gs))
	for _, g := range gs {
		m[g.ID] = true
	}
	return m
}

// waitLeaks polls until no goroutine outside base is left, or LeakWait has
// passed, and returns those left. It closes the default transport's idle
// connections first, since tests use http.Get freely.
func waitLeaks(base map[int]bool) []Goroutine {
	deadline := time.Now().Add(LeakWait)
	for {
		if t, ok := http.DefaultTransport.(*http.Transport); ok {
			t.CloseIdleConnections()
		}
		left := interesting(base)
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// FormatLeaks renders leaked goroutines for a failure message: grouped by
// identical stack (ignoring IDs and wait times), each stack trimmed to its
// first frames.
func FormatLeaks(gs []Goroutine) string {
	type group struct {
		n     int
		stack string
	}
	var groups []*group
	byKey := map[string]*group{}
	for _, g := range gs {
		key := stackKey(g.Stack)
		if gr := byKey[key]; gr != nil {
			gr.n++
			continue
		}
		gr := &group{n: 1, stack: trimStack(g.Stack, 12)}
		byKey[key] = gr
		groups = append(groups, gr)
	}
	slices.SortStableFunc(groups, func(a, b *group) int { return b.n - a.n })
	var b bytes.Buffer
	fmt.Fprintf(&b, "%d goroutine(s) leaked:\n", len(gs))
	for i, gr := range groups {
		if i == 10 {
			fmt.Fprintf(&b, "... and %d more kinds\n", len(groups)-i)
			break
		}
		fmt.Fprintf(&b, "--- %d x\n%s\n", gr.n, gr.stack)
	}
	return b.String()
}

// stackKey drops the header line and argument values so that goroutines
// stuck at the same place group together.
func stackKey(stack string) string {
	_, rest, _ := strings.Cut(stack, "\n")
	var b strings.Builder
	for line := range strings.SplitSeq(rest, "\n") {
		if i := strings.LastIndexByte(line, '('); i > 0 && !strings.HasPrefix(line, "\t") {
			line = line[:i]
		}
		if i := strings.Index(line, " +0x"); i > 0 {
			line = line[:i]
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.String()
}

// trimStack keeps the header and the first frames (two lines each).
func trimStack(stack string, frames int) string {
	lines := strings.Split(stack, "\n")
	if keep := 1 + 2*frames; len(lines) > keep {
		return strings.Join(lines[:keep], "\n") + "\n\t..."
	}
	return stack
}

// Baseline returns the goroutines running now, for Leaked.
func Baseline() map[int]bool { return ids(Goroutines()) }

// Leaked waits up to LeakWait for the goroutines started since base to
// end, and returns those still running (not counting the ones the runtime,
// the testing package and the standard library keep for the whole
// process).
func Leaked(base map[int]bool) []Goroutine { return waitLeaks(base) }

// VerifyNoLeaks records the goroutines running now and, when t ends (after
// the cleanups registered after it, so call it first), fails t if others
// are still running after LeakWait, printing their stacks.
func VerifyNoLeaks(t testing.TB) {
	t.Helper()
	base := ids(Goroutines())
	t.Cleanup(func() {
		if left := waitLeaks(base); len(left) > 0 {
			t.Errorf("%s", FormatLeaks(left))
		}
	})
}

// VerifyTestMain runs the package's tests and then fails the binary if
// goroutines they started are still running after LeakWait. Use it as
//
//	func TestMain(m *testing.M) { testutil.VerifyTestMain(m) }
func VerifyTestMain(m *testing.M) {
	base := ids(Goroutines())
	code := m.Run()
	if code == 0 {
		if left := waitLeaks(base); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "FAIL: goroutine leak after all tests passed\n%s", FormatLeaks(left))
			code = 1
		}
	}
	os.Exit(code)
}
