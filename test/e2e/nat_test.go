//go:build linux

package e2e

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/west-tunnel/west/internal/testutil"
)

// The NAT tests put wests behind real NATs rather than beside their peer
// on loopback: network namespaces joined by veth pairs. One is the
// internet, where G runs; each site behind it is a router that masquerades
// with nftables and drops what comes in unasked, as a home router does, and
// a LAN behind that router:
//
//	                      ┌ 198.51.100.1  router 0  10.77.0.1 ── 10.77.0.2 LAN 0
//	internet 198.51.100.10┤
//	   (a bridge)         └ 198.51.100.11 router 1  10.78.0.1 ── 10.78.0.2 LAN 1
//
// The internet routes to every LAN through its router, and the routers
// route to the internet, so that nothing but a router's rules keeps a
// connection out. They need root, ip(8) and nft(8); without them they skip,
// unless WEST_REQUIRE_NETNS is set (CI sets it where it can make
// namespaces), and then they fail.

const (
	gAddr      = "198.51.100.10"
	routerWAN  = "198.51.100.1" // site 0's router
	routerWAN2 = "198.51.100.2" // site 0's router once its ISP changes its address
	lanAddr    = "10.77.0.2"    // the host on LAN 0
	lan1Addr   = "10.78.0.2"    // the host on LAN 1
)

// natLab is the namespaces, named for this process and test.
type natLab struct {
	pub   string
	sites []natSite
}

// natSite is one router and the LAN behind it.
type natSite struct{ router, lan string }

func newNATLab(t *testing.T, sites int) *natLab {
	t.Helper()
	needNetns(t, "ip", "nft")
	id := labID()
	lab := &natLab{pub: id + "-pub"}
	forward := func(ns string) {
		sh(t, "ip", "netns", "exec", ns, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
	}
	addNetns(t, lab.pub)
	sh(t, "ip", "-n", lab.pub, "link", "add", "br0", "type", "bridge")
	sh(t, "ip", "-n", lab.pub, "addr", "add", gAddr+"/24", "dev", "br0")
	sh(t, "ip", "-n", lab.pub, "link", "set", "br0", "up")
	forward(lab.pub)
	for i := range sites {
		site := natSite{router: fmt.Sprintf("%s-router%d", id, i), lan: fmt.Sprintf("%s-lan%d", id, i)}
		lab.sites = append(lab.sites, site)
		addNetns(t, site.router)
		addNetns(t, site.lan)
		wan := fmt.Sprintf("198.51.100.%d", 1+10*i)
		lanNet := fmt.Sprintf("10.%d.0", 77+i)
		// Each veth is made inside the router and its far end moved into
		// the internet or the LAN, so no name can clash with the host's.
		port := fmt.Sprintf("site%d", i)
		sh(t, "ip", "-n", site.router, "link", "add", "wan", "type", "veth", "peer", "name", port, "netns", lab.pub)
		sh(t, "ip", "-n", lab.pub, "link", "set", port, "master", "br0")
		sh(t, "ip", "-n", lab.pub, "link", "set", port, "up")
		sh(t, "ip", "-n", site.router, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", site.lan)
		for _, a := range []struct{ ns, dev, cidr string }{
			{site.router, "wan", wan + "/24"},
			{site.router, "lan", lanNet + ".1/24"},
			{site.lan, "eth0", lanNet + ".2/24"},
		} {
			sh(t, "ip", "-n", a.ns, "addr", "add", a.cidr, "dev", a.dev)
			sh(t, "ip", "-n", a.ns, "link", "set", a.dev, "up")
		}
		sh(t, "ip", "-n", site.lan, "route", "add", "default", "via", lanNet+".1")
		sh(t, "ip", "-n", site.router, "route", "add", "default", "via", gAddr)
		sh(t, "ip", "-n", lab.pub, "route", "add", lanNet+".0/24", "via", wan)
		forward(site.router)
		lab.nft(t, site, `
			table ip nat {
				chain post { type nat hook postrouting priority srcnat; oifname "wan" masquerade; }
			}
			table inet fw {
				chain forward {
					type filter hook forward priority filter; policy accept;
					ct state invalid drop
					iifname "wan" ct state new drop
				}
			}`)
	}
	return lab
}

// needNetns skips the test unless it runs as root with tools at hand to
// make namespaces; with WEST_REQUIRE_NETNS set it fails instead.
func needNetns(t *testing.T, tools ...string) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		if os.Getenv("WEST_REQUIRE_NETNS") != "" {
			t.Fatalf("WEST_REQUIRE_NETNS is set, but the netns tests lack %s", strings.Join(missing, ", "))
		}
		t.Skipf("the netns tests need %s (set WEST_REQUIRE_NETNS to fail instead)", strings.Join(missing, ", "))
	}
}

