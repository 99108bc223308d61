package node

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/config"
	"github.com/west-tunnel/west/internal/testutil"
	"github.com/west-tunnel/west/internal/tunnel"
	"github.com/west-tunnel/west/internal/wire"
)

// testCA issues certificates for the tests' TLS tunnels.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // the CA certificate as PEM
	dir  string
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{cert: cert, key: key, dir: t.TempDir()}
	ca.file = ca.write(t, name+"-ca.pem", "CERTIFICATE", der)
	return ca
}

func (ca *testCA) write(t *testing.T, name, typ string, der []byte) string {
	t.Helper()
	f := filepath.Join(ca.dir, name)
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// issue returns the PEM files of a certificate for cn, valid for the
// given DNS names and for 127.0.0.1.
func (ca *testCA) issue(t *testing.T, cn string, dns ...string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     dns,
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	base := strings.NewReplacer("/", "_", ":", "_").Replace(cn)
	return ca.write(t, base+".pem", "CERTIFICATE", der), ca.write(t, base+".key", "EC PRIVATE KEY", kder)
}

// waitClient waits until the node's tunnel client for url reaches state.
func waitClient(t *testing.T, n *Node, url string, state tunnel.State) tunnel.Status {
	t.Helper()
	c := n.Client(url)
	if c == nil {
		t.Fatalf("no tunnel client for %s", url)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := c.Status()
		if st.State == state {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("tunnel client for %s: state %s (last error %v), want %s", url, st.State, st.LastError, state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func getStatus(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(b)
}

func TestTLSAndTokens(t *testing.T) {
	be := backend(t)
	ca := newTestCA(t, "west-test")
	cert, key := ca.issue(t, "tunnel.test", "tunnel.test")
	t.Setenv("WEST_TEST_TOKEN_L", "token-of-L-0123456789abcdef")
	t.Setenv("WEST_TEST_TOKEN_O", "token-of-O-0123456789abcdef")

	g := startNode(t, fmt.Sprintf(`{"west": {"nm": "G"}, "wsts": {"sp": "wss://127.0.0.1:0",
		"tls_cert_file": %q, "tls_key_file": %q,
		"tokens": {"case1.L": "env:WEST_TEST_TOKEN_L", "other": "env:WEST_TEST_TOKEN_O"}}}`, cert, key), Options{})
	g.gate.Load().failDelay = 50 * time.Millisecond
	srv := "wss://" + g.Addrs().Tunnel
	l := startNode(t, fmt.Sprintf(`{"west": {"nm": "case1.L"},
		"wstc": {%q: {"ca_file": %q, "server_name": "tunnel.test", "token": "env:WEST_TEST_TOKEN_L"}},
		"proxy": {"http://127.0.0.1:0": {"ea": %q, "/px": {"ou": "%s/x"}}}}`, srv, ca.file, srv, be.URL), Options{})
	waitClient(t, l, srv, tunnel.StateUp)
	waitUp(t, g, "case1.L") // the client is up once it has the server's answer, a moment before the server registers it
	real := g.Server().Session("case1.L")
	if code, body := getStatus(t, proxyURL(t, l)+"/px/ok"); code != 200 {
		t.Fatalf("request over TLS tunnel: %d %s", code, body)
	}

	// Each impostor is refused, and none displaces the real case1.L.
	impostors := []struct {
		name, wstc, want string
	}{
		{"other's token", fmt.Sprintf(`{"ca_file": %q, "token": "env:WEST_TEST_TOKEN_O"}`, ca.file), "403"},
		{"no token", fmt.Sprintf(`{"ca_file": %q}`, ca.file), "403"},
		{"wrong CA", fmt.Sprintf(`{"ca_file": %q, "token": "env:WEST_TEST_TOKEN_L"}`, newTestCA(t, "evil").file), "certificate"},
		{"system roots", `{"token": "env:WEST_TEST_TOKEN_L"}`, "certificate"},
	}
	for _, im := range impostors {
		bad := startNode(t, fmt.Sprintf(`{"west": {"nm": "case1.L"}, "wstc": {%q: %s}}`, srv, im.wstc), Options{})
		st := waitClient(t, bad, srv, tunnel.StateBackoff)
		if st.LastError == nil || !strings.Contains(st.LastError.Error(), im.want) {
			t.Errorf("%s: last error %v, want it to mention %q", im.name, st.LastError, im.want)
		}
	}
	if g.Server().Session("case1.L") != real {
		t.Errorf("the real case1.L lost its session to an impostor")
	}
	if code, _ := getStatus(t, proxyURL(t, l)+"/px/still"); code != 200 {
		t.Errorf("after impostors: status %d, want 200", code)
	}
	if f := g.gate.Load().failures.Load(); f < 2 {
		t.Errorf("gate counted %d failures, want at least 2", f)
	}
	// A plain ws:// client cannot talk to the TLS port at all.
	plain := "ws://" + g.Addrs().Tunnel
	p := startNode(t, fmt.Sprintf(`{"west": {"nm": "case1.L"}, "wstc": {%q: {"token": "env:WEST_TEST_TOKEN_L"}}}`, plain), Options{})
	waitClient(t, p, plain, tunnel.StateBackoff)
}

func TestClientCertificateNames(t *testing.T) {
	ca := newTestCA(t, "west-mtls")
	cert, key := ca.issue(t, "tunnel.test", "tunnel.test")
	g := startNode(t, fmt.Sprintf(`{"west": {"nm": "G"}, "wsts": {"sp": "wss://127.0.0.1:0",
		"tls_cert_file": %q, "tls_key_file": %q, "client_ca_file": %q, "cert_names": "yes"}}`, cert, key, ca.file), Options{})
	g.gate.Load().failDelay = 50 * time.Millisecond
	srv := "wss://" + g.Addrs().Tunnel
	lCert, lKey := ca.issue(t, "case1.L")
	mCert, mKey := ca.issue(t, "mallory")

	l := startNode(t, fmt.Sprintf(`{"west": {"nm": "case1.L"}, "wstc": {%q: {"ca_file": %q, "cert_file": %q, "key_file": %q}}}`,
		srv, ca.file, lCert, lKey), Options{})
	waitClient(t, l, srv, tunnel.StateUp)

	// Mallory's valid certificate does not let it take case1.L's name.
	m := startNode(t, fmt.Sprintf(`{"west": {"nm": "case1.L"}, "wstc": {%q: {"ca_file": %q, "cert_file": %q, "key_file": %q}}}`,
		srv, ca.file, mCert, mKey), Options{})
	st := waitClient(t, m, srv, tunnel.StateBackoff)
	if !strings.Contains(st.LastError.Error(), "403") {
		t.Errorf("impostor with another certificate: %v, want 403", st.LastError)
	}
	// Without a certificate the TLS handshake itself fails.
	nc := startNode(t, fmt.Sprintf(`{"west": {"nm": "case1.L"}, "wstc": {%q: {"ca_file": %q}}}`, srv, ca.file), Options{})
	waitClient(t, nc, srv, tunnel.StateBackoff)
	if s := l.Client(srv).Status(); s.State != tunnel.StateUp || s.Connects != 1 {
		t.Errorf("real client: state %s after %d connects, want up after 1", s.State, s.Connects)
	}
}

// TestClientCertificateOfAnotherCA: a tunnel client presents the
// certificate it was given even when the server asks for another CA's, so
// that the server's refusal names the CA rather than a missing
// certificate, which would send the operator looking at cert_file.
func TestClientCertificateOfAnotherCA(t *testing.T) {
	ca := newTestCA(t, "west-mtls")
	cert, key := ca.issue(t, "tunnel.test", "tunnel.test")
	g := startNode(t, fmt.Sprintf(`{"west": {"nm": "G"}, "wsts": {"sp": "wss://127.0.0.1:0",
		"tls_cert_file": %q, "tls_key_file": %q, "client_ca_file": %q}}`, cert, key, ca.file), Options{})
	srv := "wss://" + g.Addrs().Tunnel
	oc, ok := newTestCA(t, "other").issue(t, "L")
	l := startNode(t, fmt.Sprintf(`{"west": {"nm": "L"}, "wstc": {%q: {"ca_file": %q, "cert_file": %q, "key_file": %q}}}`,
		srv, ca.file, oc, ok), Options{})
	st := waitClient(t, l, srv, tunnel.StateBackoff)
	if !strings.Contains(st.LastError.Error(), "unknown certificate authority") {
		t.Errorf("client certificate of another CA: %v, want the server's refusal of its CA", st.LastError)
	}
}

func TestTunnelServerACL(t *testing.T) {
	g := startNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0", "ca": ["127.0.0.1", "::1", "allowed"]}}`, Options{})
	g.gate.Load().failDelay = 50 * time.Millisecond
	srv := "ws://" + g.Addrs().Tunnel
	ok := startNode(t, fmt.Sprintf(`{"west": {"nm": "allowed"}, "wstc": {%q: {}}}`, srv), Options{})
	waitClient(t, ok, srv, tunnel.StateUp)
	bad := startNode(t, fmt.Sprintf(`{"west": {"nm": "stranger"}, "wstc": {%q: {}}}`, srv), Options{})
	if st := waitClient(t, bad, srv, tunnel.StateBackoff); !strings.Contains(st.LastError.Error(), "not in wsts.ca") {
		t.Errorf("name outside wsts.ca: %v", st.LastError)
	}

	g2 := startNode(t, `{"west": {"nm": "G2"}, "wsts": {"sp": "ws://127.0.0.1:0", "ca": ["10.0.0.0/8", "fd00::/8"]}}`, Options{})
	g2.gate.Load().failDelay = 50 * time.Millisecond
	srv2 := "ws://" + g2.Addrs().Tunnel
	far := startNode(t, fmt.Sprintf(`{"west": {"nm": "allowed"}, "wstc": {%q: {}}}`, srv2), Options{})
	if st := waitClient(t, far, srv2, tunnel.StateBackoff); !strings.Contains(st.LastError.Error(), "127.0.0.1 is not in wsts.ca") {
		t.Errorf("address outside wsts.ca: %v", st.LastError)
	}
}

func TestRouteAndListenerACL(t *testing.T) {
	be := backend(t)
	g, _ := case1(t, be.URL, "")
	_ = g
	// A second listener on the same L shape, with access lists.
	l := startNode(t, fmt.Sprintf(`{"west": {"nm": "acl.L"}, "proxy": {
		"http://127.0.0.1:0": {"ea": "ws://%[1]s",
			"/open": {"ou": "%[2]s/x"},
			"/closed": {"ou": "%[2]s/x", "ca": ["10.0.0.0/8", "fd00::/8"]},
			"/mine": {"ou": "%[2]s/x", "ca": ["127.0.0.0/8"]}},
		"tcp://127.0.0.1:0": {"ea": "ws://%[1]s", "ou": "tcp://%[3]s", "ca": ["192.0.2.0/24"]}}}`,
		g.Addrs().Tunnel, be.URL, be.Listener.Addr()), Options{})
	httpAddr, tcpAddr := httpAndTCP(l)
	for path, want := range map[string]int{"/open": 200, "/closed/x": 403, "/mine": 200} {
		if code, body := getStatus(t, "http://"+httpAddr+path); code != want {
			t.Errorf("%s: %d %q, want %d", path, code, body, want)
		}
	}
	// The TCP listener hangs up on a client outside its list at once.
	c, err := net.Dial("tcp", tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.0\r\n\r\n")
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("tcp listener served a client outside its ca: n=%d err=%v", n, err)
	}

	// IPv6: a route open to ::1 only.
	ln6, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Logf("no IPv6 loopback here, IPv6 part not run: %v", err)
		return
	}
	addr6 := ln6.Addr().String()
	ln6.Close()
	startNode(t, fmt.Sprintf(`{"west": {"nm": "acl6.L"}, "proxy": {"http://%[1]s": {"ea": "ws://%[2]s",
		"/v6": {"ou": "%[3]s/x", "ca": ["::1"]}, "/v4": {"ou": "%[3]s/x", "ca": ["127.0.0.1"]}}}}`, addr6, g.Addrs().Tunnel, be.URL), Options{})
	for path, want := range map[string]int{"/v6": 200, "/v4": 403} {
		if code, body := getStatus(t, "http://"+addr6+path); code != want {
			t.Errorf("IPv6 %s: %d %q, want %d", path, code, body, want)
		}
	}
}

func TestDialPolicy(t *testing.T) {
	be := backend(t)
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "secret") }))
	defer other.Close()
	beAddr := be.Listener.Addr().String()
	_, bePort, _ := net.SplitHostPort(beAddr)
	g := startNode(t, fmt.Sprintf(`{"west": {"nm": "G", "dial_allow": [%q, "localhost:%s"]}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, beAddr, bePort), Options{})
	l := startNode(t, fmt.Sprintf(`{"west": {"nm": "L"}, "proxy": {"http://127.0.0.1:0": {"ea": "ws://%s",
		"/ok": {"ou": "%s/x"}, "/name": {"ou": "http://localhost:%s/x"}, "/no": {"ou": "%s/"}}}}`,
		g.Addrs().Tunnel, be.URL, bePort, other.URL), Options{})
	base := proxyURL(t, l)
	if code, body := getStatus(t, base+"/ok"); code != 200 {
		t.Errorf("allowed target: %d %q", code, body)
	}
	if code, body := getStatus(t, base+"/name"); code != 200 {
		t.Errorf("allowed name: %d %q", code, body)
	}
	code, body := getStatus(t, base+"/no")
	if code != 403 || !strings.Contains(body, "dial_allow") || strings.Contains(body, "secret") {
		t.Errorf("target outside the policy: %d %q, want 403 naming dial_allow", code, body)
	}
}

// TestDialPolicyIsNotFooledByAZone: an IPv6 literal whose zone ends like
// a name a wildcard rule admits ("[::ffff:127.0.0.1%a.example.org]")
// is judged as the address it is, which the dialer dials whatever the
// zone: through an HTTP route, a tcp:// listener, and the hand-over to
// the far west's own listener alike. It passed as a name.
func TestDialPolicyIsNotFooledByAZone(t *testing.T) {
	secret := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "secret") }))
	defer secret.Close()
	_, port, _ := net.SplitHostPort(secret.Listener.Addr().String())
	echo := testutil.EchoServer(t)
	_, echoPort, _ := net.SplitHostPort(echo)
	var pre prebound
	own := pre.addr(t) // G's own listener, reached by hand-over
	_, ownPort, _ := net.SplitHostPort(own)
	g := startNode(t, fmt.Sprintf(`{"west": {"nm": "G", "dial_allow": ["*.example.org"]}, "wsts": {"sp": "ws://127.0.0.1:0"},
		"proxy": {"http://%s": {"en": "nobody", "/": {"ou": "http://127.0.0.1:%s/"}}}}`, own, port), Options{Listen: pre.listen})
	l := startNode(t, fmt.Sprintf(`{"west": {"nm": "L"}, "proxy": {
		"http://127.0.0.1:0": {"ea": "ws://%[1]s",
			"/v4": {"ou": "http://[::ffff:127.0.0.1%%25a.example.org]:%[2]s/"},
			"/own": {"ou": "http://[::ffff:127.0.0.1%%25a.example.org]:%[4]s/"}},
		"tcp://127.0.0.1:0": {"ea": "ws://%[1]s", "ou": "tcp://[::ffff:127.0.0.1%%25a.example.org]:%[3]s"}}}`,
		g.Addrs().Tunnel, port, echoPort, ownPort), Options{})
	httpAddr, tcpAddr := httpAndTCP(l)
	for _, path := range []string{"/v4", "/own"} {
		if code, body := getStatus(t, "http://"+httpAddr+path); code != 403 || strings.Contains(body, "secret") {
			t.Errorf("%s, to 127.0.0.1 with a zone ending in .example.org: %d %q, want 403 naming dial_allow", path, code, body)
		}
	}
	c, err := net.Dial("tcp", tcpAddr)
	if errors.Is(err, syscall.ECONNRESET) {
		return // refused, and reset, before the connect call returned
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "ping")
	if n, _ := io.ReadFull(c, make([]byte, 4)); n == 4 {
		t.Error("raw TCP to 127.0.0.1 with a zone ending in .example.org: the echo answered")
	}
}

func TestMaxConnsAndSlowloris(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	be := backend(t)
	g := startNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0"}}`, Options{})
	l := startNode(t, fmt.Sprintf(`{"west": {"nm": "L"}, "proxy": {
		"tcp://127.0.0.1:0": {"ea": "ws://%[1]s", "ou": "tcp://%[2]s", "max_conns": 1},
		"http://127.0.0.1:0": {"ea": "ws://%[1]s", "/": {"ou": "%[3]s/x"}}}}`, g.Addrs().Tunnel, echo.Addr(), be.URL), Options{})
	httpAddr, tcpAddr := httpAndTCP(l)
	first, err := net.Dial("tcp", tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	echoLine(t, first, "first")
	second, err := net.Dial("tcp", tcpAddr) // waits in the backlog
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	fmt.Fprintln(second, "second")
	second.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, _ := second.Read(make([]byte, 16)); n != 0 {
		t.Fatalf("a connection beyond max_conns was served")
	}
	first.Close()
	second.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(second).ReadString('\n')
	if err != nil || line != "second\n" {
		t.Fatalf("second connection after the first closed: %q, %v", line, err)
	}

	// Slowloris: many clients that never finish their headers do not keep
	// a real client out.
	for range 100 {
		c, err := net.Dial("tcp", httpAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
	}
	start := time.Now()
	if code, body := getStatus(t, "http://"+httpAddr+"/fine"); code != 200 {
		t.Fatalf("real client under slowloris: %d %q", code, body)
	}
	t.Logf("request under a 100-connection slowloris took %v", time.Since(start))
}

func echoLine(t *testing.T, c net.Conn, s string) {
	t.Helper()
	fmt.Fprintln(c, s)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != s+"\n" {
		t.Fatalf("echo of %q: %q, %v", s, line, err)
	}
}

// TestWarnsWhenUnauthenticated: a tunnel server on a non-loopback address
// without tokens or client certificates says so at start; on loopback, or
// with tokens, it does not.
func TestWarnsWhenUnauthenticated(t *testing.T) {
	t.Setenv("WEST_TEST_TOKEN", "0123456789abcdef0123")
	for _, tc := range []struct {
		wsts string
		warn bool
	}{
		{`{"sp": "ws://0.0.0.0:0"}`, true},
		{`{"sp": "ws://127.0.0.1:0"}`, false},
		{`{"sp": "ws://0.0.0.0:0", "tokens": {"L": "env:WEST_TEST_TOKEN"}}`, false},
	} {
		var logs strings.Builder
		cfg, err := config.Parse([]byte(`{"west": {"nm": "G"}, "wsts": ` + tc.wsts + `}`))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))}); err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(logs.String(), "UNAUTHENTICATED TUNNEL SERVER"); got != tc.warn {
			t.Errorf("wsts %s: warned %v, want %v; logs:\n%s", tc.wsts, got, tc.warn, logs.String())
		}
	}
}

