package sockio

import (
	"net"
	"os"
	"testing"
)

// openFiles counts the process's open descriptors.
func openFiles(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}

// TestShedListenerCloseFreesSpare: a listener's spare descriptor is
// closed with it; a west that reloads listeners in and out would leak one
// each time otherwise.
func TestShedListenerCloseFreesSpare(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	open := openFiles(t)
	sl := ShedListener(ln, nil)
	if n := openFiles(t); n != open+1 {
		t.Fatalf("%d descriptors open with the spare, want %d", n, open+1)
	}
	sl.Close()
	sl.Close()
	if n := openFiles(t); n != open-1 {
		t.Errorf("%d descriptors open after Close, want %d: the listener's and the spare closed", n, open-1)
	}
}
