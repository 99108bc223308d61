// Package sdnotify tells systemd how west is doing, through the datagram
// socket a unit of Type=notify names in NOTIFY_SOCKET (sd_notify(3)): ready
// once its listeners are open, reloading while it applies a new file, and
// stopping while it drains. systemd then starts units ordered after west
// only once it listens, fails a start whose listeners cannot open rather
// than report it started, and shows the last reload's outcome in
// `systemctl status`.
//
// The protocol is one datagram of newline-separated KEY=VALUE lines; the
// standard library's net package speaks it, so no library is needed.
package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strings"
	"time"
	"unicode/utf8"
)

// writeTimeout bounds the sending of a notification. A datagram to a
// socket whose queue is full waits for room (net.unix.max_dgram_qlen
// datagrams): a systemd too busy to read, or a NOTIFY_SOCKET that names
// a socket no one reads, would hold west with it: at start, before it
// serves, or at a reload, and every reload after it. Given up, the
// notification is logged as not sent, as when the socket is gone.
var writeTimeout = 5 * time.Second

// Notify sends state, lines such as "READY=1", to systemd. Without
// NOTIFY_SOCKET (west not run by systemd, or not as Type=notify) it does
// nothing.
func Notify(state ...string) error {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil
	}
	// A name starting with "@" is in Linux's abstract namespace, which
	// the net package reads it as.
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("tell systemd %q: %w", state, err)
	}
	defer c.Close()
	c.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := c.Write([]byte(strings.Join(state, "\n") + "\n")); err != nil {
		return fmt.Errorf("tell systemd %q: %w", state, err)
	}
	return nil
}

// Ready says west serves: its listeners are open, or a reload is done.
// status, when not empty, is what `systemctl status` shows.
func Ready(status string) error { return Notify(withStatus(status, "READY=1")...) }

// Reloading says west applies a new configuration; Ready ends it. The
// time on CLOCK_MONOTONIC, where there is one, lets a unit of
// Type=notify-reload tell this reload from an earlier one.
func Reloading() error { return Notify(reloading()...) }

// Stopping says west drains and will exit.
func Stopping() error { return Notify("STOPPING=1", "STATUS=stopping") }

// maxDatagram is the longest notification systemd reads
// (NOTIFY_BUFFER_MAX, PIPE_BUF): it drops a longer one whole, READY=1
// with it, and a unit of Type=notify then waits for it in vain.
const maxDatagram = 4096

func withStatus(status string, lines ...string) []string {
	if status == "" {
		return lines
	}
	// One line: what follows a newline, or a carriage return, at which
	// systemd splits too, would be read as a key.
	status = strings.NewReplacer("\n", " ", "\r", " ").Replace(status)
	// Short enough for the datagram to be read: a reload that failed for
	// many listeners has a line of error for each. Cut between
	// characters: systemd ignores a status that is not UTF-8.
	room := maxDatagram - len("STATUS=\n")
	for _, l := range lines {
		room -= len(l) + len("\n")
	}
	if len(status) > room {
		cut := room - len("…")
		for cut > 0 && !utf8.RuneStart(status[cut]) {
			cut--
		}
		status = status[:cut] + "…"
	}
	return append(lines, "STATUS="+status)
}
