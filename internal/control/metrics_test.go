package control

import (
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// sample returns the value of the sample of metric name whose labels
// include every name="value" pair in labels, and whether there is one.
func sample(body, name string, labels ...string) (float64, bool) {
	for line := range strings.SplitSeq(body, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || rest[0] != '{' && rest[0] != ' ' {
			continue
		}
		matched := true
		for _, l := range labels {
			if !strings.Contains(rest, l) {
				matched = false
			}
		}
		if !matched {
			continue
		}
		f, err := strconv.ParseFloat(rest[strings.LastIndexByte(rest, ' ')+1:], 64)
		return f, err == nil
	}
	return 0, false
}

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	h := New(Options{Config: staticConfig(mustConfig(t, caseG)), Source: &fakeSource{}, Metrics: m})
	code, body, _ := do(h, "GET", "/metrics", "127.0.0.1:1")
	if code != 200 {
		t.Fatalf("GET /metrics: %d", code)
	}
	return body
}

func TestMetrics(t *testing.T) {
	m := NewMetrics()
	want := func(body, name string, v float64, labels ...string) {
		t.Helper()
		got, ok := sample(body, name, labels...)
		if !ok || got != v {
			t.Errorf("%s%v = %v (present %v), want %v", name, labels, got, ok, v)
		}
	}

	var in, out, open atomic.Int64
	stats := func() TunnelStats {
		return TunnelStats{BytesIn: in.Load(), BytesOut: out.Load(), StreamsOpen: open.Load()}
	}
	peer := `peer="ws://L"`
	m.TunnelUp(1, RoleServer, "ws://L", stats)
	in.Store(100)
	out.Store(7)
	open.Store(2)
	body := scrape(t, m)
	want(body, "west_tunnels_up", 1, peer, `role="server"`)
	want(body, "west_tunnel_connects_total", 1, peer)
	want(body, "west_streams_open", 2, peer)
	want(body, "west_tunnel_bytes_total", 100, peer, `direction="in"`)
	want(body, "west_tunnel_bytes_total", 7, peer, `direction="out"`)

	// The tunnel ends and another comes up: the counters carry on from
	// the first's final counts, the gauges drop.
	in.Store(150)
	m.TunnelDown(1)
	m.TunnelDown(1) // a second report is ignored
	body = scrape(t, m)
	want(body, "west_tunnels_up", 0, peer)
	want(body, "west_streams_open", 0, peer)
	want(body, "west_tunnel_disconnects_total", 1, peer)
	want(body, "west_tunnel_bytes_total", 150, peer, `direction="in"`)

	in.Store(5)
	out.Store(0)
	open.Store(0)
	m.TunnelUp(2, RoleServer, "ws://L", stats)
	body = scrape(t, m)
	want(body, "west_tunnels_up", 1, peer)
	want(body, "west_tunnel_connects_total", 2, peer)
	want(body, "west_tunnel_bytes_total", 155, peer, `direction="in"`)
	want(body, "west_tunnel_bytes_total", 7, peer, `direction="out"`)

	for _, st := range []int{200, 204, 404, 499, 502, 503} {
		m.ObserveRequest("http://127.0.0.1:9931", "/pa", st, 30*time.Millisecond)
	}
	// Another listener with the same route, another route on the same
	// listener: series of their own.
	m.ObserveRequest("http://127.0.0.1:9932", "/pa", 200, time.Millisecond)
	m.ObserveRequest("http://127.0.0.1:9931", "/pb", 200, time.Millisecond)
	m.ObserveTCP("tcp://127.0.0.1:7000")
	m.DialFailed("dial_failed")
	m.DialFailed("dial_failed")
	body = scrape(t, m)
	lst, rt := `listener="http://127.0.0.1:9931"`, `route="/pa"`
	want(body, "west_requests_total", 2, lst, rt, `code_class="2xx"`)
	want(body, "west_requests_total", 2, lst, rt, `code_class="4xx"`)
	want(body, "west_requests_total", 2, lst, rt, `code_class="5xx"`)
	want(body, "west_requests_total", 1, `listener="http://127.0.0.1:9932"`, rt, `code_class="2xx"`)
	want(body, "west_requests_total", 1, lst, `route="/pb"`, `code_class="2xx"`)
	want(body, "west_request_duration_seconds_count", 6, lst, rt)
	want(body, "west_request_duration_seconds_count", 1, lst, `route="/pb"`)
	want(body, "west_request_duration_seconds_bucket", 0, lst, rt, `le="0.025"`)
	want(body, "west_request_duration_seconds_bucket", 6, lst, rt, `le="0.05"`)
	want(body, "west_tcp_connections_total", 1, `listener="tcp://127.0.0.1:7000"`)
	want(body, "west_dial_failures_total", 2, `reason="dial_failed"`)
	if _, ok := sample(body, "go_goroutines"); !ok {
		t.Errorf("no Go runtime metrics")
	}
}