// labID names a test's namespaces apart from those of other runs.
func labID() string { return fmt.Sprintf("west-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6) }

// addNetns makes namespace ns, with its loopback up, for the test's time.
func addNetns(t *testing.T, ns string) {
	t.Helper()
	sh(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
}

// nft loads rules into a site's router.
func (lab *natLab) nft(t *testing.T, site natSite, rules string) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", site.router, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft %s: %v\n%s", rules, err, out)
	}
}

func sh(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// inNetns runs fn on a thread moved into namespace ns. A socket belongs to
// the namespace it was made in, so what fn opens stays there. The thread
// goes back afterwards; should that fail, it stays locked and so ends with
// the goroutine rather than serve others from the wrong namespace.
func inNetns(ns string, fn func()) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open own namespace: %w", err)
			return
		}
		defer self.Close()
		target, err := os.Open(filepath.Join("/run/netns", ns))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open namespace %s: %w", ns, err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter namespace %s: %w", ns, err)
			return
		}
		fn()
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("leave namespace %s: %w", ns, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- nil
	}()
	return <-errc
}

// listen opens a TCP listener on addr inside ns.
func (lab *natLab) listen(t *testing.T, ns, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	var lerr error
	if err := inNetns(ns, func() { ln, lerr = net.Listen("tcp", addr) }); err != nil {
		t.Fatal(err)
	}
	if lerr != nil {
		t.Fatalf("listen on %s in %s: %v", addr, ns, lerr)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// listenUDP opens a UDP socket on addr inside ns.
func (lab *natLab) listenUDP(t *testing.T, ns, addr string) net.PacketConn {
	t.Helper()
	var pc net.PacketConn
	var lerr error
	if err := inNetns(ns, func() { pc, lerr = net.ListenPacket("udp", addr) }); err != nil {
		t.Fatal(err)
	}
	if lerr != nil {
		t.Fatalf("listen on udp %s in %s: %v", addr, ns, lerr)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

// udpEcho answers each datagram with "echo: " and the datagram.
func udpEcho(pc net.PacketConn) {
	buf := make([]byte, 64<<10)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		pc.WriteTo(append([]byte("echo: "), buf[:n]...), from)
	}
}

// dial connects to addr from inside ns.
func (lab *natLab) dial(ctx context.Context, ns, addr string) (net.Conn, error) {
	var c net.Conn
	var derr error
	if err := inNetns(ns, func() { c, derr = (&net.Dialer{}).DialContext(ctx, "tcp", addr) }); err != nil {
		return nil, err
	}
	return c, derr
}

// client is an HTTP client whose connections start inside ns. It keeps no
// idle connections, so each request tests the path afresh.
func (lab *natLab) client(ns string) *http.Client {
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
				return lab.dial(ctx, ns, addr)
			},
		},
	}
}

// westIn runs the binary inside ns, as west does on loopback, and
// returns its output.
func westIn(t *testing.T, ns string, args ...string) *testutil.Buffer {
	t.Helper()
	_, out := startWest(t, exec.Command("ip", append([]string{"netns", "exec", ns, westBin}, args...)...))
	return out
}

