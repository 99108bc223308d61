package proxy

import (
	"io"
	"net/http"
	"testing"

	"github.com/west-tunnel/west/internal/testutil"
)

// TestHalfClosedClientGetsNoFalse502: a client that half-closes its
// connection once its request is sent (nc -N, a script's HTTP/1.0 GET) is
// taken for gone, as net/http takes it, and its request abandoned. It
// gets no answer, as the README says and as it is logged and counted
// (499), on the loop's path as on net/http's. The loop wrote it a 502,
// "the response broke off before its body began", blaming a backend that
// was answering, when the client left between the response's head and
// its body.
func TestHalfClosedClientGetsNoFalse502(t *testing.T) {
	_, backend, _ := countingBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "5")
		w.WriteHeader(http.StatusOK)
		http.NewResponseController(w).Flush()
		<-r.Context().Done() // the body would follow; the listener lets go first
	}))
	for _, tc := range []struct{ name, request string }{
		{"loop", "GET /x HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"net/http", "GET /x HTTP/1.0\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			records := make(chan Record, 1)
			h := NewHTTP(HTTPOptions{
				Routes:  []Route{{Path: "/", Target: mustURL(t, "http://"+backend+"/")}},
				Dialer:  tunnelPair(t),
				Observe: func(r Record) { records <- r },
			})
			_, addr := startServer(t, h)
			c := testutil.DialClient(t, addr)
			io.WriteString(c, tc.request)
			c.CloseWrite()
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("reading the answer: %v", err)
			}
			rec := <-records
			if len(got) > 0 {
				t.Errorf("the half-closed client got %q; counted as %d", got, rec.Status)
			}
			if rec.Status != statusClientGone {
				t.Errorf("counted as %d (%v), want %d", rec.Status, rec.Err, statusClientGone)
			}
		})
	}
}