func TestNilMetricsIgnoresCalls(t *testing.T) {
	var m *Metrics
	m.TunnelUp(1, RoleClient, "x", func() TunnelStats { return TunnelStats{} })
	m.TunnelDown(1)
	m.ObserveRequest("l", "/", 200, time.Second)
	m.ObserveTCP("l")
	m.DialFailed("x")
	m.UDPDropped("l", "queue_full", 1)
	m.ForgetTunnel(RoleClient, "x")
	h := New(Options{Config: staticConfig(mustConfig(t, caseG)), Source: &fakeSource{}})
	if code, _, _ := do(h, "GET", "/metrics", "127.0.0.1:1"); code != 404 {
		t.Errorf("GET /metrics without Metrics: %d, want 404", code)
	}
}

// TestMetricsForgetRoute: forgetting one route of a listener drops its
// request series and keeps the listener's other routes; a route counted
// again afterwards starts a series anew rather than counting into the
// dropped one.
func TestMetricsForgetRoute(t *testing.T) {
	m := NewMetrics()
	m.ObserveRequest("http://l", "/a", 200, time.Millisecond)
	m.ObserveRequest("http://l", "/a", 502, time.Millisecond)
	m.ObserveRequest("http://l", "/b", 200, time.Millisecond)
	m.ObserveRequest("http://other", "/a", 200, time.Millisecond)
	m.ForgetRoute("http://l", "/a")
	body := scrape(t, m)
	for _, name := range []string{"west_requests_total", "west_request_duration_seconds_count"} {
		if _, ok := sample(body, name, `listener="http://l"`, `route="/a"`); ok {
			t.Errorf("%s of the forgotten route is still there", name)
		}
		if _, ok := sample(body, name, `listener="http://l"`, `route="/b"`); !ok {
			t.Errorf("%s of the other route went too", name)
		}
		if _, ok := sample(body, name, `listener="http://other"`, `route="/a"`); !ok {
			t.Errorf("%s of another listener's route of that path went too", name)
		}
	}
	m.ObserveRequest("http://l", "/a", 200, time.Millisecond)
	if v, ok := sample(scrape(t, m), "west_requests_total", `listener="http://l"`, `route="/a"`, `code_class="2xx"`); !ok || v != 1 {
		t.Errorf("the route counted again: %v (present %v), want 1", v, ok)
	}
}

// TestMetricsForgetIdlePeers: a tunnel server may see endless peer names;
// only the most recent idle ones keep their series.
func TestMetricsForgetIdlePeers(t *testing.T) {
	m := NewMetrics()
	m.maxIdle = 2
	zero := func() TunnelStats { return TunnelStats{BytesIn: 1} }
	m.TunnelUp("live", RoleServer, "live", zero)
	for i, p := range []string{"a", "b", "c", "d"} {
		m.TunnelUp(i, RoleServer, p, zero)
		m.TunnelDown(i)
	}
	body := scrape(t, m)
	for p, want := range map[string]bool{"live": true, "a": false, "b": false, "c": true, "d": true} {
		for _, name := range []string{"west_tunnels_up", "west_tunnel_connects_total", "west_tunnel_bytes_total"} {
			if _, ok := sample(body, name, `peer="`+p+`"`); ok != want {
				t.Errorf("%s for peer %s present: %v, want %v", name, p, ok, want)
			}
		}
	}
	if _, ok := sample(body, "west_tunnel_disconnects_total", `peer="b"`); ok {
		t.Errorf("disconnects of a forgotten peer still reported")
	}
}

