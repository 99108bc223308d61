package node

import (
	"errors"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// scriptedListener accepts as its script says: a connection for nil, or
// the error.
type scriptedListener struct {
	net.Listener
	script []error
}

func (l *scriptedListener) Accept() (net.Conn, error) {
	err := l.script[0]
	l.script = l.script[1:]
	if err != nil {
		return nil, err
	}
	c, peer := net.Pipe()
	peer.Close()
	return c, nil
}

// TestAcceptingAgainAtMostOnceASecond: a listener at its descriptor limit
// fails and succeeds in turn, every few milliseconds (the servers wait
// 5ms after a failure, and a connection that ends frees a descriptor);
// "accepting again" came at each success, where the failures' warning
// comes once a second. It comes at most once a second too, and the next
// one counts the accepts that failed in between.
func TestAcceptingAgainAtMostOnceASecond(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var log strings.Builder
		emfile := errors.New("accept tcp 127.0.0.1:1: accept4: too many open files")
		sl := &scriptedListener{}
		l := &acceptLogger{Listener: sl, log: slog.New(slog.NewTextHandler(&log, nil))}
		accept := func(script ...error) {
			sl.script = script
			for range script {
				if c, _ := l.Accept(); c != nil {
					c.Close()
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		lines := func() []string {
			return regexp.MustCompile(`msg="accepting again".*`).FindAllString(log.String(), -1)
		}
		var flapping []error
		for range 10 {
			flapping = append(flapping, emfile, nil)
		}
		accept(flapping...)
		if got := lines(); len(got) != 1 || !strings.Contains(got[0], "failed=1") {
			t.Fatalf("10 failures, each followed by a success, within 100ms: %q, want one line, failed=1", got)
		}
		time.Sleep(time.Second)
		accept(nil)
		if got := lines(); len(got) != 2 || !strings.Contains(got[1], "failed=9") {
			t.Errorf("the next success a second later: %q, want a second line with failed=9", got)
		}
	})
}
