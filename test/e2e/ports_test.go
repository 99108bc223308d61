//go:build linux

package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/west-tunnel/west/internal/testutil"
)

// TestEphemeralPortsUsedUp runs G and L in a namespace whose ephemeral
// ports are narrowed to two, so that the kernel runs out of them as a
// busy host does out of its 28,000 (connections in TIME_WAIT, mostly).
// A tunnel client that finds no port to dial its server from warns,
// naming the limit, and comes up once one is free; a far west that finds
// none to dial its backend from is at a limit, not failed by the backend:
// the client gets 503 (try later), not 502, and the far west warns,
// naming the limit.
func TestEphemeralPortsUsedUp(t *testing.T) {
	lab := newLoopbackLab(t)
	ns := lab.pub
	sh(t, "ip", "netns", "exec", ns, "sh", "-c", `echo "40000 40001" > /proc/sys/net/ipv4/ip_local_port_range`)
	const tunnelAddr, proxyAddr, backendAddr = "127.0.0.1:9801", "127.0.0.1:8090", "127.0.0.1:8081"
	whoBackend(t, lab.listen(t, ns, backendAddr))

	dir := t.TempDir()
	g := writeConfig(t, dir, "G", `{"west": {"nm": "ports.G"}, "wsts": {"sp": "ws://`+tunnelAddr+`"}}`)
	l := writeConfig(t, dir, "L", `{"west": {"nm": "ports.L"},
		"wstc": {"ws://`+tunnelAddr+`": {}},
		"proxy": {"http://`+proxyAddr+`": {"ea": "ws://`+tunnelAddr+`", "/": {"ou": "http://`+backendAddr+`/"}}}}`)
	gOut := westIn(t, ns, "-c", g)
	waitOutput(t, gOut, `msg=listening role=tunnel`)

	// The tunnel client's dial.
	held := lab.usePortsUp(t, ns, tunnelAddr)
	lOut := westIn(t, ns, "-c", l)
	waitOutput(t, lOut, `level=WARN msg="tunnel connect failed" .*cannot assign requested address.* hint=".*ip_local_port_range`)
	release(held)
	waitOutput(t, lOut, `msg="tunnel up"`)

	// The far west's dial. L's tunnel holds a port, but towards G, and
	// the kernel may share a port between destinations.
	held = lab.usePortsUp(t, ns, backendAddr)
	port := 50000 // the client's own, outside the range
	get := func() (int, string) {
		t.Helper()
		port++
		code, body, err := getFromPort(ns, port, "http://"+proxyAddr+"/x")
		if err != nil {
			t.Fatal(err)
		}
		return code, body
	}
	if code, body := get(); code != http.StatusServiceUnavailable || !strings.Contains(body, "cannot assign requested address") {
		t.Errorf("far side out of ports towards the backend: %d %q, want 503 with the reason", code, body)
	}
	waitOutput(t, gOut, `level=WARN msg="dial failed" .*hint=".*ip_local_port_range.*cannot assign requested address`)
	release(held)
	if code, body := get(); code != 200 || !strings.HasPrefix(body, "GET /x from 127.0.0.1:4000") {
		t.Errorf("ports free again: %d %q, want 200 from the backend", code, body)
	}
}

// newLoopbackLab is a lab of one namespace, pub, with only its loopback.
// It needs root and ip(8), not nft(8).
func newLoopbackLab(t *testing.T) *natLab {
	t.Helper()
	needNetns(t, "ip")
	lab := &natLab{pub: labID() + "-lo"}
	addNetns(t, lab.pub)
	return lab
}