// whoBackend answers every request with its method, path and the address
// it came from.
func whoBackend(t *testing.T, ln net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s from %s", r.Method, r.URL.RequestURI(), r.RemoteAddr)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// getFrom fetches url from inside ns and returns the status and body, or
// an error.
func (lab *natLab) getFrom(ns, url string) (int, string, error) {
	resp, err := lab.client(ns).Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// until retries f every 50 ms until it returns nil or within has passed,
// and returns how long it took.
func until(t *testing.T, within time.Duration, what string, f func() error) time.Duration {
	t.Helper()
	start := time.Now()
	var err error
	for time.Since(start) < within {
		if err = f(); err == nil {
			return time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v; last: %v", what, within, err)
	return 0
}

// tunnelPeerAddr reads G's control port, from inside pub, for the address
// the tunnel client named name connected from.
func (lab *natLab) tunnelPeerAddr(name string) (string, error) {
	p, err := lab.tunnelPeer(name)
	if err != nil {
		return "", err
	}
	host, _, err := net.SplitHostPort(p.RemoteAddr)
	return host, err
}

// tunnelPeer is G's control port's account of the tunnel client named
// name, read from inside pub.
type tunnelPeer struct {
	Name       string `json:"name"`
	RemoteAddr string `json:"remote_addr"`
	Since      string `json:"since"`
}

func (lab *natLab) tunnelPeer(name string) (tunnelPeer, error) {
	code, body, err := lab.getFrom(lab.pub, "http://127.0.0.1:9701/api/state")
	if err != nil {
		return tunnelPeer{}, err
	}
	if code != 200 {
		return tunnelPeer{}, fmt.Errorf("control port: %d %s", code, body)
	}
	var st struct {
		Server struct {
			Peers []tunnelPeer `json:"peers"`
		} `json:"server"`
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		return tunnelPeer{}, fmt.Errorf("control port JSON: %w", err)
	}
	for _, p := range st.Server.Peers {
		if p.Name == name {
			return p, nil
		}
	}
	return tunnelPeer{}, fmt.Errorf("no peer %q connected: %s", name, body)
}

// natWests starts the backends and the two wests of the NAT tests: G on
// pub, with a tunnel server, an http:// and a tcp:// listener towards L;
// L on the LAN, dialling G, with an http:// listener towards G's loopback.
func natWests(t *testing.T, lab *natLab) {
	t.Helper()
	whoBackend(t, lab.listen(t, lab.sites[0].lan, lanAddr+":8081"))
	testutil.EchoOn(t, lab.listen(t, lab.sites[0].lan, lanAddr+":2222"))
	go udpEcho(lab.listenUDP(t, lab.sites[0].lan, lanAddr+":5353"))
	whoBackend(t, lab.listen(t, lab.pub, "127.0.0.1:8091"))

	dir := t.TempDir()
	// Short liveness times, so that a tunnel the NAT lost is noticed in
	// about a second rather than the default 15.
	g := writeConfig(t, dir, "G", `{
		"west": {"nm": "nat.G", "cp": "127.0.0.1:9701", "keepalive": "300ms", "dead_after": "1s"},
		"wsts": {"sp": "ws://`+gAddr+`:9801"},
		"proxy": {
			"http://`+gAddr+`:8080": {"en": "nat.L", "/": {"ou": "http://`+lanAddr+`:8081/"}},
			"tcp://`+gAddr+`:2222": {"en": "nat.L", "ou": "tcp://`+lanAddr+`:2222"},
			"udp://`+gAddr+`:5353": {"en": "nat.L", "ou": "udp://`+lanAddr+`:5353"}}}`)
	l := writeConfig(t, dir, "L", `{
		"west": {"nm": "nat.L", "keepalive": "300ms", "dead_after": "1s"},
		"wstc": {"ws://`+gAddr+`:9801": {}},
		"proxy": {"http://`+lanAddr+`:8090": {"ea": "ws://`+gAddr+`:9801", "/": {"ou": "http://127.0.0.1:8091/"}}}}`)
	westIn(t, lab.pub, "-c", g)
	westIn(t, lab.sites[0].lan, "-c", l)
}

// TestNATReachesServerBehindIt is the mission on a real NAT: a client on
// the internet reaches an HTTP server, a TCP service and a UDP one that it
// cannot reach itself, through the tunnel L dialled out; and a client on the LAN
// reaches a server on G's loopback.
func TestNATReachesServerBehindIt(t *testing.T) {
	lab := newNATLab(t, 1)
	natWests(t, lab)

	// The NAT is real: pub has a route to the LAN, and is still kept out.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	c, err := lab.dial(ctx, lab.pub, lanAddr+":8081")
	cancel()
	if err == nil {
		c.Close()
		t.Fatal("the LAN's backend is reachable from pub without the tunnel: the lab's NAT does not hold")
	}

	want := "GET /through?q=1 from " + lanAddr + ":"
	until(t, 10*time.Second, "a request from pub reaches the LAN's backend", func() error {
		code, body, err := lab.getFrom(lab.pub, "http://"+gAddr+":8080/through?q=1")
		if err != nil {
			return err
		}
		if code != 200 || !strings.HasPrefix(body, want) {
			return fmt.Errorf("%d %q, want 200 %q…", code, body, want)
		}
		return nil
	})

	// G saw the tunnel come from the router's public address.
	if host, err := lab.tunnelPeerAddr("nat.L"); err != nil || host != routerWAN {
		t.Errorf("G's control port: tunnel from %q (%v), want the router's %s", host, err, routerWAN)
	}

	// Raw TCP crosses it too, both ways.
	conn, err := lab.dial(context.Background(), lab.pub, gAddr+":2222")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "across the NAT\n")
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || line != "across the NAT\n" {
		t.Errorf("tcp:// echo across the NAT: %q, %v", line, err)
	}

	// And UDP: a datagram from the internet, and its answer.
	client := lab.listenUDP(t, lab.pub, gAddr+":0")
	dst, _ := net.ResolveUDPAddr("udp", gAddr+":5353")
	client.WriteTo([]byte("datagram"), dst)
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 100)
	n, _, err := client.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "echo: datagram" {
		t.Errorf("udp:// across the NAT: %q, %v", buf[:n], err)
	}

	// And the other way: a LAN client reaches what only G's host can.
	code, body, err := lab.getFrom(lab.sites[0].lan, "http://"+lanAddr+":8090/back")
	if err != nil || code != 200 || !strings.HasPrefix(body, "GET /back from 127.0.0.1:") {
		t.Errorf("a LAN request to G's loopback: %d %q %v", code, body, err)
	}
}

// TestNATTunnelOutlivesRouter: the router loses the tunnel's NAT mapping
// twice, once by getting a new public address and once by dropping
// everything for longer than dead_after. Each time requests fail promptly
// rather than hang, and the tunnel comes back by itself.
func TestNATTunnelOutlivesRouter(t *testing.T) {
	lab := newNATLab(t, 1)
	natWests(t, lab)
	url := "http://" + gAddr + ":8080/x"
	ok := func() error {
		code, body, err := lab.getFrom(lab.pub, url)
		if err != nil {
			return err
		}
		if code != 200 {
			return fmt.Errorf("%d %s", code, body)
		}
		return nil
	}
	until(t, 10*time.Second, "the tunnel comes up", ok)

	// The ISP gives the router a new address: masquerading drops the
	// mappings made with the old one, so the tunnel's packets now leave
	// from an address G has never seen, and G's answers go to one that
	// is gone.
	// (Removed first: the kernel takes a subnet's other addresses away
	// with its first one.)
	sh(t, "ip", "-n", lab.sites[0].router, "addr", "del", routerWAN+"/24", "dev", "wan")
	sh(t, "ip", "-n", lab.sites[0].router, "addr", "add", routerWAN2+"/24", "dev", "wan")
	sh(t, "ip", "-n", lab.sites[0].router, "route", "replace", "default", "via", gAddr)
	sh(t, "ip", "-n", lab.pub, "route", "replace", "10.77.0.0/24", "via", routerWAN2)
	took := until(t, 20*time.Second, "the tunnel comes back from the router's new address", func() error {
		host, err := lab.tunnelPeerAddr("nat.L")
		if err != nil {
			return err
		}
		if host != routerWAN2 {
			return fmt.Errorf("tunnel still from %s", host)
		}
		return ok()
	})
	t.Logf("new router address: requests through the tunnel again after %v", took.Round(time.Millisecond))

	// The router drops all it forwards, silently. G must find the tunnel
	// dead by its silence (dead_after 1 s) and then answer 503 at once,
	// rather than let requests wait on a tunnel that is gone.
	lab.nft(t, lab.sites[0], `table inet outage { chain forward { type filter hook forward priority -10; policy drop; }; }`)
	outage := time.Now()
	gaveUp := until(t, 4*time.Second, "G gives the silent tunnel up within a few dead_afters", func() error {
		if p, err := lab.tunnelPeer("nat.L"); err == nil {
			return fmt.Errorf("still connected: %+v", p)
		}
		return nil
	})
	t.Logf("outage: G gave the tunnel up after %v", gaveUp.Round(time.Millisecond))
	start := time.Now()
	code, body, err := lab.getFrom(lab.pub, url)
	if err != nil || code != http.StatusServiceUnavailable {
		t.Errorf("during the outage: %d %q %v, want a prompt 503", code, body, err)
	} else if d := time.Since(start); d > 2*time.Second {
		t.Errorf("during the outage the 503 took %v", d)
	}
	time.Sleep(3*time.Second - time.Since(outage))
	lab.nft(t, lab.sites[0], `delete table inet outage`)
	took = until(t, 25*time.Second, "the tunnel comes back after the outage", ok)
	t.Logf("outage of 3 s: requests through the tunnel again %v after it ended", took.Round(time.Millisecond))
}

// TestNATIdleTunnelKeptOpenByKeepalive: a router that forgets a
// connection after 2 s without packets, as carrier-grade NATs forget idle
// ones after minutes, and that lets no packet of a forgotten connection
// through either way. An idle tunnel pinging every 300 ms keeps its
// mapping: after 5 s idle it is the same session, and a request crosses it
// at once.
func TestNATIdleTunnelKeptOpenByKeepalive(t *testing.T) {
	lab := newNATLab(t, 1)
	sh(t, "ip", "netns", "exec", lab.sites[0].router, "sh", "-c",
		"echo 2 > /proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established && echo 0 > /proc/sys/net/netfilter/nf_conntrack_tcp_loose")
	natWests(t, lab)
	url := "http://" + gAddr + ":8080/idle"
	until(t, 10*time.Second, "the tunnel comes up", func() error {
		code, body, err := lab.getFrom(lab.pub, url)
		if err == nil && code != 200 {
			err = fmt.Errorf("%d %s", code, body)
		}
		return err
	})
	before, err := lab.tunnelPeer("nat.L")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Second)
	after, err := lab.tunnelPeer("nat.L")
	if err != nil || after != before {
		t.Fatalf("after 5 s idle the tunnel is %+v (%v), was %+v: the NAT dropped it", after, err, before)
	}
	if code, body, err := lab.getFrom(lab.pub, url); err != nil || code != 200 {
		t.Fatalf("a request after 5 s idle: %d %q %v", code, body, err)
	}
}

// TestNATCase3AcrossTwoNATs is use case 3 with each end behind its own NAT:
// a client on LAN 0 reaches a server on LAN 1's loopback, through L's
// tunnel to G and G's tunnel to L2, neither LAN able to reach the other.
func TestNATCase3AcrossTwoNATs(t *testing.T) {
	lab := newNATLab(t, 2)
	site0, site1 := lab.sites[0], lab.sites[1]
	whoBackend(t, lab.listen(t, site1.lan, "127.0.0.1:9971"))
	// Something on LAN 1 that LAN 0 could reach were there no NAT.
	whoBackend(t, lab.listen(t, site1.lan, lan1Addr+":9972"))

	dir := t.TempDir()
	// The seed's case 3 samples, with the addresses of the sites.
	g := writeConfig(t, dir, "G", `{"west": {"nm": "ws://case3.G", "cp": "127.0.0.1:9701"},
		"wsts": {"sp": "ws://`+gAddr+`:9801"},
		"proxy": {"http://127.0.0.1:9961": {"en": "ws://case3.L2", "/by": {"ou": "http://127.0.0.1:9971/b"}}}}`)
	l := writeConfig(t, dir, "L", `{"west": {"nm": "ws://case3.L"},
		"proxy": {"http://`+lanAddr+`:9951": {"ea": "ws://`+gAddr+`:9801", "/bx": {"ou": "http://127.0.0.1:9961/by"}}}}`)
	l2 := writeConfig(t, dir, "L2", `{"west": {"nm": "ws://case3.L2"}, "wstc": {"ws://`+gAddr+`:9801": {}}}`)
	westIn(t, lab.pub, "-c", g)
	westIn(t, site0.lan, "-c", l)
	westIn(t, site1.lan, "-c", l2)

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	c, err := lab.dial(ctx, site0.lan, lan1Addr+":9972")
	cancel()
	if err == nil {
		c.Close()
		t.Fatal("LAN 1 is reachable from LAN 0 without the tunnels: the lab's NATs do not hold")
	}

	until(t, 10*time.Second, "a request from LAN 0 reaches LAN 1's loopback", func() error {
		code, body, err := lab.getFrom(site0.lan, "http://"+lanAddr+":9951/bx/q?n=3")
		if err != nil {
			return err
		}
		if want := "GET /b/q?n=3 from 127.0.0.1:"; code != 200 || !strings.HasPrefix(body, want) {
			return fmt.Errorf("%d %q, want 200 %q…", code, body, want)
		}
		return nil
	})
	// Both tunnels came through their routers.
	for name, wan := range map[string]string{"ws://case3.L": routerWAN, "ws://case3.L2": "198.51.100.11"} {
		if host, err := lab.tunnelPeerAddr(name); err != nil || host != wan {
			t.Errorf("G's control port: %s's tunnel from %q (%v), want its router's %s", name, host, err, wan)
		}
	}
}

// connectProxy is an HTTP proxy that serves CONNECT only, as the egress
// proxies of locked-down networks do. It dials from inside ns, wants
// Proxy-Authorization for user "west" and password secret, and records the
// targets it connected.
type connectProxy struct {
	lab     *natLab
	ns      string
	auth    string
	mu      sync.Mutex
	targets []string
}

func (p *connectProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect {
		http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
		return
	}
	if r.Header.Get("Proxy-Authorization") != p.auth {
		w.Header().Set("Proxy-Authenticate", `Basic realm="egress"`)
		http.Error(w, "who are you?", http.StatusProxyAuthRequired)
		return
	}
	up, err := p.lab.dial(r.Context(), p.ns, r.Host)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer up.Close()
	p.mu.Lock()
	p.targets = append(p.targets, r.Host)
	p.mu.Unlock()
	down, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer down.Close()
	io.WriteString(down, "HTTP/1.1 200 Connection established\r\n\r\n")
	done := make(chan struct{})
	go func() {
		io.Copy(up, buf)
		up.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	io.Copy(down, up)
	<-done
}

func (p *connectProxy) connected() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.targets)
}

