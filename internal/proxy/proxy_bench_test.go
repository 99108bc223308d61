package proxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"

	"github.com/west-tunnel/west/internal/wire"
)

// benchBackend answers /small with a short body and /download?n=N with N
// bytes written from one reused buffer.
func benchBackend(b *testing.B) *url.URL {
	b.Helper()
	chunk := make([]byte, 256<<10)
	mux := http.NewServeMux()
	mux.HandleFunc("/small", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "hello, west\n")
	})
	mux.HandleFunc("/download", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		for n > 0 {
			k := min(n, int64(len(chunk)))
			if _, err := w.Write(chunk[:k]); err != nil {
				return
			}
			n -= k
		}
	})
	srv := httptest.NewServer(mux)
	b.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return u
}

// directDialer opens plain TCP connections, to measure the reverse proxy
// without a tunnel.
var directDialer = DialerFunc(func(ctx context.Context, h wire.Header) (net.Conn, error) {
	return (&net.Dialer{}).DialContext(ctx, "tcp", h.Target)
})

// benchPaths lists the ways a benchmark's requests can take to the
// backend: direct, through an HTTP listener (Server) dialling TCP,
// through one over an in-process tunnel, the same handler under
// net/http's server alone (as listeners ran until the Server's loop), and
// that with the HTTP proxy tuned as in tuned_bench_test.go.
var benchPaths = []string{"direct", "proxy", "tunnel", "tunnel-nethttp", "tunnel-tuned"}

// benchPath starts what the path name needs and returns its base URL.
func benchPath(b *testing.B, name string) string {
	be := benchBackend(b)
	var h *HTTP
	switch name {
	case "direct":
		return be.String()
	case "proxy":
		h = NewHTTP(HTTPOptions{Routes: []Route{{Path: "/", Target: be}}, Dialer: directDialer})
	case "tunnel", "tunnel-nethttp":
		h = NewHTTP(HTTPOptions{Routes: []Route{{Path: "/", Target: be}}, Dialer: tunnelPair(b)})
	case "tunnel-tuned":
		h = NewHTTP(HTTPOptions{Routes: []Route{{Path: "/", Target: be}}, Dialer: tunnelPair(b)})
		tune(h)
	}
	if name == "tunnel-nethttp" || name == "tunnel-tuned" {
		srv := httptest.NewServer(h)
		b.Cleanup(func() { srv.Close(); h.CloseIdleConnections() })
		return srv.URL
	}
	_, addr := startServer(b, h)
	return "http://" + addr
}

func benchClient(b *testing.B) *http.Client {
	tr := &http.Transport{
		MaxIdleConns: 256, MaxIdleConnsPerHost: 256, DisableCompression: true,
		ReadBufferSize: 64 << 10, WriteBufferSize: 64 << 10,
	}
	b.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func get(b *testing.B, c *http.Client, url string, buf []byte) int64 {
	resp, err := c.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var n int64
	for {
		k, err := resp.Body.Read(buf)
		n += int64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	if resp.StatusCode != 200 {
		b.Fatalf("GET %s: %s", url, resp.Status)
	}
	return n
}

// BenchmarkHTTPSmall sends one small GET at a time on a kept-alive
// connection: direct, through proxy.HTTP, and through proxy.HTTP and a
// tunnel.
func BenchmarkHTTPSmall(b *testing.B) {
	for _, name := range benchPaths {
		b.Run(name, func(b *testing.B) {
			url := benchPath(b, name) + "/small"
			c := benchClient(b)
			buf := make([]byte, 4096)
			b.ReportAllocs()
			for b.Loop() {
				get(b, c, url, buf)
			}
		})
	}
}

// BenchmarkHTTPSmallParallel is BenchmarkHTTPSmall from GOMAXPROCS*16
// goroutines, each with its own connection.
func BenchmarkHTTPSmallParallel(b *testing.B) {
	for _, name := range benchPaths {
		b.Run(name, func(b *testing.B) {
			url := benchPath(b, name) + "/small"
			c := benchClient(b)
			b.ReportAllocs()
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				buf := make([]byte, 4096)
				for pb.Next() {
					get(b, c, url, buf)
				}
			})
		})
	}
}

// BenchmarkHTTPDownload fetches 4 MiB bodies one at a time.
func BenchmarkHTTPDownload(b *testing.B) {
	const size = 4 << 20
	for _, name := range benchPaths {
		b.Run(name, func(b *testing.B) {
			url := benchPath(b, name) + "/download?n=" + strconv.Itoa(size)
			c := benchClient(b)
			buf := make([]byte, 256<<10)
			b.SetBytes(size)
			b.ReportAllocs()
			for b.Loop() {
				if n := get(b, c, url, buf); n != size {
					b.Fatalf("got %d of %d bytes", n, size)
				}
			}
		})
	}
}
