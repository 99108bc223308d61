//go:build linux

package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestBackend(t *testing.T) {
	srv := httptest.NewServer(backendHandler())
	defer srv.Close()
	get := func(path string) (int, []byte) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, b
	}
	if code, b := get("/small"); code != 200 || string(b) != "hello, west\n" {
		t.Errorf("/small: %d %q", code, b)
	}
	// More than one chunk, and not a multiple of it.
	const n = 600_001
	code, b := get("/download?n=600001")
	if code != 200 || len(b) != n || !bytes.Equal(b[:len(chunk)], chunk) || !bytes.Equal(b[2*len(chunk):], chunk[:n-2*len(chunk)]) {
		t.Errorf("/download: %d, %d bytes", code, len(b))
	}
	for _, bad := range []string{"/download", "/download?n=-1", "/download?n=many"} {
		if code, _ := get(bad); code != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", bad, code)
		}
	}
	resp, err := http.Post(srv.URL+"/upload", "application/octet-stream", strings.NewReader(strings.Repeat("x", 300_000)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "300000" {
		t.Errorf("/upload: %d %q", resp.StatusCode, b)
	}
}