// TestNATTunnelThroughHTTPProxy: a LAN whose router forwards nothing, so
// that the only way out is the HTTP proxy on the router. L, given the proxy
// in HTTP_PROXY as an operator would, dials G through it; a wrong password
// is reported as the proxy's refusal.
func TestNATTunnelThroughHTTPProxy(t *testing.T) {
	lab := newNATLab(t, 1)
	site := lab.sites[0]
	lab.nft(t, site, `table inet corp { chain forward { type filter hook forward priority -10; iifname "lan" drop; }; }`)
	proxy := &connectProxy{lab: lab, ns: site.router, auth: "Basic " + base64.StdEncoding.EncodeToString([]byte("west:s3cret"))}
	srv := &http.Server{Handler: proxy}
	go srv.Serve(lab.listen(t, site.router, "10.77.0.1:3128"))
	t.Cleanup(func() { srv.Close() })
	whoBackend(t, lab.listen(t, site.lan, lanAddr+":8081"))

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	c, err := lab.dial(ctx, site.lan, gAddr+":9801")
	cancel()
	if err == nil {
		c.Close()
		t.Fatal("G is reachable from the LAN without the proxy: the lab's firewall does not hold")
	}

	dir := t.TempDir()
	g := writeConfig(t, dir, "G", `{"west": {"nm": "nat.G", "cp": "127.0.0.1:9701"},
		"wsts": {"sp": "ws://`+gAddr+`:9801"},
		"proxy": {"http://`+gAddr+`:8080": {"en": "nat.L", "/": {"ou": "http://`+lanAddr+`:8081/"}}}}`)
	l := writeConfig(t, dir, "L", `{"west": {"nm": "nat.L", "cp": "127.0.0.1:9702"}, "wstc": {"ws://`+gAddr+`:9801": {}}}`)
	westIn(t, lab.pub, "-c", g)

	// A wrong password first: the proxy's refusal is what L reports.
	bad := exec.Command("ip", "netns", "exec", site.lan, westBin, "-c", l)
	bad.Env = append(os.Environ(), "HTTP_PROXY=http://west:wrong@10.77.0.1:3128")
	stopBad, _ := startWest(t, bad)
	until(t, 10*time.Second, "L reports the proxy's refusal", func() error {
		code, body, err := lab.getFrom(site.lan, "http://127.0.0.1:9702/api/state")
		if err != nil {
			return err
		}
		var st struct {
			Clients []struct {
				LastError string `json:"last_error"`
			} `json:"clients"`
		}
		if err := json.Unmarshal([]byte(body), &st); err != nil || code != 200 || len(st.Clients) != 1 {
			return fmt.Errorf("%d %s", code, body)
		}
		const want = "through proxy http://west:xxxxx@10.77.0.1:3128: Proxy Authentication Required"
		if got := st.Clients[0].LastError; !strings.Contains(got, want) || strings.Contains(got, "wrong") {
			return fmt.Errorf("last error %q, want it to hold %q, and no password", got, want)
		}
		return nil
	})
	stopBad()

	good := exec.Command("ip", "netns", "exec", site.lan, westBin, "-c", l)
	good.Env = append(os.Environ(), "HTTP_PROXY=http://west:s3cret@10.77.0.1:3128")
	startWest(t, good)
	until(t, 10*time.Second, "a request from pub reaches the LAN through the proxied tunnel", func() error {
		code, body, err := lab.getFrom(lab.pub, "http://"+gAddr+":8080/via-proxy")
		if err == nil && (code != 200 || !strings.HasPrefix(body, "GET /via-proxy from ")) {
			err = fmt.Errorf("%d %q", code, body)
		}
		return err
	})
	if got := proxy.connected(); len(got) != 1 || got[0] != gAddr+":9801" {
		t.Errorf("the proxy connected %q, want G's tunnel server once", got)
	}
}

