//go:build unix

package node

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestOverlappingReloadsApplyTheLaterRead: of two reloads from the file
// that overlap (SIGHUP and POST /api/reload), the one that read the file
// later is in force once both have returned. A reload read the file
// before it took the node's lock, so one whose read was slow could apply
// an older file over a newer one. A FIFO in the file's place is the slow
// read: the first reload waits in it until the test writes.
func TestOverlappingReloadsApplyTheLaterRead(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "west.json")
	var pre prebound
	listen := pre.addr(t)
	conf := func(path string) string {
		return fmt.Sprintf(`{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"},
			"proxy": {"http://%s": {"en": "L", %q: {"ou": "http://127.0.0.1:1/"}}}}`, listen, path)
	}
	g := runFromFile(t, file, conf("/zero"), &pre)

	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(fifo, file); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(file, fifo); err != nil { // a name to write the FIFO by
		t.Fatal(err)
	}
	first := make(chan error, 1)
	go func() { first <- g.ReloadFile() }()
	time.Sleep(200 * time.Millisecond) // the first reload waits in the FIFO

	newer := filepath.Join(dir, "newer")
	if err := os.WriteFile(newer, []byte(conf("/newer")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(newer, file); err != nil {
		t.Fatal(err)
	}
	second := make(chan error, 1)
	go func() { second <- g.ReloadFile() }()
	time.Sleep(200 * time.Millisecond) // the second has read the newer file, or waits to
	if err := os.WriteFile(fifo, []byte(conf("/older")), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, done := range []chan error{first, second} {
		if err := <-done; err != nil {
			t.Fatalf("reload: %v", err)
		}
	}
	if got := g.config().Proxies[0].Routes[0].Path; got != "/newer" {
		t.Errorf("after both reloads, the node runs route %s; the later read was of /newer", got)
	}
}
