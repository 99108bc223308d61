package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// listen makes a notification socket named name and points NOTIFY_SOCKET
// at it; read returns the next datagram.
func listen(t *testing.T, name string) (read func() string) {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", name)
	return func() string {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var b [8192]byte
		n, err := c.Read(b[:])
		if err != nil {
			t.Fatalf("no notification: %v", err)
		}
		return string(b[:n])
	}
}

// TestNotify: systemd names its socket by a path or, with a leading "@",
// in the abstract namespace; a status is one line, since what followed a
// newline would be read as a key of its own.
func TestNotify(t *testing.T) {
	for name, sock := range map[string]string{
		"path":     t.TempDir() + "/n",
		"abstract": fmt.Sprintf("@west-sdnotify-test-%d", os.Getpid()),
	} {
		t.Run(name, func(t *testing.T) {
			read := listen(t, sock)
			if err := Ready("reload rejected: line one\nREADY=0"); err != nil {
				t.Fatal(err)
			}
			if got, want := read(), "READY=1\nSTATUS=reload rejected: line one READY=0\n"; got != want {
				t.Errorf("Ready: %q, want %q", got, want)
			}
			if err := Reloading(); err != nil {
				t.Fatal(err)
			}
			if got := read(); !regexp.MustCompile(`^RELOADING=1\nMONOTONIC_USEC=[1-9][0-9]*\n$`).MatchString(got) {
				t.Errorf("Reloading: %q, want RELOADING=1 and MONOTONIC_USEC", got)
			}
			if err := Stopping(); err != nil {
				t.Fatal(err)
			}
			if got, want := read(), "STOPPING=1\nSTATUS=stopping\n"; got != want {
				t.Errorf("Stopping: %q, want %q", got, want)
			}
		})
	}
}

// TestNotifyWithoutSystemd: outside a unit of Type=notify there is no
// NOTIFY_SOCKET, and nothing to tell; a socket named but gone is an error
// to log, since systemd would wait for the notification in vain.
func TestNotifyWithoutSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if err := Ready("running"); err != nil {
		t.Errorf("without NOTIFY_SOCKET: %v, want nil", err)
	}
	t.Setenv("NOTIFY_SOCKET", t.TempDir()+"/gone")
	if err := Ready("running"); err == nil {
		t.Error("with NOTIFY_SOCKET naming no socket: nil, want an error")
	}
}

// TestNotifyToAFullSocket: a datagram to a socket whose queue is full
// waits for room; a systemd that does not read, or a NOTIFY_SOCKET no
// one reads, must not hold west, which sends READY=1 before it serves.
func TestNotifyToAFullSocket(t *testing.T) {
	name := t.TempDir() + "/full"
	listen(t, name) // and never read
	fill, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer fill.Close()
	for i := 0; ; i++ {
		fill.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
		if _, err := fill.Write([]byte("WATCHDOG=1\n")); errors.Is(err, os.ErrDeadlineExceeded) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if i == 100_000 {
			t.Fatal("the socket's queue never filled")
		}
	}

	defer func(d time.Duration) { writeTimeout = d }(writeTimeout)
	writeTimeout = 100 * time.Millisecond
	done := make(chan error, 1)
	go func() { done <- Ready("running") }()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("to a full socket: %v, want a timeout", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("to a full socket: Notify still blocked after 10s") // it ends with the socket, closed at cleanup
	}
}

// TestNotifyStatusAsSystemdReadsIt: systemd splits a notification at
// carriage returns as at newlines, and drops one longer than 4096 bytes
// whole, READY=1 with it: the errors of a reload that failed for many
// listeners make a status that long.
func TestNotifyStatusAsSystemdReadsIt(t *testing.T) {
	read := listen(t, t.TempDir()+"/n")
	if err := Ready("rejected\rSTOPPING=1"); err != nil {
		t.Fatal(err)
	}
	if got, want := read(), "READY=1\nSTATUS=rejected STOPPING=1\n"; got != want {
		t.Errorf("a status with a carriage return: %q, want %q", got, want)
	}
	long := strings.Repeat("é", 3000) // cut where a character is not whole
	if err := Ready(long); err != nil {
		t.Fatal(err)
	}
	got := read()
	if len(got) > 4096 || !strings.HasPrefix(got, "READY=1\nSTATUS=éé") || !strings.HasSuffix(got, "…\n") || !utf8.ValidString(got) {
		t.Errorf("a status of %d bytes: %d bytes, %q...%q; want READY=1 and the status cut, as UTF-8, to fit 4096", len(long), len(got), got[:min(len(got), 40)], got[max(0, len(got)-20):])
	}
}