// A wss:// tunnel server says, at the default level, when a tunnel
// client's certificate is refused in the TLS handshake (net/http reports
// it only to the server's error log), and counts every failed handshake;
// a client that hangs up mid-handshake is counted but not logged above
// debug.
func TestTLSHandshakeFailuresSeenByServer(t *testing.T) {
	ca := newTestCA(t, "west-mtls")
	cert, key := ca.issue(t, "tunnel.test", "tunnel.test")
	var gLog testutil.Buffer
	g := startNode(t, fmt.Sprintf(`{"west": {"nm": "G", "cp": "127.0.0.1:0"}, "wsts": {"sp": "wss://127.0.0.1:0",
		"tls_cert_file": %q, "tls_key_file": %q, "client_ca_file": %q}}`, cert, key, ca.file),
		Options{Logger: slog.New(slog.NewTextHandler(&gLog, nil))})
	srv := "wss://" + g.Addrs().Tunnel
	oc, ok := newTestCA(t, "other").issue(t, "L")
	l := startNode(t, fmt.Sprintf(`{"west": {"nm": "L"}, "wstc": {%q: {"ca_file": %q, "cert_file": %q, "key_file": %q}}}`,
		srv, ca.file, oc, ok), Options{})
	waitClient(t, l, srv, tunnel.StateBackoff)
	// And one that connects and hangs up before its ClientHello.
	if c, err := net.Dial("tcp", g.Addrs().Tunnel); err == nil {
		c.Close()
	}
	client := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, body := fetch(t, client, "http://"+g.Addrs().Control+"/metrics")
		if got, _ := metric(body, "west_tunnel_tls_handshake_failures_total"); got >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("west_tunnel_tls_handshake_failures_total never reached 2:\n%s", body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	logs := gLog.String()
	if !strings.Contains(logs, `level=WARN msg="tunnel client's TLS handshake failed"`) || !strings.Contains(logs, "certificate signed by unknown authority") {
		t.Errorf("G's log:\n%s\nwant a warning naming the refused certificate", logs)
	}
	if n := strings.Count(logs, "TLS handshake failed"); n != 1 {
		t.Errorf("G logged %d handshake failures at info or above, want only the certificate's", n)
	}
}

// A wss:// tunnel server closes at once, before any TLS, a connection
// beyond the bound on handshakes from one address, counts it, and keeps
// serving the tunnel it already had; once the flood ends, handshakes
// work again.
func TestTunnelServerShedsHandshakeFlood(t *testing.T) {
	be := backend(t)
	ca := newTestCA(t, "west-shed")
	cert, key := ca.issue(t, "tunnel.test", "tunnel.test")
	g := startNode(t, fmt.Sprintf(`{"west": {"nm": "G", "cp": "127.0.0.1:0"}, "wsts": {"sp": "wss://127.0.0.1:0",
		"tls_cert_file": %q, "tls_key_file": %q}}`, cert, key), Options{})
	srv := "wss://" + g.Addrs().Tunnel
	l := startNode(t, fmt.Sprintf(`{"west": {"nm": "L"}, "wstc": {%q: {"ca_file": %q, "server_name": "tunnel.test"}},
		"proxy": {"http://127.0.0.1:0": {"ea": %q, "/px": {"ou": "%s/x"}}}}`, srv, ca.file, srv, be.URL), Options{})
	waitClient(t, l, srv, tunnel.StateUp)
	waitUp(t, g, "L")

	idle := make([]net.Conn, tunnel.DefaultMaxHandshakesPerIP)
	for i := range idle {
		c, err := net.Dial("tcp", g.Addrs().Tunnel)
		if err != nil {
			t.Fatalf("idle connection %d: %v", i, err)
		}
		defer c.Close()
		idle[i] = c
	}
	// Until the server has accepted all of them, the next may still get
	// in; it is shed once they are all counted.
	client := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", g.Addrs().Tunnel)
		if err != nil {
			t.Fatalf("one more connection: %v", err)
		}
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		_, err = c.Read(make([]byte, 1))
		c.Close()
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			break // closed on us
		}
		if time.Now().After(deadline) {
			t.Fatal("a connection beyond the bound was never shed")
		}
	}
	_, body := fetch(t, client, "http://"+g.Addrs().Control+"/metrics")
	if got, _ := metric(body, "west_tunnel_handshakes_shed_total"); got < 1 {
		t.Errorf("west_tunnel_handshakes_shed_total %v, want at least 1", got)
	}
	if got, _ := metric(body, "west_tunnel_tls_handshake_failures_total"); got != 0 {
		t.Errorf("west_tunnel_tls_handshake_failures_total %v: a shed connection got as far as TLS", got)
	}
	if code, body := getStatus(t, proxyURL(t, l)+"/px/ok"); code != 200 {
		t.Errorf("request over the tunnel up before the flood: %d %s", code, body)
	}

	for _, c := range idle {
		c.Close()
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	waitFor(t, "a TLS handshake after the flood", func() bool {
		c, err := tls.Dial("tcp", g.Addrs().Tunnel, &tls.Config{RootCAs: roots, ServerName: "tunnel.test"})
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}

// TestTunnelServerClosesRefusedConnections: whatever a tunnel server
// answers but an upgrade closes the connection, which would otherwise
// count among the handshakes in progress until its idle timeout (2 min).
func TestTunnelServerClosesRefusedConnections(t *testing.T) {
	t.Setenv("WEST_TEST_TOKEN_RC", "right")
	g := startNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0/tunnel", "tokens": {"L": "env:WEST_TEST_TOKEN_RC"}}}`, Options{})
	upgrade := "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: " + wire.Subprotocol + "\r\n"
	for name, c := range map[string]struct {
		head string
		code int
	}{
		"no upgrade":       {"GET /tunnel HTTP/1.1\r\nHost: g\r\nOrigin: L\r\n", http.StatusBadRequest},
		"not the path":     {"GET /elsewhere HTTP/1.1\r\nHost: g\r\n", http.StatusNotFound},
		"not admitted":     {"GET /tunnel HTTP/1.1\r\nHost: g\r\nOrigin: L\r\nAuthorization: Bearer wrong\r\n" + upgrade, http.StatusForbidden},
		"no name (Origin)": {"GET /tunnel HTTP/1.1\r\nHost: g\r\n" + upgrade, http.StatusBadRequest},
	} {
		t.Run(name, func(t *testing.T) {
			conn, err := net.Dial("tcp", g.Addrs().Tunnel)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(3 * time.Second))
			if _, err := io.WriteString(conn, c.head+"\r\n"); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("response: %v", err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.code {
				t.Errorf("status %d, want %d", resp.StatusCode, c.code)
			}
			if _, err := br.ReadByte(); err != io.EOF {
				t.Errorf("after the answer, a read got %v; want the connection closed (EOF)", err)
			}
		})
	}
}

// httpAndTCP returns the addresses of n's http:// and tcp:// listeners,
// where it has one of each.
func httpAndTCP(n *Node) (httpAddr, tcpAddr string) {
	for k, a := range n.Addrs().Proxies {
		if strings.HasPrefix(k, "tcp") {
			tcpAddr = a
		} else {
			httpAddr = a
		}
	}
	return httpAddr, tcpAddr
}

// TestTunnelServerACLBracketedAddress: a wsts.ca entry holding an address
// in brackets, as dial_allow and URLs write them ("[192.0.2.7]"), was
// taken for a peer name: the list then had no address rule, and a client
// at any address that called itself "[192.0.2.7]" was admitted. Such an
// entry is a config error, as an address with a port is.
func TestTunnelServerACLBracketedAddress(t *testing.T) {
	for i, entry := range []string{"[192.0.2.7]", "[2001:db8::7]", "[192.0.2.0/24]", "[2001:db8::7]:443"} {
		js := fmt.Sprintf(`{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0", "ca": [%q]}}`, entry)
		_, err := config.Parse([]byte(js))
		if err != nil {
			if !strings.Contains(err.Error(), "without brackets") {
				t.Errorf("wsts.ca %q: %v, want an error saying brackets are not taken", entry, err)
			}
			continue
		}
		t.Errorf("wsts.ca %q accepted", entry)
		if i > 0 {
			continue
		}
		// What it lets in: a client from 127.0.0.1 that takes the entry
		// for its name.
		g := startNode(t, js, Options{})
		srv := "ws://" + g.Addrs().Tunnel
		impostor := startNode(t, fmt.Sprintf(`{"west": {"nm": %q}, "wstc": {%q: {}}}`, entry, srv), Options{})
		waitClient(t, impostor, srv, tunnel.StateUp)
		t.Errorf("wsts.ca %q: a client at 127.0.0.1 calling itself %q was admitted", entry, entry)
	}
}

// A wss:// tunnel server named by an IPv6 literal with a zone
// ("wss://[fe80::1%25eth0]:443", a link-local address) is verified by
// its address, as one without a zone is: the zone says which interface
// to dial by, and is no part of a certificate's names.
func TestTLSServerAtZonedAddress(t *testing.T) {
	if ln, err := net.Listen("tcp", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		ln.Close()
	}
	ca := newTestCA(t, "west-test")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "v6"},
		IPAddresses:  []net.IP{net.IPv6loopback},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	cert, keyFile := ca.write(t, "v6.pem", "CERTIFICATE", der), ca.write(t, "v6.key", "EC PRIVATE KEY", kder)
	g := startNode(t, fmt.Sprintf(`{"west": {"nm": "G"}, "wsts": {"sp": "wss://[::1]:0",
		"tls_cert_file": %q, "tls_key_file": %q}}`, cert, keyFile), Options{})
	_, port, _ := net.SplitHostPort(g.Addrs().Tunnel)
	// Linux takes a zone on ::1 too, which a test can count on.
	for i, srv := range []string{"wss://[::1]:" + port, "wss://[::1%25lo]:" + port} {
		l := startNode(t, fmt.Sprintf(`{"west": {"nm": "L%d"}, "wstc": {%q: {"ca_file": %q}}}`, i, srv, ca.file), Options{})
		waitClient(t, l, srv, tunnel.StateUp)
	}
}

// TestRefusalTakesItsTimeForHalfClosedPeer: a refused handshake is
// answered only after about gate.failDelay, so that tokens cannot be
// guessed fast. The wait ended with the request's context, which ends
// when the peer half-closes its side after the request; such a peer got
// its 403 at once, and could guess as fast as the server answered.
func TestRefusalTakesItsTimeForHalfClosedPeer(t *testing.T) {
	t.Setenv("WEST_TEST_TOKEN_HC", "right-0123456789abcdef")
	g := startNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0/tunnel", "tokens": {"L": "env:WEST_TEST_TOKEN_HC"}}}`, Options{})
	const delay = 400 * time.Millisecond // a refusal takes from half of it to one and a half
	g.gate.Load().failDelay = delay
	upgrade := "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: " + wire.Subprotocol + "\r\n"
	conn, err := net.Dial("tcp", g.Addrs().Tunnel)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	if _, err := io.WriteString(conn, "GET /tunnel HTTP/1.1\r\nHost: g\r\nOrigin: L\r\nAuthorization: Bearer wrong\r\n"+upgrade+"\r\n"); err != nil {
		t.Fatal(err)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("response: %v", err)
	}
	resp.Body.Close()
	if took := time.Since(start); resp.StatusCode != http.StatusForbidden || took < delay/2 {
		t.Errorf("half-closed peer with a wrong token: %d after %v; want %d after at least %v", resp.StatusCode, took, http.StatusForbidden, delay/2)
	}
}

// TestWarnsWhenReloadUnauthenticates: a reload may take wsts.tokens (or
// client_ca_file) away; the tunnel server then admits anyone, and says so
// as loudly as at start. It said nothing.
func TestWarnsWhenReloadUnauthenticates(t *testing.T) {
	t.Setenv("WEST_TEST_TOKEN", "0123456789abcdef0123")
	var logs testutil.Buffer
	g := startNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://0.0.0.0:0", "tokens": {"L": "env:WEST_TEST_TOKEN"}}}`,
		Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if strings.Contains(logs.String(), "UNAUTHENTICATED TUNNEL SERVER") {
		t.Fatalf("warned with tokens; logs:\n%s", logs.String())
	}
	<-g.Running()
	cfg, err := config.Parse([]byte(`{"west": {"nm": "G"}, "wsts": {"sp": "ws://0.0.0.0:0"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Reload(cfg); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if !strings.Contains(logs.String(), "UNAUTHENTICATED TUNNEL SERVER") {
		t.Errorf("a reload that took the tokens away did not warn; logs:\n%s", logs.String())
	}
}

// TestTokenWarnings: a token that crosses ws:// to or from another host
// is named; one over wss://, or over ws:// on loopback, is not.
func TestTokenWarnings(t *testing.T) {
	for _, tc := range []struct {
		conf string
		want []string
	}{
		{`{"west": {"nm": "n"}, "wsts": {"sp": "ws://0.0.0.0:9801", "tokens": {"a": "env:WEST_TEST_UNSET"}}}`, []string{
			`wsts.tokens: peers send them in the clear to ws://0.0.0.0:9801, where anyone on the path can read them; use wss://`,
		}},
		{`{"west": {"nm": "n"}, "wsts": {"sp": "ws://127.0.0.1:9801", "tokens": {"a": "env:WEST_TEST_UNSET"}}}`, nil},
		{`{"west": {"nm": "n"}, "wsts": {"sp": "wss://0.0.0.0:9801", "tls_cert_file": "c", "tls_key_file": "k", "tokens": {"a": "env:WEST_TEST_UNSET"}}}`, nil},
		{`{"west": {"nm": "n"}, "wstc": {
			"ws://203.0.113.7:9801": {"token": "env:WEST_TEST_UNSET"},
			"ws://localhost:9802": {"token": "env:WEST_TEST_UNSET"},
			"wss://tunnel.example.org": {"token": "env:WEST_TEST_UNSET"},
			"ws://[::1]:9803": {"token": "env:WEST_TEST_UNSET"},
			"ws://198.51.100.1:9804": {}}}`, []string{
			`wstc["ws://203.0.113.7:9801"].token: sent in the clear at each handshake, where anyone on the path can read it and take this west's name; use wss://`,
		}},
	} {
		cfg, err := config.Parse([]byte(tc.conf))
		if err != nil {
			t.Fatal(err)
		}
		// No secret is read (WEST_TEST_UNSET is not set): a file: one may
		// be a pipe that gives it once.
		if got := TokenWarnings(cfg); !slices.Equal(got, tc.want) {
			t.Errorf("%s:\ngot  %q\nwant %q", tc.conf, got, tc.want)
		}
	}
}

