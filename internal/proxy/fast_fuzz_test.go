package proxy

import (
	"bufio"
	"bytes"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// FuzzRequestHead: every head the loop takes for its own, net/http reads
// too, as the same request: the loop never carries what net/http would
// have refused or read differently.
func FuzzRequestHead(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
		"HEAD /a/b?c=d HTTP/1.1\r\nHost: h:80\r\nConnection: close\r\nTe: trailers\r\n\r\n",
		"GET /%41 HTTP/1.1\r\nhost: [::1]:8080\r\nX-A: \t1 \r\n\r\n",
		"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, close\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: h\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, head []byte) {
		end := bytes.Index(head, []byte("\r\n\r\n"))
		if end < 0 {
			return
		}
		head = head[:end+4]
		var r fastRequest
		if !r.parse(head) {
			return
		}
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if err != nil {
			t.Fatalf("the loop took %q, which net/http refuses: %v", head, err)
		}
		if req.Method != r.method || req.URL.EscapedPath() != r.path || req.URL.RawQuery != r.query ||
			req.Host != r.host || req.Close != r.close || req.ContentLength != 0 || req.Header.Get("Upgrade") != "" {
			t.Fatalf("%q: the loop read %s %s ? %s host %q close %v; net/http %s %s ? %s host %q close %v length %d",
				head, r.method, r.path, r.query, r.host, r.close,
				req.Method, req.URL.EscapedPath(), req.URL.RawQuery, req.Host, req.Close, req.ContentLength)
		}
		target, _ := url.Parse("http://target:1/base?k=v")
		out := r.outgoingHead(nil, &route{Route: Route{Path: "/", Target: target}}, "192.0.2.1", false)
		sent, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(out)))
		if err != nil {
			t.Fatalf("%q: the head sent on, %q, does not read: %v", head, out, err)
		}
		for name := range req.Header {
			if isHopHeader(name) || strings.HasPrefix(name, "X-Forwarded-") || name == "Forwarded" {
				req.Header.Del(name)
			}
		}
		if te := sent.Header.Get("Te"); te != "" && te != "trailers" {
			t.Fatalf("%q: Te %q sent on", head, te)
		}
		for _, name := range []string{"Te", "X-Forwarded-Host", "X-Forwarded-Proto"} {
			sent.Header.Del(name)
		}
		if sent.Host != "target:1" || sent.Header.Get("X-Forwarded-For") != "192.0.2.1" {
			t.Fatalf("%q: sent on as %q", head, out)
		}
		sent.Header.Del("X-Forwarded-For")
		if !slices.Equal(headerLines(sent.Header), headerLines(req.Header)) {
			t.Fatalf("%q: sent on as %q", head, out)
		}
	})
}

// FuzzResponseHead: every response head the loop reads itself,
// http.ReadResponse reads as the same status, length and persistence.
func FuzzResponseHead(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
		"HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n",
		"HTTP/1.1 304\r\nETag: \"x\"\r\nConnection: close\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
	} {
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, head []byte, isHead bool) {
		end := bytes.Index(head, []byte("\r\n\r\n"))
		if end < 0 || bytes.Contains(head[:end], []byte("\n\n")) {
			return
		}
		head = head[:end+4]
		req := getRequest
		if isHead {
			req = headRequest
		}
		w := &fastWriter{}
		resp, ok := w.parseHead(head[:end+2], req)
		if !ok {
			return
		}
		want, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(head)), req)
		if err != nil {
			t.Fatalf("the loop took %q, which net/http refuses: %v", head, err)
		}
		wantLength := want.ContentLength
		if isHead || want.StatusCode == 204 || want.StatusCode == 304 {
			wantLength = 0
		}
		if resp.StatusCode != want.StatusCode || resp.ContentLength != wantLength || resp.Close != want.Close {
			t.Fatalf("%q: the loop read %d length %d close %v; net/http %d length %d close %v",
				head, resp.StatusCode, resp.ContentLength, resp.Close, want.StatusCode, wantLength, want.Close)
		}
		got, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(w.head)), req)
		if err != nil {
			t.Fatalf("%q: the head for the client, %q, does not read: %v", head, w.head, err)
		}
		for name := range want.Header {
			if isHopHeader(name) {
				want.Header.Del(name)
			}
		}
		got.Header.Del("Connection")
		if _, dated := want.Header["Date"]; !dated {
			// The loop dates an undated answer.
			if _, err := http.ParseTime(got.Header.Get("Date")); err != nil {
				t.Fatalf("%q: the head for the client, %q, has no Date of its own: %v", head, w.head, err)
			}
			got.Header.Del("Date")
		}
		if got.StatusCode != want.StatusCode || !slices.Equal(headerLines(got.Header), headerLines(want.Header)) {
			t.Fatalf("%q: the head for the client is %q", head, w.head)
		}
	})
}