// TestMetricsForgetTunnel: ForgetTunnel drops a peer's series at once
// when none of its tunnels is up; with one up, as the last ends, unless
// another comes up before; the same name in the other role stays.
func TestMetricsForgetTunnel(t *testing.T) {
	m := NewMetrics()
	stats := func() TunnelStats { return TunnelStats{} }
	present := func(role, peer string) bool {
		_, ok := sample(scrape(t, m), "west_tunnels_up", `peer="`+peer+`"`, `role="`+role+`"`)
		return ok
	}
	m.TunnelUp(1, RoleClient, "ws://a", stats)
	m.TunnelUp(2, RoleServer, "ws://a", stats)
	m.TunnelDown(1)
	m.ForgetTunnel(RoleClient, "ws://a")
	if present(RoleClient, "ws://a") || !present(RoleServer, "ws://a") {
		t.Errorf("after ForgetTunnel of an idle client: client series present %v, server's %v; want false, true",
			present(RoleClient, "ws://a"), present(RoleServer, "ws://a"))
	}

	m.TunnelUp(3, RoleClient, "ws://b", stats)
	m.ForgetTunnel(RoleClient, "ws://b")
	if !present(RoleClient, "ws://b") {
		t.Errorf("ForgetTunnel dropped the series of a tunnel up")
	}
	m.TunnelDown(3)
	if present(RoleClient, "ws://b") {
		t.Errorf("the series stayed after the last tunnel of a forgotten peer ended")
	}

	m.TunnelUp(4, RoleClient, "ws://c", stats)
	m.ForgetTunnel(RoleClient, "ws://c")
	m.TunnelUp(5, RoleClient, "ws://c", stats) // back before the first ended
	m.TunnelDown(4)
	m.TunnelDown(5)
	if !present(RoleClient, "ws://c") {
		t.Errorf("a peer that came back after ForgetTunnel lost its series")
	}
}

func TestCodeClass(t *testing.T) {
	for status, want := range map[int]string{
		0: "other", 99: "other", 100: "1xx", 199: "1xx", 200: "2xx", 304: "3xx",
		404: "4xx", 499: "4xx", 502: "5xx", 599: "5xx", 600: "other", -1: "other",
	} {
		if got := codeClass(status); got != want {
			t.Errorf("codeClass(%d) = %q, want %q", status, got, want)
		}
	}
}

// A peer name that is not UTF-8 must not fail every scrape: Prometheus
// refuses such a label value. (Tunnel servers refuse such names at the
// handshake too; this holds whatever names reach the metrics.)
func TestMetricsPeerNameNotUTF8(t *testing.T) {
	m := NewMetrics()
	m.TunnelUp(1, RoleServer, "L\xff", func() TunnelStats { return TunnelStats{} })
	body := scrape(t, m)
	if v, ok := sample(body, "west_tunnels_up", `role="server"`); !ok || v != 1 {
		t.Errorf("west_tunnels_up{role=server} = %v (present %v), want 1", v, ok)
	}
	if !strings.Contains(body, "peer=\"L\ufffd\"") {
		t.Errorf("no series names the peer as L\ufffd")
	}
}

// TestCertificatesInForceNeverNone: a reload exports the certificates in
// force anew. A scrape meanwhile that saw none of them marked each series
// stale, which ended the alert on a certificate near its end, for the
// next scrape to raise it again.
func TestCertificatesInForceNeverNone(t *testing.T) {
	m := NewMetrics()
	end := time.Now().Add(time.Hour)
	certs := []CertInForce{{"wsts.tls_cert_file", "/s.pem", end}, {`wstc["wss://g"].cert_file`, "/c.pem", end}}
	m.CertificatesInForce(certs)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 20_000 {
			m.CertificatesInForce(certs) // a reload that changes none
		}
	}()
	for {
		select {
		case <-done:
			return
		default:
		}
		seen := make(chan prometheus.Metric, 16) // room for all: Collect does not block
		m.certExpiry.Collect(seen)
		if n := len(seen); n != len(certs) {
			<-done
			t.Fatalf("a scrape during a reload saw %d certificates, want %d", n, len(certs))
		}
	}
}
