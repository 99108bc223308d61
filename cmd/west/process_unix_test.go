//go:build unix

package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestHangupWhileStartingIsKept: a SIGHUP that comes while west is still
// starting (here, reading a token it blocks on) must not end it, as the
// signal's default action does: systemctl reload may follow a start at
// once, and systemd takes an end by SIGHUP for a clean one that
// Restart=on-failure leaves be. The reload is done once west runs, with
// the file as it is then.
func TestHangupWhileStartingIsKept(t *testing.T) {
	dir := t.TempDir()
	fifo, token := dir+"/token.fifo", dir+"/token"
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatalf("mkfifo: %v", err)
	}
	if err := os.WriteFile(token, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := func(tok string) string {
		return fmt.Sprintf(`{"west": {"nm": "n"}, "wstc": {"ws://127.0.0.1:9": {"ee": "no", "token": "file:%s"}}}`, tok)
	}
	cfg := writeFile(t, "c.json", conf(fifo))
	cmd, log := startWest(t, "-c", cfg)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	// Once west has opened the token's FIFO to read it, it is past its
	// runtime's start and in its own; holding the FIFO open without
	// writing holds it there.
	var w *os.File
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var err error
		if w, err = os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("west never opened the token FIFO: %v", err)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if err := os.WriteFile(cfg, []byte(conf(token)), 0o644); err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("secret\n"))
	w.Close()

	lines := make(chan string, 100)
	go func() {
		for {
			line, err := log.ReadString('\n')
			if err != nil {
				close(lines)
				return
			}
			lines <- line
		}
	}()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("west ended on a SIGHUP while starting: %v", <-exited)
			}
			if strings.Contains(line, `msg="configuration reloaded"`) {
				cmd.Process.Signal(syscall.SIGTERM)
				<-exited
				return
			}
			if strings.Contains(line, "reload rejected") {
				t.Fatalf("the SIGHUP while starting was not applied: %s", line)
			}
		case <-timeout:
			t.Fatal("no reload logged for the SIGHUP while starting")
		}
	}
}

// TestSecondSignalStopsAtOnceWhenIgnoredAtStart: a job a shell script
// starts in the background ("west -c west.json &") begins with SIGINT
// ignored. The first SIGINT still drains, and the second must still end
// west at once, though the signal's default action is then to ignore it.
func TestSecondSignalStopsAtOnceWhenIgnoredAtStart(t *testing.T) {
	testSecondSignalStops(t, func(args ...string) *exec.Cmd {
		return exec.Command("/bin/sh", append([]string{"-c", `trap "" INT; exec "$0" "$@"`, os.Args[0]}, args...)...)
	})
}
