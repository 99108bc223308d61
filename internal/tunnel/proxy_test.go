package tunnel

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/wire"
)

// inOwnProcess runs the calling test again in a process of its own, and
// is true there: net/http reads the proxy variables once per process, so
// a test that sets them must be the first to ask.
func inOwnProcess(t *testing.T) bool {
	t.Helper()
	if os.Getenv("WEST_TEST_OWN_PROCESS") == t.Name() {
		return true
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "WEST_TEST_OWN_PROCESS="+t.Name())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("in its own process: %v\n%s", err, out)
	}
	return false
}

// proxyServer is the accept loop of the test proxies. It keeps every
// connection open until the far side closes it (or the test ends), so
// that open() says whether the client closed its own.
type proxyServer struct {
	ln      net.Listener
	wg      sync.WaitGroup
	connsMu sync.Mutex // guards conns
	conns   map[net.Conn]bool
}

func startProxyServer(t *testing.T, serve func(down net.Conn)) *proxyServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &proxyServer{ln: ln, conns: map[net.Conn]bool{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.track(c, true)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer s.track(c, false)
				defer c.Close()
				serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.connsMu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.connsMu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *proxyServer) track(c net.Conn, open bool) {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	if open {
		s.conns[c] = true
	} else {
		delete(s.conns, c)
	}
}

// open is how many connections from clients are still open.
func (s *proxyServer) open() int {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	return len(s.conns)
}

// waitClosed waits until the client has closed every connection it made.
func (s *proxyServer) waitClosed(t *testing.T) {
	t.Helper()
	waitFor(t, "the client to close its connections to the proxy", func() bool { return s.open() == 0 })
}

// drain waits for the client to close down, after a refusal.
func drain(down net.Conn) { io.Copy(io.Discard, down) }

// relay carries bytes between down and up until either side closes.
func relay(down, up net.Conn) {
	done := make(chan struct{})
	go func() {
		io.Copy(up, down)
		up.Close()
		close(done)
	}()
	io.Copy(down, up)
	down.Close()
	<-done
}

// connectProxy is an HTTP proxy that serves CONNECT only, to target
// whatever host is asked for, with answer (when set) as its raw refusal.
// With a certificate it is an HTTPS proxy: TLS first, asking for (but
// not needing) a client certificate.
type connectProxy struct {
	*proxyServer
	target string
	mu     sync.Mutex // guards the fields below
	auth   string     // the Proxy-Authorization it wants
	answer string
	cert   *tls.Certificate
	reqs   []string // the requests, "METHOD host", in order
	certs  int      // client certificates presented to it
}

func startConnectProxy(t *testing.T, target, user, password string) *connectProxy {
	t.Helper()
	p := &connectProxy{target: target}
	p.setAuth(user, password)
	p.proxyServer = startProxyServer(t, p.serve)
	return p
}

// startHTTPSProxy is startConnectProxy speaking TLS with cert.
func startHTTPSProxy(t *testing.T, target, user, password string, cert tls.Certificate) *connectProxy {
	t.Helper()
	p := &connectProxy{target: target, cert: &cert}
	p.setAuth(user, password)
	p.proxyServer = startProxyServer(t, p.serve)
	return p
}

func (p *connectProxy) serve(down net.Conn) {
	p.mu.Lock()
	cert := p.cert
	p.mu.Unlock()
	if cert != nil {
		tc := tls.Server(down, &tls.Config{Certificates: []tls.Certificate{*cert}, ClientAuth: tls.RequestClientCert})
		if err := tc.Handshake(); err != nil {
			drain(down)
			return
		}
		p.mu.Lock()
		p.certs += len(tc.ConnectionState().PeerCertificates)
		p.mu.Unlock()
		down = tc
	}
	req, err := http.ReadRequest(bufio.NewReader(down))
	if err != nil {
		return
	}
	p.mu.Lock()
	p.reqs = append(p.reqs, req.Method+" "+req.Host)
	answer, auth := p.answer, p.auth
	p.mu.Unlock()
	switch {
	case answer != "":
	case req.Method != http.MethodConnect:
		answer = "HTTP/1.1 405 Method Not Allowed\r\n\r\n"
	case req.Header.Get("Proxy-Authorization") != auth:
		answer = "HTTP/1.1 407 Proxy Authentication Required\r\n\r\n"
	}
	if answer != "" {
		io.WriteString(down, answer)
		drain(down)
		return
	}
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		io.WriteString(down, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
		return
	}
	io.WriteString(down, "HTTP/1.1 200 Connection established\r\n\r\n")
	relay(down, up)
}

func (p *connectProxy) asked() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.reqs...)
}

