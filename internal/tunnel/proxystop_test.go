package tunnel

import (
	"crypto/tls"
	"net"
	"testing"
	"time"
)

// stopDuringSilentProxy runs a client whose proxy, of scheme, takes its
// connection and serves it with serve, which never answers: a stop ends
// the handshake with the proxy at once, not at HandshakeTimeout, and
// closes the connection. Once a process: net/http reads the variables once.
func stopDuringSilentProxy(t *testing.T, scheme string, serve func(net.Conn)) {
	t.Helper()
	p := startProxyServer(t, serve)
	_, port, _ := net.SplitHostPort(p.ln.Addr().String())
	clearProxyEnv(t)
	t.Setenv("HTTP_PROXY", scheme+"://west:s3cret@localhost:"+port)
	_, stop := runClient(t, ClientOptions{URL: "ws://tunnel.test:1/", Name: "silent", Handler: echoHandler, HandshakeTimeout: 30 * time.Second})
	waitFor(t, "a connection to the proxy", func() bool { return p.open() > 0 })
	time.Sleep(100 * time.Millisecond) // into the handshake with the proxy
	start := time.Now()
	stop()
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("%s proxy: the stop took %v, the proxy silent", scheme, d)
	}
	p.waitClosed(t)
}

func TestStopDuringSilentHTTPProxy(t *testing.T) {
	if inOwnProcess(t) {
		stopDuringSilentProxy(t, "http", drain)
	}
}

func TestStopDuringSilentSOCKSProxy(t *testing.T) {
	if inOwnProcess(t) {
		stopDuringSilentProxy(t, "socks5h", drain)
	}
}

func TestStopDuringSilentHTTPSProxy(t *testing.T) {
	if inOwnProcess(t) {
		stopDuringSilentProxy(t, "https", drain) // in its TLS handshake
	}
}

// TestStopDuringSilentHTTPSProxyConnect: silent after TLS, on the CONNECT.
func TestStopDuringSilentHTTPSProxyConnect(t *testing.T) {
	if !inOwnProcess(t) {
		return
	}
	cert, certFile := selfSigned(t, "localhost")
	t.Setenv("SSL_CERT_FILE", certFile)
	stopDuringSilentProxy(t, "https", func(down net.Conn) {
		tc := tls.Server(down, &tls.Config{Certificates: []tls.Certificate{cert}})
		if tc.Handshake() == nil {
			drain(tc)
		}
	})
}
