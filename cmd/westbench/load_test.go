//go:build linux

package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"
)

// TestRequestsWorkCoversCPUWindow: the CPU a process spends in a
// requests/s round is read before the round's warm-up and after its last
// request, so the requests it is divided by must be every request the
// round made in that time, warm-up and tail included, or CPU per request
// comes out too high by (warm-up + duration) / duration.
func TestRequestsWorkCoversCPUWindow(t *testing.T) {
	var served atomic.Int64
	backend := backendHandler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		backend.ServeHTTP(w, r)
	}))
	defer srv.Close()
	self, err := os.FindProcess(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	w := &west{name: "self", cmd: &exec.Cmd{Process: self}}
	b := &bench{
		opts: &options{rounds: 1, conns: 2, warmup: 400 * time.Millisecond, duration: 200 * time.Millisecond,
			only: map[string]bool{mRPSN: true}},
		paths:   []*path{{name: "direct", url: srv.URL, wests: []*west{w}}},
		results: map[string]map[string][]float64{},
		cpu:     map[*west]map[string]float64{},
		work:    map[*west]map[string]float64{},
	}
	if err := b.measure(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, want := b.work[w][mRPSN], float64(served.Load()); got != want || want == 0 {
		t.Fatalf("charged %.0f requests for the round's CPU; the backend served %.0f in that time", got, want)
	}
}
