package main

import (
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"github.com/west-tunnel/west/internal/testutil"
)

func TestMain(m *testing.M) { testutil.VerifyTestMain(m) }

// TestLiveHeapCountsReachable checks that the live figure grows by what a
// collection finds reachable and leaves out what it does not.
func TestLiveHeapCountsReachable(t *testing.T) {
	runtime.GC()
	before := liveHeap()
	kept := make([][]byte, 64)
	for i := range kept {
		kept[i] = make([]byte, 1<<20)
	}
	runtime.GC()
	during := liveHeap()
	runtime.KeepAlive(kept)
	kept = nil
	runtime.GC()
	after := liveHeap()
	if during < before+60<<20 {
		t.Fatalf("live heap %d with 64 MiB held, %d before: want at least 60 MiB more", during, before)
	}
	if after > during-60<<20 {
		t.Fatalf("live heap %d after dropping 64 MiB, %d while held: want at least 60 MiB less", after, during)
	}
}

func TestServePprof(t *testing.T) {
	var out strings.Builder
	stop, err := servePprof("127.0.0.1:0", &out)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	url := strings.TrimSpace(strings.TrimPrefix(out.String(), "pprof: "))
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	resp, err := client.Get(url + "heap?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET heap profile: status %d, %v", resp.StatusCode, err)
	}
	if !strings.Contains(string(body), "heap profile:") {
		t.Fatalf("heap profile missing its header: %.200q", body)
	}
	stop()
	if _, err := client.Get(url); err == nil {
		t.Fatal("pprof still served after stop")
	}
}
