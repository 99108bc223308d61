package proxy

import (
	"net/http"
	"net/http/httputil"
	"sync"
)

// This file holds test-only variants of the proxy's hot paths with the
// tuning the benchmarks suggest, so that "tunnel-tuned" in the benchmarks
// measures the gain before anyone changes the code itself.

// tune applies to h what the benchmarks suggest for NewHTTP: pooled
// 64 KiB copy buffers in each ReverseProxy (it allocates 32 KiB per
// request without a pool) and 64 KiB buffers in the fallback transport (default 4 KiB).
func tune(h *HTTP) {
	for i := range h.routes {
		h.routes[i].proxy.BufferPool = copyPool{}
	}
	fallback := h.transport.fallback.(*http.Transport)
	fallback.ReadBufferSize = 64 << 10
	fallback.WriteBufferSize = 64 << 10
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// copyPool is an httputil.BufferPool over bufPool.
type copyPool struct{}

var _ httputil.BufferPool = copyPool{}

func (copyPool) Get() []byte  { return *bufPool.Get().(*[]byte) }
func (copyPool) Put(b []byte) { bufPool.Put(&b) }
