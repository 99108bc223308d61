package tunnel

import (
	"encoding/binary"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
)

// socksProxy is a SOCKS5 server (RFC 1928) that wants a user and password
// (RFC 1929) and connects every CONNECT to target, whatever it names;
// reply, when set, is its refusal code.
type socksProxy struct {
	*proxyServer
	target string
	mu     sync.Mutex // guards the fields below
	user   string
	pass   string
	reply  byte
	asked  []string // "name host:port" or "address ip:port", in order
}

func startSOCKSProxy(t *testing.T, target, user, password string) *socksProxy {
	t.Helper()
	p := &socksProxy{target: target, user: user, pass: password}
	p.proxyServer = startProxyServer(t, p.serve)
	return p
}

func (p *socksProxy) serve(down net.Conn) {
	p.mu.Lock()
	user, pass, reply := p.user, p.pass, p.reply
	p.mu.Unlock()
	if !p.authenticate(down, user, pass) {
		drain(down)
		return
	}
	dst, ok := readSOCKSRequest(down)
	if !ok {
		return
	}
	p.mu.Lock()
	p.asked = append(p.asked, dst)
	p.mu.Unlock()
	if reply != 0 {
		down.Write([]byte{5, reply, 0, 1, 0, 0, 0, 0, 0, 0})
		drain(down)
		return
	}
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		down.Write([]byte{5, 5, 0, 1, 0, 0, 0, 0, 0, 0}) // connection refused
		return
	}
	down.Write([]byte{5, 0, 0, 1, 127, 0, 0, 1, 0, 0})
	relay(down, up)
}

// authenticate offers nothing but user and password, and checks them.
func (p *socksProxy) authenticate(down net.Conn, user, pass string) bool {
	var head [2]byte
	if _, err := io.ReadFull(down, head[:]); err != nil || head[0] != 5 {
		return false
	}
	methods := make([]byte, head[1])
	if _, err := io.ReadFull(down, methods); err != nil {
		return false
	}
	if !slices.Contains(methods, 2) {
		down.Write([]byte{5, 0xff}) // no acceptable method
		return false
	}
	down.Write([]byte{5, 2})
	gotUser, ok1 := readSOCKSField(down, 1) // after the sub-negotiation's version
	gotPass, ok2 := readSOCKSField(down, 0)
	if !ok1 || !ok2 || gotUser != user || gotPass != pass {
		down.Write([]byte{1, 1})
		return false
	}
	down.Write([]byte{1, 0})
	return true
}

// readSOCKSField reads skip bytes, then a length byte and that many bytes.
func readSOCKSField(r io.Reader, skip int) (string, bool) {
	b := make([]byte, skip+1)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", false
	}
	field := make([]byte, b[skip])
	if _, err := io.ReadFull(r, field); err != nil {
		return "", false
	}
	return string(field), true
}

// readSOCKSRequest reads a CONNECT and says what it names.
func readSOCKSRequest(r io.Reader) (string, bool) {
	var head [4]byte // version, command, reserved, address type
	if _, err := io.ReadFull(r, head[:]); err != nil || head[0] != 5 || head[1] != 1 {
		return "", false
	}
	var kind, host string
	switch head[3] {
	case 1, 4:
		ip := make(net.IP, map[byte]int{1: 4, 4: 16}[head[3]])
		if _, err := io.ReadFull(r, ip); err != nil {
			return "", false
		}
		kind, host = "address", ip.String()
	case 3:
		name, ok := readSOCKSField(r, 0)
		if !ok {
			return "", false
		}
		kind, host = "name", name
	default:
		return "", false
	}
	var port [2]byte
	if _, err := io.ReadFull(r, port[:]); err != nil {
		return "", false
	}
	return kind + " " + net.JoinHostPort(host, strconv.Itoa(int(binary.BigEndian.Uint16(port[:])))), true
}

func (p *socksProxy) requests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.asked...)
}

func (p *socksProxy) setPassword(pass string) {
	p.mu.Lock()
	p.pass = pass
	p.mu.Unlock()
}

func (p *socksProxy) setReply(code byte) {
	p.mu.Lock()
	p.reply = code
	p.mu.Unlock()
}
