package node

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/tunnel"
)

// servedSerial is the serial number of the certificate that the wss://
// tunnel server at addr presents to a new client.
func servedSerial(t *testing.T, addr string, ca *testCA) *big.Int {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "tunnel.test"})
	if err != nil {
		t.Fatalf("TLS to %s: %v", addr, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber
}

// fileSerial is the serial number of the PEM certificate in file.
func fileSerial(t *testing.T, file string) *big.Int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c.SerialNumber
}

// TestReloadRotatesServerCertificate: a certificate renewed on disk under
// the same paths (as certbot does) is served to new tunnel clients after a
// reload, tunnels up stay up, a reload with a broken key file is refused
// and keeps the certificate in force, and files named anew are taken.
func TestReloadRotatesServerCertificate(t *testing.T) {
	ca := newTestCA(t, "west-rotate")
	cert, key := ca.issue(t, "tunnel.test", "tunnel.test")
	gconf := fmt.Sprintf(`{"west": {"nm": "G"}, "wsts": {"sp": "wss://127.0.0.1:0",
		"tls_cert_file": %q, "tls_key_file": %q}}`, cert, key)
	g := startNode(t, gconf, Options{})
	srv := "wss://" + g.Addrs().Tunnel
	l := startNode(t, fmt.Sprintf(`{"west": {"nm": "L"}, "wstc": {%q: {"ca_file": %q, "server_name": "tunnel.test"}}}`,
		srv, ca.file), Options{})
	waitClient(t, l, srv, tunnel.StateUp)
	old := servedSerial(t, g.Addrs().Tunnel, ca)

	// Renew: the same file names, a new certificate and key.
	if c2, k2 := ca.issue(t, "tunnel.test", "tunnel.test"); c2 != cert || k2 != key {
		t.Fatalf("renewal wrote %s, %s, not %s, %s", c2, k2, cert, key)
	}
	renewed := fileSerial(t, cert)
	if err := g.Reload(mustParse(t, gconf)); err != nil {
		t.Fatalf("reload after renewal: %v", err)
	}
	if got := servedSerial(t, g.Addrs().Tunnel, ca); got.Cmp(renewed) != 0 {
		t.Errorf("after the reload the server presents serial %v, want the renewed %v (the old one was %v)", got, renewed, old)
	}
	if st := l.Client(srv).Status(); st.State != tunnel.StateUp || st.Connects != 1 {
		t.Errorf("the tunnel up during the reload: %s after %d connects, want up after 1", st.State, st.Connects)
	}

	// A key file broken on disk refuses the reload, naming the key, and
	// the renewed certificate stays in force.
	if err := os.WriteFile(key, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := g.Reload(mustParse(t, gconf))
	if err == nil || !strings.Contains(err.Error(), "tls_key_file") {
		t.Errorf("reload with a broken key file: %v, want a refusal naming tls_key_file", err)
	}
	if got := servedSerial(t, g.Addrs().Tunnel, ca); got.Cmp(renewed) != 0 {
		t.Errorf("after a refused reload the server presents serial %v, want %v", got, renewed)
	}

	// Files named anew take a reload too.
	cert2, key2 := ca.issue(t, "tunnel2.test", "tunnel.test")
	if err := g.Reload(mustParse(t, strings.NewReplacer(cert, cert2, key, key2).Replace(gconf))); err != nil {
		t.Fatalf("reload naming new files: %v", err)
	}
	if got, want := servedSerial(t, g.Addrs().Tunnel, ca), fileSerial(t, cert2); got.Cmp(want) != 0 {
		t.Errorf("after naming new files the server presents serial %v, want %v", got, want)
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// redialled drops the tunnel of peer on g and waits until client url of
// n is up again on a new session.
func redialled(t *testing.T, g, n *Node, peer, url string) {
	t.Helper()
	old := g.Server().Session(peer)
	if old == nil {
		t.Fatalf("%s is not connected", peer)
	}
	old.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := n.Client(url).Status()
		if st.State == tunnel.StateUp && g.Server().Session(peer) != nil && g.Server().Session(peer) != old {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not come back after its tunnel was dropped: %s, last error %v", peer, st.State, st.LastError)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestReloadRenewsTunnelClientCredentials: a tunnel client whose config is
// unchanged presents, from its next connection on, the client certificate
// and token renewed on disk before a reload; the tunnel up stays up, and a
// broken key file refuses the reload.
func TestReloadRenewsTunnelClientCredentials(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "west-server")
	cert, key := ca.issue(t, "tunnel.test", "tunnel.test")
	oldClients := newTestCA(t, "clients-2025")
	newClients := newTestCA(t, "clients-2026")
	clientCA := filepath.Join(dir, "clients-ca.pem")
	copyFile(t, oldClients.file, clientCA)
	tokenG, tokenL := filepath.Join(dir, "g.token"), filepath.Join(dir, "l.token")
	for _, f := range []string{tokenG, tokenL} {
		if err := os.WriteFile(f, []byte("old-token-0123456789abcdef\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	gconf := fmt.Sprintf(`{"west": {"nm": "G"}, "wsts": {"sp": "wss://127.0.0.1:0",
		"tls_cert_file": %q, "tls_key_file": %q, "client_ca_file": %q, "tokens": {"L": "file:%s"}}}`, cert, key, clientCA, tokenG)
	g := startNode(t, gconf, Options{})
	g.gate.Load().failDelay = 10 * time.Millisecond
	srv := "wss://" + g.Addrs().Tunnel
	lCert, lKey := filepath.Join(dir, "l.pem"), filepath.Join(dir, "l.key")
	c, k := oldClients.issue(t, "L")
	copyFile(t, c, lCert)
	copyFile(t, k, lKey)
	lconf := fmt.Sprintf(`{"west": {"nm": "L"}, "wstc": {%q: {"ca_file": %q, "server_name": "tunnel.test",
		"cert_file": %q, "key_file": %q, "token": "file:%s"}}}`, srv, ca.file, lCert, lKey, tokenL)
	l := startNode(t, lconf, Options{})
	waitClient(t, l, srv, tunnel.StateUp)
	waitUp(t, g, "L")

	// The clients' CA changes: both ends renew their files and reload.
	copyFile(t, newClients.file, clientCA)
	if err := g.Reload(mustParse(t, gconf)); err != nil {
		t.Fatalf("reload of G: %v", err)
	}
	c, k = newClients.issue(t, "L")
	copyFile(t, c, lCert)
	copyFile(t, k, lKey)
	if err := l.Reload(mustParse(t, lconf)); err != nil {
		t.Fatalf("reload of L: %v", err)
	}
	if st := l.Client(srv).Status(); st.State != tunnel.StateUp || st.Connects != 1 {
		t.Errorf("the tunnel up during the reload: %s after %d connects, want up after 1", st.State, st.Connects)
	}
	redialled(t, g, l, "L", srv)

	// So does the token.
	for _, f := range []string{tokenG, tokenL} {
		if err := os.WriteFile(f, []byte("new-token-0123456789abcdef\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// L first: G's reload drops the tunnel its old token admitted, and L
	// comes back with the new one.
	before := l.Client(srv).Status().Connects
	if err := l.Reload(mustParse(t, lconf)); err != nil {
		t.Fatalf("reload of L: %v", err)
	}
	if err := g.Reload(mustParse(t, gconf)); err != nil {
		t.Fatalf("reload of G: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := l.Client(srv).Status()
		if st.State == tunnel.StateUp && st.Connects > before && g.Server().Session("L") != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("L did not come back with its renewed token: %s after %d connects, last error %v", st.State, st.Connects, st.LastError)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// A key file broken on disk refuses the reload, naming it.
	if err := os.WriteFile(lKey, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := l.Reload(mustParse(t, lconf)); err == nil || !strings.Contains(err.Error(), "key_file") {
		t.Errorf("reload with a broken key file: %v, want a refusal naming key_file", err)
	}
}

// TestReloadRereadsBackendCA: an HTTP listener's tls_ca_file, renewed on
// disk under the same path, verifies https:// backends from the next
// reload on.
func TestReloadRereadsBackendCA(t *testing.T) {
	be := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "secure")
	}))
	be.Config.ErrorLog = log.New(io.Discard, "", 0) // the first request fails its handshake on purpose
	be.StartTLS()
	defer be.Close()
	caFile := filepath.Join(t.TempDir(), "backend-ca.pem")
	copyFile(t, newTestCA(t, "retired").file, caFile)
	g := startNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	lconf := fmt.Sprintf(`{"west": {"nm": "L"}, "proxy": {"http://127.0.0.1:0": {"ea": "ws://%s", "tls_ca_file": %q,
		"/": {"ou": %q}}}}`, g.Addrs().Tunnel, caFile, be.URL)
	l := startNode(t, lconf, Options{})
	if code, body := getStatus(t, proxyURL(t, l)+"/"); code != 502 {
		t.Fatalf("backend outside tls_ca_file: %d %q, want 502", code, body)
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: be.Certificate().Raw})
	if err := os.WriteFile(caFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := l.Reload(mustParse(t, lconf)); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if code, body := getStatus(t, proxyURL(t, l)+"/"); code != 200 || body != "secure" {
		t.Errorf("after renewing tls_ca_file and reloading: %d %q, want 200", code, body)
	}
}
