package tunnel

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
	"github.com/west-tunnel/west/internal/wire"
)

// tlsHarness serves h's tunnel server over TLS too, and records the
// server names its clients ask for.
func tlsHarness(t *testing.T, h *harness) (hs *httptest.Server, asked *sync.Map) {
	t.Helper()
	asked = new(sync.Map)
	hs = httptest.NewUnstartedServer(h.server)
	hs.TLS = &tls.Config{GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		asked.Store(hello.ServerName, true)
		return nil, nil
	}}
	hs.StartTLS()
	t.Cleanup(hs.Close)
	return hs, asked
}

// selfSigned is a certificate for name that no system trusts, and the
// file that holds it.
func selfSigned(t *testing.T, name string) (tls.Certificate, string) {
	t.Helper()
	certFile, keyFile := testutil.SelfSigned(t, name, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return cert, certFile
}

// echoThrough opens a stream through c's tunnel and checks its echo.
func echoThrough(t *testing.T, c *Client) {
	t.Helper()
	conn, err := c.Dial(context.Background(), wire.Header{Kind: wire.KindTCP, Target: "echo:1"})
	if err != nil {
		t.Fatalf("dial through the proxied tunnel: %v", err)
	}
	roundTrip(t, conn, []byte("hello through the proxy"))
}

// checkRefusal fails unless msg names the proxy without its password
// and says want.
func checkRefusal(t *testing.T, what, msg, proxy, want string) {
	t.Helper()
	if !strings.Contains(msg, "through proxy "+proxy+": ") || !strings.Contains(msg, want) || strings.Contains(msg, "s3cret") {
		t.Errorf("%s: last error %q, want it to name the proxy as %s, without its password, and say %q", what, msg, proxy, want)
	}
}

// TestThroughHTTPSProxy dials tunnel servers through an https:// proxy:
// TLS to the proxy, checked against the system's roots under the
// proxy's name, CONNECT inside it, and for wss:// the tunnel's own TLS
// inside that. The client's TLSConfig, for the tunnel server, neither
// vouches for the proxy nor shows it the client's certificate. Refusals
// (credentials, a proxy certificate no root vouches for) name the proxy
// without its password, and the client closes what it opened.
func TestThroughHTTPSProxy(t *testing.T) {
	if runtime.GOOS == "windows" || runtime.GOOS == "darwin" || runtime.GOOS == "ios" {
		t.Skip("the system's roots come from SSL_CERT_FILE on other Unix systems only")
	}
	if !inOwnProcess(t) {
		return
	}
	cert, certFile := selfSigned(t, "localhost")
	// This process's system roots: read once, at the first verification.
	t.Setenv("SSL_CERT_FILE", certFile)
	h := newHarness(t, ServerOptions{})
	hs, sni := tlsHarness(t, h)
	p := startHTTPSProxy(t, h.http.Listener.Addr().String(), "west", "s3cret", cert)
	tp := startHTTPSProxy(t, hs.Listener.Addr().String(), "west", "s3cret", cert)
	_, pport, _ := net.SplitHostPort(p.ln.Addr().String())
	_, tpport, _ := net.SplitHostPort(tp.ln.Addr().String())
	clearProxyEnv(t)
	t.Setenv("HTTP_PROXY", "https://west:s3cret@localhost:"+pport)
	t.Setenv("HTTPS_PROXY", "https://west:s3cret@localhost:"+tpport)
	_, port, _ := net.SplitHostPort(h.http.Listener.Addr().String())
	_, tport, _ := net.SplitHostPort(hs.Listener.Addr().String())
	server := "ws://tunnel.test:" + port + "/"

	c, stop := runClient(t, ClientOptions{URL: server, Name: "behind-https-proxy", Handler: echoHandler})
	waitFor(t, "the tunnel through the https proxy", func() bool { return h.server.Session("behind-https-proxy") != nil })
	echoThrough(t, c)
	stop()
	p.waitClosed(t)
	if got := p.asked(); len(got) != 1 || got[0] != "CONNECT tunnel.test:"+port {
		t.Errorf("the https proxy was asked %q, want one CONNECT to the tunnel server", got)
	}

	// wss:// inside TLS to the proxy. The tunnel's TLSConfig trusts only
	// the test server's CA, and has a certificate to show.
	tc := hs.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	c, stop = runClient(t, ClientOptions{URL: "wss://example.com:" + tport + "/", Name: "tls-behind-https-proxy", Handler: echoHandler, TLSConfig: tc})
	waitFor(t, "the wss tunnel through the https proxy", func() bool { return h.server.Session("tls-behind-https-proxy") != nil })
	echoThrough(t, c)
	stop()
	tp.waitClosed(t)
	if _, ok := sni.Load("example.com"); !ok || len(tp.asked()) != 1 || tp.asked()[0] != "CONNECT example.com:"+tport {
		t.Errorf("wss through the https proxy: the proxy was asked %q, the server was not asked for example.com", tp.asked())
	}
	if n := tp.clientCerts(); n != 0 {
		t.Errorf("the proxy was shown %d client certificates, want none", n)
	}

	p.setAuth("west", "other")
	msg := lastError(t, ClientOptions{URL: server, Name: "refused"})
	p.waitClosed(t)
	checkRefusal(t, "wrong credentials", msg, "https://west:xxxxx@localhost:"+pport, ": Proxy Authentication Required")

	untrusted, _ := selfSigned(t, "localhost")
	p.setCert(untrusted)
	c, stop = runClient(t, ClientOptions{URL: server, Name: "untrusted", Handler: echoHandler, MinBackoff: time.Hour})
	waitFor(t, "a failed attempt", func() bool { return c.Status().State == StateBackoff })
	err := c.Status().LastError
	stop()
	p.waitClosed(t)
	checkRefusal(t, "an untrusted proxy", err.Error(), "https://west:xxxxx@localhost:"+pport, "x509: certificate signed by unknown authority")
	if !strings.Contains(err.Error(), ": tls with the proxy: ") || !errors.As(err, new(x509.UnknownAuthorityError)) {
		t.Errorf("an untrusted proxy: %q, want a TLS failure with the proxy, as x509.UnknownAuthorityError", err)
	}
}

// TestThroughSOCKSProxy dials tunnel servers through SOCKS5 proxies with
// a user and password. socks5:// and socks5h:// alike hand the proxy the
// server's name, as net/http does. A refusal (credentials, a failure
// reply) names the proxy without its password, and the client closes
// what it opened.
func TestThroughSOCKSProxy(t *testing.T) {
	if !inOwnProcess(t) {
		return
	}
	h := newHarness(t, ServerOptions{})
	hs, sni := tlsHarness(t, h)
	p := startSOCKSProxy(t, h.http.Listener.Addr().String(), "west", "s3cret")
	tp := startSOCKSProxy(t, hs.Listener.Addr().String(), "west", "s3cret")
	clearProxyEnv(t)
	t.Setenv("HTTP_PROXY", "socks5h://west:s3cret@"+p.ln.Addr().String())
	t.Setenv("HTTPS_PROXY", "socks5://west:s3cret@"+tp.ln.Addr().String())
	_, port, _ := net.SplitHostPort(h.http.Listener.Addr().String())
	_, tport, _ := net.SplitHostPort(hs.Listener.Addr().String())
	// Only the proxies could resolve tunnel.test.
	server := "ws://tunnel.test:" + port + "/"

	c, stop := runClient(t, ClientOptions{URL: server, Name: "behind-socks5h", Handler: echoHandler})
	waitFor(t, "the tunnel through the socks5h proxy", func() bool { return h.server.Session("behind-socks5h") != nil })
	echoThrough(t, c)
	stop()
	p.waitClosed(t)
	if got := p.requests(); len(got) != 1 || got[0] != "name tunnel.test:"+port {
		t.Errorf("the socks5h proxy was asked %q, want the tunnel server by name", got)
	}

	// wss:// inside, asking for the tunnel server's name.
	tc := hs.Client().Transport.(*http.Transport).TLSClientConfig
	c, stop = runClient(t, ClientOptions{URL: "wss://example.com:" + tport + "/", Name: "tls-behind-socks5", Handler: echoHandler, TLSConfig: tc})
	waitFor(t, "the wss tunnel through the socks5 proxy", func() bool { return h.server.Session("tls-behind-socks5") != nil })
	echoThrough(t, c)
	stop()
	tp.waitClosed(t)
	if got := tp.requests(); len(got) != 1 || got[0] != "name example.com:"+tport {
		t.Errorf("the socks5 proxy was asked %q, want the tunnel server by name", got)
	}
	if _, ok := sni.Load("example.com"); !ok {
		t.Errorf("wss through the socks5 proxy: the server was not asked for example.com")
	}

	proxy := "socks5h://west:xxxxx@" + p.ln.Addr().String()
	p.setPassword("other")
	msg := lastError(t, ClientOptions{URL: server, Name: "refused"})
	p.waitClosed(t)
	checkRefusal(t, "wrong credentials", msg, proxy, ": username/password authentication failed")

	p.setPassword("s3cret")
	p.setReply(2)
	msg = lastError(t, ClientOptions{URL: server, Name: "refused"})
	p.waitClosed(t)
	checkRefusal(t, "a failure reply", msg, proxy, " connection not allowed by ruleset")
}

// TestProxyUnknownScheme shows a proxy of a scheme west does not speak as
// an error naming the variable and the scheme, without the password.
func TestProxyUnknownScheme(t *testing.T) {
	if !inOwnProcess(t) {
		return
	}
	clearProxyEnv(t)
	t.Setenv("HTTP_PROXY", "ftp://west:s3cret@proxy.test:21")
	t.Setenv("https_proxy", "quic://proxy.test:443")
	for server, want := range map[string]string{
		"ws://tunnel.test:1/":  `: HTTP_PROXY names a proxy of scheme "ftp" (ftp://west:xxxxx@proxy.test:21); west speaks http, https, socks5 and socks5h`,
		"wss://tunnel.test:1/": `: https_proxy names a proxy of scheme "quic" (quic://proxy.test:443); west speaks http, https, socks5 and socks5h`,
	} {
		if msg := lastError(t, ClientOptions{URL: server, Name: "unknown-scheme"}); !strings.HasSuffix(msg, want) || strings.Contains(msg, "s3cret") {
			t.Errorf("%s: last error %q, want it to end %q", server, msg, want)
		}
	}
}

// TestProxyWarnings: a proxy variable net/http would skip (a password's
// "%" unescaped) or misread (a URL that does not parse) is named, never
// its value, for the clients that read it; a value net/http reads, with
// a scheme or without, is not.
func TestProxyWarnings(t *testing.T) {
	clearProxyEnv(t)
	t.Setenv("HTTP_PROXY", "http://west:50%off@proxy.test:3128")
	t.Setenv("https_proxy", "http://[proxy.test:3128")
	got := ProxyWarnings("ws", "wss")
	if len(got) != 2 || !strings.HasPrefix(got[0], "HTTP_PROXY does not parse as a proxy URL, so ws:// tunnel clients") ||
		!strings.HasPrefix(got[1], "https_proxy does not parse as a proxy URL, so wss:// tunnel clients") ||
		strings.Contains(strings.Join(got, ""), "50%off") {
		t.Errorf("warnings %q, want HTTP_PROXY's and https_proxy's, without their values", got)
	}
	if got := ProxyWarnings("wss"); len(got) != 1 || !strings.HasPrefix(got[0], "https_proxy") {
		t.Errorf("wss:// clients only: %q, want https_proxy's alone", got)
	}
	for _, fine := range []string{"proxy.test:3128", "http://west:50%25off@proxy.test:3128", "socks5h://[::1]:1080", "https://proxy.test"} {
		t.Setenv("HTTP_PROXY", fine)
		if got := ProxyWarnings("ws"); len(got) != 0 {
			t.Errorf("HTTP_PROXY=%s: %q, want none", fine, got)
		}
	}
}

// TestProxyUnparsedNotShown: a proxy variable with a password's "%" left
// unescaped and no "http://" ("west:s3cret%@proxy.test:3128") is read by
// net/http as a URL of scheme "west" with the rest opaque, which Redacted
// shows whole: the error, which reaches last_error, the control port and
// a listener's 503, showed the password. It names the variable and the
// scheme alone.
func TestProxyUnparsedNotShown(t *testing.T) {
	if !inOwnProcess(t) {
		return
	}
	clearProxyEnv(t)
	t.Setenv("HTTP_PROXY", "west:s3cret%@proxy.test:3128")
	msg := lastError(t, ClientOptions{URL: "ws://tunnel.test:1/", Name: "unparsed"})
	if !strings.Contains(msg, `HTTP_PROXY names a proxy of scheme "west"`) || strings.Contains(msg, "s3cret") {
		t.Errorf("last error %q, want it to name HTTP_PROXY and scheme \"west\", without the password", msg)
	}
}
