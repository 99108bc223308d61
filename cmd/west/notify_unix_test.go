//go:build unix

package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
)

// notifySocket is a socket of the test's for systemd's notifications,
// named in NOTIFY_SOCKET for the test's length.
func notifySocket(t *testing.T) *net.UnixConn {
	t.Helper()
	dir, err := os.MkdirTemp("", "wn") // short: a socket's path has room for about 100 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: dir + "/notify", Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sock.Close() })
	t.Setenv("NOTIFY_SOCKET", dir+"/notify")
	return sock
}

// TestSystemdNotify: run as a unit of Type=notify, west tells systemd on
// NOTIFY_SOCKET that it is ready once its listeners are open, that it
// reloads and how that ended, and that it stops, so that systemd neither
// reports a start before west listens nor waits out its start timeout.
func TestSystemdNotify(t *testing.T) {
	sock := notifySocket(t) // the child's NOTIFY_SOCKET, from this process's
	next := func(what string) string {
		t.Helper()
		sock.SetReadDeadline(time.Now().Add(10 * time.Second))
		var b [4096]byte
		n, err := sock.Read(b[:])
		if err != nil {
			t.Fatalf("no notification %s: %v", what, err)
		}
		return string(b[:n])
	}

	cp := testutil.FreeAddr(t)
	good := fmt.Sprintf(`{"west": {"nm": "n", "cp": %q}}`, cp)
	cfg := writeFile(t, "c.json", good)
	cmd, log := startWest(t, "-c", cfg)
	go func() {
		for {
			if _, err := log.ReadString('\n'); err != nil {
				return
			}
		}
	}()

	if got := next("at start"); got != "READY=1\nSTATUS=running\n" {
		t.Fatalf("at start: %q, want READY=1 and STATUS=running", got)
	}
	// Ready means listening: the control port answers at once.
	resp, err := http.Get("http://" + cp + "/healthz")
	if err != nil {
		t.Fatalf("control port just after READY=1: %v", err)
	}
	resp.Body.Close()

	byHangup := func() {
		if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	byControlPort := func() {
		resp, err := http.Post("http://"+cp+"/api/reload", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	reloadTo := func(conf, wantStatus string, reload func()) {
		t.Helper()
		if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		reload()
		if got := next("for the reload"); !regexp.MustCompile(`^RELOADING=1\n(MONOTONIC_USEC=[1-9][0-9]*\n)?$`).MatchString(got) {
			t.Fatalf("on SIGHUP: %q, want RELOADING=1 (and MONOTONIC_USEC)", got)
		}
		got := next("after the reload")
		if !strings.HasPrefix(got, "READY=1\nSTATUS=") || !strings.Contains(got, wantStatus) || strings.Count(got, "\n") != 2 {
			t.Fatalf("after the reload: %q, want READY=1 and one STATUS line with %q", got, wantStatus)
		}
	}
	reloadTo(`{"west": {}}`, "running; last reload rejected: ", byHangup)
	reloadTo(good, "STATUS=running\n", byHangup)
	// The control port's reloads are told too, or systemctl status would
	// keep the last SIGHUP's outcome.
	reloadTo(`{"west": {}}`, "running; last reload rejected: ", byControlPort)
	reloadTo(good, "STATUS=running\n", byControlPort)

	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if got := next("on SIGTERM"); got != "STOPPING=1\nSTATUS=stopping\n" {
		t.Errorf("on SIGTERM: %q, want STOPPING=1", got)
	}
	if err := <-exited; err != nil {
		t.Errorf("west after SIGTERM: %v", err)
	}
}

// TestNothingAfterStopping: a reload under way when the signal to stop
// comes, or one whose signal came with it, sent its RELOADING=1 or
// READY=1 after STOPPING=1; and the READY=1 undid it: systemd, which
// keeps the last of them for when a reload's ExecReload ends, would go
// back to running a west that drains and exits.
func TestNothingAfterStopping(t *testing.T) {
	sock := notifySocket(t)

	sd := &notifier{log: slog.New(slog.DiscardHandler)}
	done := sd.reload()
	sd.stopping()
	done(errors.New("reload: west is stopping"))
	sd.reload()(nil)
	sd.stopping()
	var got []string
	for {
		// What was sent is queued already: the wait is for nothing.
		sock.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		var b [4096]byte
		k, err := sock.Read(b[:])
		if err != nil {
			break
		}
		got = append(got, string(b[:k]))
	}
	if len(got) != 2 || !strings.HasPrefix(got[0], "RELOADING=1\n") || got[1] != "STOPPING=1\nSTATUS=stopping\n" {
		t.Errorf("a reload, then a stop, then the reload's end and another of each: %q, want RELOADING=1, then STOPPING=1 alone", got)
	}
}
