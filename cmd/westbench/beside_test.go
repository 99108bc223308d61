//go:build linux

package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestDownloadBesideProbeFails: a small GET beside the delayed download
// that fails is an error of the round, as a failed request of a
// requests/s round is noted, not the end of the sample, which left the
// median to the few GETs before it, with nothing said.
func TestDownloadBesideProbeFails(t *testing.T) {
	var smalls atomic.Int64
	backend := backendHandler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/small" && smalls.Add(1) > 3 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		if r.URL.Path == "/download" {
			time.Sleep(300 * time.Millisecond) // long enough for the probe to fail
		}
		backend.ServeHTTP(w, r)
	}))
	defer srv.Close()
	_, p50, err := downloadBeside(context.Background(), srv.URL, 1<<20)
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("p50 %v from the small GETs before one failed, error %v; want the failure", p50, err)
	}
}