// TestStartAndReloadWarnOfTokens: a short token is named in the log at
// start and at each reload, as west check names it.
func TestStartAndReloadWarnOfTokens(t *testing.T) {
	t.Setenv("WEST_TEST_SHORT", "letmein")
	var logs testutil.Buffer
	conf := `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0", "tokens": {"L": "env:WEST_TEST_SHORT"}}}`
	g := startNode(t, conf, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	<-g.Running()
	const want = `tunnel token: wsts.tokens[\"L\"] is 7 characters`
	if n := strings.Count(logs.String(), want); n != 1 {
		t.Fatalf("%d warnings at start, want 1; logs:\n%s", n, logs.String())
	}
	if err := g.Reload(mustParse(t, conf)); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), want); n != 2 {
		t.Errorf("%d warnings after a reload, want 2; logs:\n%s", n, logs.String())
	}
}

// TestImpliedWarnings: a listener's "ea" that wstc lists under another
// spelling of its host and port is named, with the entry whose settings
// it goes without; an "ea" that matches its entry, or names another
// server, is not.
func TestImpliedWarnings(t *testing.T) {
	const wstc = `"wstc": {"wss://tunnel.example.org/t": {"token": "env:WEST_TEST_UNSET"}, "ws://127.0.0.1:9801": {}}`
	for _, tc := range []struct {
		ea   string
		want []string
	}{
		{"wss://tunnel.example.org/t/", []string{
			`proxy["http://127.0.0.1:9911"].ea: wss://tunnel.example.org/t/ is not a key of wstc, so it is dialled with none of the settings of wstc["wss://tunnel.example.org/t"] (token, ca_file, cert_file, nm), a server at the same host and port: a typo?`}},
		{"wss://Tunnel.Example.org:443/x", []string{
			`proxy["http://127.0.0.1:9911"].ea: wss://Tunnel.Example.org:443/x is not a key of wstc, so it is dialled with none of the settings of wstc["wss://tunnel.example.org/t"] (token, ca_file, cert_file, nm), a server at the same host and port: a typo?`}},
		{"ws://127.0.0.1:9801/", nil},            // its entry, spelt another way
		{"wss://tunnel.example.org:8443/t", nil}, // another port
		{"wss://other.example.org/t", nil},       // another host
	} {
		conf := `{"west": {"nm": "n"}, ` + wstc + `, "proxy": {"http://127.0.0.1:9911": {"ea": "` + tc.ea + `", "/": {"ou": "http://127.0.0.1:1/"}}}}`
		cfg, err := config.Parse([]byte(conf))
		if err != nil {
			t.Fatal(err)
		}
		if got := ImpliedWarnings(cfg); !slices.Equal(got, tc.want) {
			t.Errorf("ea %s:\ngot  %q\nwant %q", tc.ea, got, tc.want)
		}
	}
}

