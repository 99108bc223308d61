package node

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
)

// Anyone who reaches a wss:// tunnel server can present a certificate it
// refuses, as often as it likes: the warnings of it reach the log once a
// second, as those of refused handshakes do, while the counter counts
// every one.
func TestTLSCertificateWarningsLimited(t *testing.T) {
	ca := newTestCA(t, "west-mtls")
	cert, key := ca.issue(t, "tunnel.test", "tunnel.test")
	var gLog testutil.Buffer
	g := startNode(t, fmt.Sprintf(`{"west": {"nm": "G", "cp": "127.0.0.1:0"}, "wsts": {"sp": "wss://127.0.0.1:0",
		"tls_cert_file": %q, "tls_key_file": %q, "client_ca_file": %q}}`, cert, key, ca.file),
		Options{Logger: slog.New(slog.NewTextHandler(&gLog, nil))})
	oc, ok := newTestCA(t, "other").issue(t, "L")
	pair, err := tls.LoadX509KeyPair(oc, ok)
	if err != nil {
		t.Fatal(err)
	}
	const tries = 20
	start := time.Now()
	for range tries {
		c, err := tls.Dial("tcp", g.Addrs().Tunnel, &tls.Config{Certificates: []tls.Certificate{pair}, InsecureSkipVerify: true})
		if err != nil {
			continue
		}
		// TLS 1.3: the server's refusal comes with the first read.
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		c.Read(make([]byte, 1))
		c.Close()
	}
	client := &http.Client{Timeout: 5 * time.Second}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		_, body := fetch(t, client, "http://"+g.Addrs().Control+"/metrics")
		if got, _ := metric(body, "west_tunnel_tls_handshake_failures_total"); got >= tries {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("west_tunnel_tls_handshake_failures_total never reached %d:\n%s", tries, body)
		}
	}
	secs := int(time.Since(start)/time.Second) + 1
	warned := strings.Count(gLog.String(), `level=WARN msg="tunnel client's TLS handshake failed"`)
	if warned == 0 || warned > secs {
		t.Errorf("%d refused certificates in %d s gave %d warnings, want 1 to %d", tries, secs, warned, secs)
	}
}