// usePortsUp dials addr from inside ns until the kernel has no local port
// left to dial it from, and returns the connections, which hold them.
func (lab *natLab) usePortsUp(t *testing.T, ns, addr string) []net.Conn {
	t.Helper()
	var held []net.Conn
	t.Cleanup(func() { release(held) })
	for len(held) <= 10 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := lab.dial(ctx, ns, addr)
		cancel()
		if errors.Is(err, syscall.EADDRNOTAVAIL) {
			return held
		}
		if err != nil {
			t.Fatalf("dial %s with local ports left: %v", addr, err)
		}
		held = append(held, c)
	}
	t.Fatalf("%d connections to %s, and local ports left: the range set does not hold", len(held), addr)
	return nil
}

// release closes conns with a reset rather than a FIN: the side that
// closes first would keep its port a minute in TIME_WAIT.
func release(conns []net.Conn) {
	for _, c := range conns {
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}
}

// getFromPort fetches url from inside ns over a connection from local
// port port, which the kernel would otherwise take from the range.
func getFromPort(ns string, port int, url string) (int, string, error) {
	from := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
	client := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
				var c net.Conn
				var derr error
				if err := inNetns(ns, func() { c, derr = (&net.Dialer{LocalAddr: from}).DialContext(ctx, "tcp", addr) }); err != nil {
					return nil, err
				}
				return c, derr
			},
		},
	}
	resp, err := client.Get(url)
	if err != nil {
		return 0, "", fmt.Errorf("get %s from port %d: %w", url, port, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// waitOutput waits up to 5 s for a west's output to match pattern.
func waitOutput(t *testing.T, out *testutil.Buffer, pattern string) {
	t.Helper()
	re := regexp.MustCompile(pattern)
	until(t, 5*time.Second, "west's output to match "+pattern, func() error {
		if !re.MatchString(out.String()) {
			return errors.New("no line matches yet")
		}
		return nil
	})
}

// TestFarDialWithIPv6Off: connect(2) says "cannot assign requested
// address" (EADDRNOTAVAIL) both when the ephemeral ports are used up and
// when the host has no address to reach the target from, as where IPv6
// is off (many containers) and the target is an IPv6 address. The second
// is the target's failure, not a limit of the far west: the client gets
// 502, as for any other dial that fails, not 503 (try later), and the far
// west names no limit to raise.
func TestFarDialWithIPv6Off(t *testing.T) {
	lab := newLoopbackLab(t)
	ns := lab.pub
	for _, f := range []string{"all", "default", "lo"} {
		sh(t, "ip", "netns", "exec", ns, "sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/"+f+"/disable_ipv6")
	}
	const tunnelAddr, proxyAddr = "127.0.0.1:9801", "127.0.0.1:8090"
	dir := t.TempDir()
	g := writeConfig(t, dir, "G", `{"west": {"nm": "v6off.G"}, "wsts": {"sp": "ws://`+tunnelAddr+`"}}`)
	l := writeConfig(t, dir, "L", `{"west": {"nm": "v6off.L"},
		"wstc": {"ws://`+tunnelAddr+`": {}},
		"proxy": {"http://`+proxyAddr+`": {"ea": "ws://`+tunnelAddr+`", "/": {"ou": "http://[::1]:8081/"}}}}`)
	gOut := westIn(t, ns, "-c", g)
	waitOutput(t, gOut, `msg=listening role=tunnel`)
	lOut := westIn(t, ns, "-c", l)
	waitOutput(t, lOut, `msg="tunnel up"`)

	code, body, err := lab.getFrom(ns, "http://"+proxyAddr+"/x")
	if err != nil {
		t.Fatal(err)
	}
	if code != http.StatusBadGateway || !strings.Contains(body, "cannot assign requested address") {
		t.Errorf("far side with no IPv6 address, target [::1]: %d %q, want 502 with the reason", code, body)
	}
	waitOutput(t, gOut, `msg="dial failed" .*cannot assign requested address`)
	for line := range strings.Lines(gOut.String()) {
		if strings.Contains(line, `msg="dial failed"`) && strings.Contains(line, "hint=") {
			t.Errorf("far side names a limit for a host without IPv6:\n%s", line)
		}
	}
}
