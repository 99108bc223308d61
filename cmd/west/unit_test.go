package main

import (
	"context"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// serviceDirectives reads the [Service] section of a systemd unit into
// its directives, each with its values in order.
func serviceDirectives(t *testing.T, path string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	d := make(map[string][]string)
	section := ""
	for line := range strings.SplitSeq(string(b), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "", line[0] == '#', line[0] == ';':
		case line[0] == '[':
			section = line
		case section == "[Service]":
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: %q is no directive", path, line)
			}
			d[k] = append(d[k], v)
		}
	}
	return d
}

// TestSystemdUnit holds contrib/systemd/west.service to this command: its
// ExecStart parses as west's flags; its ExecReload checks the same file
// with "west check", which passes on a valid one, before sending the
// SIGHUP that reloads (TestHangupWhileStartingIsKept); it waits for
// west's notifications; and it does not restart west after the status of
// a configuration error.
func TestSystemdUnit(t *testing.T) {
	const unit = "../../contrib/systemd/west.service"
	d := serviceDirectives(t, unit)

	if len(d["ExecStart"]) != 1 {
		t.Fatalf("ExecStart: %q, want one", d["ExecStart"])
	}
	start := strings.Fields(d["ExecStart"][0])
	bin := start[0]
	f, _, err := parseFlags("west", start[1:], io.Discard)
	if err != nil {
		t.Fatalf("ExecStart %q: %v", d["ExecStart"][0], err)
	}
	if f.config == "" {
		t.Fatalf("ExecStart %q names no config", d["ExecStart"][0])
	}

	if len(d["ExecReload"]) != 1 {
		t.Fatalf("ExecReload: %q, want one", d["ExecReload"])
	}
	reload := d["ExecReload"][0]
	m := regexp.MustCompile(regexp.QuoteMeta(bin) + ` (check [^>&|;']*)`).FindStringSubmatch(reload)
	if m == nil || !strings.Contains(reload, "&& kill -HUP $MAINPID") {
		t.Fatalf("ExecReload %q: want %s check, then kill -HUP $MAINPID", reload, bin)
	}
	check := strings.Fields(m[1])
	i := slices.Index(check, "-c")
	if i < 0 || i+1 >= len(check) || check[i+1] != f.config {
		t.Fatalf("ExecReload checks %q, not ExecStart's %s", m[1], f.config)
	}
	check[i+1] = writeFile(t, "west.json", `{"west": {"nm": "n"}}`)
	if code, _, stderr := runArgs(t, context.Background(), check...); code != exitOK {
		t.Errorf("ExecReload's %q on a valid file: exit %d, %s", m[1], code, stderr)
	}
	check[i+1] = writeFile(t, "bad.json", `{"west": {}}`)
	if code, _, _ := runArgs(t, context.Background(), check...); code == exitOK {
		t.Errorf("ExecReload's %q on an invalid file: exit %d, want a failure", m[1], code)
	}

	// west tells systemd when it is ready (TestSystemdNotify); a unit of
	// another type would not wait for it, or would wait in vain.
	if !slices.Equal(d["Type"], []string{"notify"}) {
		t.Errorf("Type: %q, want notify", d["Type"])
	}
	if want := strconv.Itoa(exitConfig); !slices.Equal(d["RestartPreventExitStatus"], []string{want}) {
		t.Errorf("RestartPreventExitStatus: %q, want %s, the status of a configuration error", d["RestartPreventExitStatus"], want)
	}
}