// TestNATSecuredTunnel is the setup the README recommends for a tunnel
// server on the internet, across the NAT: wss:// with a certificate the
// client checks by name, a token per peer, and a dial_allow on the LAN's
// west so that G's listeners reach only what it lists.
func TestNATSecuredTunnel(t *testing.T) {
	lab := newNATLab(t, 1)
	site := lab.sites[0]
	whoBackend(t, lab.listen(t, site.lan, lanAddr+":8081"))
	whoBackend(t, lab.listen(t, site.lan, lanAddr+":8082")) // on the LAN, not listed
	cert, key := testutil.SelfSigned(t, "g.example", time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))

	dir := t.TempDir()
	g := writeConfig(t, dir, "G", `{"west": {"nm": "nat.G", "cp": "127.0.0.1:9701"},
		"wsts": {"sp": "wss://`+gAddr+`:9443", "tls_cert_file": "`+cert+`", "tls_key_file": "`+key+`",
			"tokens": {"nat.L": "env:NAT_L_TOKEN"}},
		"proxy": {"http://`+gAddr+`:8080": {"en": "nat.L",
			"/": {"ou": "http://`+lanAddr+`:8081/"},
			"/other": {"ou": "http://`+lanAddr+`:8082/"}}}}`)
	l := writeConfig(t, dir, "L", `{"west": {"nm": "nat.L", "dial_allow": ["`+lanAddr+`:8081"]},
		"wstc": {"wss://`+gAddr+`:9443": {"ca_file": "`+cert+`", "server_name": "g.example", "token": "env:NAT_L_TOKEN"}}}`)
	token := "NAT_L_TOKEN=4f1c0a7e9b2d83c6a15e07fd"
	gCmd := exec.Command("ip", "netns", "exec", lab.pub, westBin, "-c", g)
	gCmd.Env = append(os.Environ(), token)
	startWest(t, gCmd)
	lCmd := exec.Command("ip", "netns", "exec", site.lan, westBin, "-c", l)
	lCmd.Env = append(os.Environ(), token)
	startWest(t, lCmd)

	until(t, 10*time.Second, "a request from pub reaches the LAN through wss://", func() error {
		code, body, err := lab.getFrom(lab.pub, "http://"+gAddr+":8080/secure")
		if err == nil && (code != 200 || !strings.HasPrefix(body, "GET /secure from ")) {
			err = fmt.Errorf("%d %q", code, body)
		}
		return err
	})
	if host, err := lab.tunnelPeerAddr("nat.L"); err != nil || host != routerWAN {
		t.Errorf("G's control port: tunnel from %q (%v), want the router's %s", host, err, routerWAN)
	}
	// The LAN's west dials only what its dial_allow lists.
	code, body, err := lab.getFrom(lab.pub, "http://"+gAddr+":8080/other/x")
	if err != nil || code != http.StatusForbidden || !strings.Contains(body, "dial_allow") {
		t.Errorf("a target the LAN's dial_allow leaves out: %d %q %v, want 403 naming dial_allow", code, body, err)
	}
}