func (p *connectProxy) setAnswer(a string) {
	p.mu.Lock()
	p.answer = a
	p.mu.Unlock()
}

func (p *connectProxy) setAuth(user, password string) {
	p.mu.Lock()
	p.auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
	p.mu.Unlock()
}

func (p *connectProxy) setCert(cert tls.Certificate) {
	p.mu.Lock()
	p.cert = &cert
	p.mu.Unlock()
}

func (p *connectProxy) clientCerts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.certs
}

// clearProxyEnv empties the proxy variables, for a test to set its own.
func clearProxyEnv(t *testing.T) {
	for _, k := range []string{"NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"} {
		t.Setenv(k, "")
	}
}

// lastError runs a client of opts until its first attempt fails, and
// returns why.
func lastError(t *testing.T, opts ClientOptions) string {
	t.Helper()
	opts.Handler, opts.MinBackoff = echoHandler, time.Hour
	c, stop := runClient(t, opts)
	defer stop()
	waitFor(t, "a failed attempt", func() bool { return c.Status().State == StateBackoff })
	return c.Status().LastError.Error()
}

// TestThroughProxy dials a tunnel server through the proxy HTTP_PROXY
// names, with its credentials, and shows the proxy's refusals as failed
// attempts that name the proxy without its password: also a refusal
// whose status line has no reason phrase, which some proxies send.
func TestThroughProxy(t *testing.T) {
	if !inOwnProcess(t) {
		return
	}
	h := newHarness(t, ServerOptions{})
	p := startConnectProxy(t, h.http.Listener.Addr().String(), "west", "s3cret")
	clearProxyEnv(t)
	t.Setenv("HTTP_PROXY", "http://west:s3cret@"+p.ln.Addr().String())
	var sni sync.Map
	hs := httptest.NewUnstartedServer(h.server)
	hs.TLS = &tls.Config{GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		sni.Store(hello.ServerName, true)
		return nil, nil
	}}
	hs.StartTLS()
	defer hs.Close()
	tp := startConnectProxy(t, hs.Listener.Addr().String(), "west", "s3cret")
	t.Setenv("HTTPS_PROXY", "http://west:s3cret@"+tp.ln.Addr().String())
	_, tport, _ := net.SplitHostPort(hs.Listener.Addr().String())
	tc := hs.Client().Transport.(*http.Transport).TLSClientConfig
	// Not loopback, so that the proxy is used; only the proxy resolves it.
	_, port, _ := net.SplitHostPort(h.http.Listener.Addr().String())
	server := "ws://tunnel.test:" + port + "/"

	c, stop := runClient(t, ClientOptions{URL: server, Name: "behind-proxy", Handler: echoHandler})
	waitFor(t, "the tunnel through the proxy", func() bool { return h.server.Session("behind-proxy") != nil })
	conn, err := c.Dial(context.Background(), wire.Header{Kind: wire.KindTCP, Target: "echo:1"})
	if err != nil {
		t.Fatalf("dial through the proxied tunnel: %v", err)
	}
	roundTrip(t, conn, []byte("hello"))
	stop()
	if got := p.asked(); len(got) == 0 || got[0] != "CONNECT tunnel.test:"+port {
		t.Errorf("the proxy was asked %q, want CONNECT to the tunnel server", got)
	}

	// wss:// goes through HTTPS_PROXY, and TLS asks for the tunnel
	// server's name, not the proxy's.
	c, stop = runClient(t, ClientOptions{URL: "wss://example.com:" + tport + "/", Name: "tls-behind-proxy", Handler: echoHandler, TLSConfig: tc})
	waitFor(t, "the wss tunnel through the proxy", func() bool { return h.server.Session("tls-behind-proxy") != nil })
	stop()
	if _, ok := sni.Load("example.com"); !ok || len(tp.asked()) == 0 || tp.asked()[0] != "CONNECT example.com:"+tport {
		t.Errorf("wss through the proxy: the proxy was asked %q, the server was not asked for example.com", tp.asked())
	}

	for answer, want := range map[string]string{
		"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n": ": Proxy Authentication Required",
		"HTTP/1.1 407\r\n\r\n":                               ": 407",
		"HTTP/1.1 502\r\n\r\n":                               ": 502",
	} {
		p.setAnswer(answer)
		msg := lastError(t, ClientOptions{URL: server, Name: "refused"})
		p.waitClosed(t)
		if !strings.Contains(msg, "through proxy http://west:xxxxx@") || !strings.HasSuffix(msg, want) || strings.Contains(msg, "s3cret") {
			t.Errorf("proxy answering %q: last error %q, want it to name the proxy without its password, ending %q", answer, msg, want)
		}
	}
}
