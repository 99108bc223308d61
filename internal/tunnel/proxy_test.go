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

// connectProxy is an HTTP proxy that serves CONNECT only, to target
// whatever host is asked for, with answer (when set) as its raw refusal.
type connectProxy struct {
	ln      net.Listener
	target  string
	auth    string // the Proxy-Authorization it wants
	answer  string
	mu      sync.Mutex
	reqs    []string // the requests, "METHOD host", in order
	wg      sync.WaitGroup
	closing chan struct{}
}

func startConnectProxy(t *testing.T, target, user, password string) *connectProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &connectProxy{ln: ln, target: target, closing: make(chan struct{}),
		auth: "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() { defer p.wg.Done(); p.serve(c) }()
		}
	}()
	t.Cleanup(func() { close(p.closing); ln.Close(); p.wg.Wait() })
	return p
}

func (p *connectProxy) serve(down net.Conn) {
	defer down.Close()
	req, err := http.ReadRequest(bufio.NewReader(down))
	if err != nil {
		return
	}
	p.mu.Lock()
	p.reqs = append(p.reqs, req.Method+" "+req.Host)
	answer := p.answer
	p.mu.Unlock()
	switch {
	case answer != "":
		io.WriteString(down, answer)
		return
	case req.Method != http.MethodConnect:
		io.WriteString(down, "HTTP/1.1 405 Method Not Allowed\r\n\r\n")
		return
	case req.Header.Get("Proxy-Authorization") != p.auth:
		io.WriteString(down, "HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
		return
	}
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		io.WriteString(down, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
		return
	}
	defer up.Close()
	io.WriteString(down, "HTTP/1.1 200 Connection established\r\n\r\n")
	go func() {
		select {
		case <-p.closing:
			up.Close()
			down.Close()
		}
	}()
	go io.Copy(up, down)
	io.Copy(down, up)
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
	for _, k := range []string{"NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "http_proxy"} {
		t.Setenv(k, "")
	}
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
		c, _ := runClient(t, ClientOptions{URL: server, Name: "refused", Handler: echoHandler, MinBackoff: time.Hour})
		waitFor(t, "a failed attempt", func() bool { return c.Status().State == StateBackoff })
		msg := c.Status().LastError.Error()
		if !strings.Contains(msg, "through proxy http://west:xxxxx@") || !strings.HasSuffix(msg, want) || strings.Contains(msg, "s3cret") {
			t.Errorf("proxy answering %q: last error %q, want it to name the proxy without its password, ending %q", answer, msg, want)
		}
	}
}
