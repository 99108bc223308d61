package proxy

import (
	"net/url"
	"testing"
)

// TestCanonicalAddrAllocatesOnce: canonicalAddr runs for every request
// the stream transport sends (RoundTrip); a port spelt the usual way
// costs no more than the join of host and port.
func TestCanonicalAddrAllocatesOnce(t *testing.T) {
	for _, s := range []string{"http://127.0.0.1:8080/x", "http://be.example:9921/", "http://be.example/"} {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		if n := testing.AllocsPerRun(1000, func() { _ = canonicalAddr(u) }); n > 1 {
			t.Errorf("canonicalAddr(%s): %v allocations per call; want 1", s, n)
		}
	}
	for in, want := range map[string]string{"https://h": "h:443", "https://h:0443": "h:443", "http://h:08080": "h:8080", "http://h": "h:80", "http://h:0": "h:0"} {
		u, _ := url.Parse(in)
		if got := canonicalAddr(u); got != want {
			t.Errorf("canonicalAddr(%s) = %s; want %s", in, got, want)
		}
	}
}