// TestTunnelServerPathIsExact: the tunnel server answers at its path
// alone. With the default "/", an http.ServeMux pattern, any path
// connected, and with "/t/" any path below it: a client whose ea named
// the wrong path was taken in rather than told.
func TestTunnelServerPathIsExact(t *testing.T) {
	for _, c := range []struct{ sp, wrong string }{
		{"", "/wrong"},
		{"/t/", "/t/x"},
		{"/t", "/t/"},
	} {
		t.Run(c.sp+" "+c.wrong, func(t *testing.T) {
			g := startNode(t, fmt.Sprintf(`{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0%s"}}`, c.sp), Options{})
			wrong := "ws://" + g.Addrs().Tunnel + c.wrong
			right := "ws://" + g.Addrs().Tunnel + c.sp
			l := startNode(t, fmt.Sprintf(`{"west": {"nm": "L"}, "wstc": {%q: {}, %q: {}}}`, wrong, right), Options{})
			waitClient(t, l, right, tunnel.StateUp)
			st := waitClient(t, l, wrong, tunnel.StateBackoff)
			if st.LastError == nil || !strings.Contains(st.LastError.Error(), "404 Not Found: no tunnel server at this path") {
				t.Errorf("client of %s: last error %v, want the server's 404 saying no tunnel is there", wrong, st.LastError)
			}
		})
	}
}

// TestTunnelServerPathEscapedSlash: an escaped slash is no separator, so
// "/t%2Fx" is a path of one segment, not the server's "/t/x", though
// net/url decodes both to one Path. http.ServeMux, which served the path
// before, told them apart; so must the server.
func TestTunnelServerPathEscapedSlash(t *testing.T) {
	g := startNode(t, `{"west": {"nm": "G"}, "wsts": {"sp": "ws://127.0.0.1:0/t/x"}}`, Options{})
	client := &http.Client{Timeout: 10 * time.Second}
	for _, c := range []struct {
		path string
		code int
	}{
		{"/t/x", http.StatusBadRequest}, // the server's: no upgrade asked for
		{"/t/x?a=1", http.StatusBadRequest},
		{"/%74/x", http.StatusBadRequest}, // an unreserved character escaped is the same
		{"/t%2Fx", http.StatusNotFound},
		{"/t%2fx", http.StatusNotFound},
	} {
		resp, err := client.Get("http://" + g.Addrs().Tunnel + c.path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Errorf("GET %s: %s, want %d", c.path, resp.Status, c.code)
		}
	}
}
