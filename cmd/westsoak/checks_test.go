package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
)

// TestChecksCanFail: each check the soak makes of a response fails when a
// real server breaks it, and the failures are the ones that make the soak
// exit 1.
func TestChecksCanFail(t *testing.T) {
	release := make(chan struct{})
	mux := http.NewServeMux()
	// Right length, one wrong byte.
	mux.HandleFunc("/s/big", func(w http.ResponseWriter, r *http.Request) {
		var n int64
		fmt.Sscan(r.URL.Query().Get("n"), &n)
		b := make([]byte, n)
		io.ReadFull(&testutil.Pattern{}, b)
		b[n/2]++
		w.Header().Set("Content-Length", fmt.Sprint(n))
		w.Write(b)
	})
	// A chunked body that ends cleanly, short.
	mux.HandleFunc("/s/stream", func(w http.ResponseWriter, r *http.Request) {
		var n int64
		fmt.Sscan(r.URL.Query().Get("n"), &n)
		io.CopyN(w, &testutil.Pattern{}, n-1)
	})
	// Headers, then a body that never ends.
	mux.HandleFunc("/s/echo", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Length", "1000")
		w.Write([]byte("x"))
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	// No headers at all.
	silent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer silent.Close()
	defer close(release)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}

	st := &stats{}
	for _, c := range []struct {
		kind string
		size int64
		base string
		want string
	}{
		{"get", 70000, srv.URL, "get corrupt"},
		{"stream", 70000, srv.URL, "stream corrupt"},
		{"post", 1000, srv.URL, "post hung"},
		{"get", 10, silent.URL, "get hung"},
	} {
		o := doOne(hc, c.base, c.kind, c.size, 300*time.Millisecond)
		if o.cause != c.want {
			t.Errorf("%s of %d bytes from %s: %q (%s), want %q", c.kind, c.size, c.base, o.cause, o.detail, c.want)
		}
		st.add(o)
	}
	if s := st.snapshot(); s.corrupt != 2 || s.hung != 2 || s.ok != 0 {
		t.Errorf("counted ok=%d corrupt=%d hung=%d, want 0, 2 and 2", s.ok, s.corrupt, s.hung)
	}
	if !strings.Contains(st.snapshot().causes(), "get corrupt:1") {
		t.Errorf("causes %q", st.snapshot().causes())
	}
}
