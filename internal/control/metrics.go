package control

import (
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Tunnel roles, the "role" label of the tunnel metrics.
const (
	RoleServer = "server" // a tunnel client connected to our tunnel server; peer is its name
	RoleClient = "client" // one of our tunnel clients; peer is the server URL
)

// TunnelStats are a live tunnel's counters, read when metrics are scraped.
type TunnelStats struct {
	BytesIn, BytesOut, StreamsOpen int64
}

// Metrics holds west's Prometheus collectors in a registry of its own. The
// node calls its methods from the engines' hooks; all are safe for
// concurrent use, and a nil *Metrics ignores them.
type Metrics struct {
	reg          *prometheus.Registry
	requests     *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	dialFailures *prometheus.CounterVec
	tcpConns     *prometheus.CounterVec
	udpDropped   *prometheus.CounterVec
	refused      prometheus.Counter
	tlsFailed    prometheus.Counter
	shed         prometheus.Counter
	certExpiry   *prometheus.GaugeVec

	// maxIdle bounds how many (role, peer) series without a live tunnel are
	// kept: a tunnel server may see any number of peer names over time.
	// Beyond it, the series whose last tunnel ended first are dropped.
	maxIdle int

	// requestSeries keeps each request series prometheus gave out, since its
	// lookup by label values hashes and checks them on every call: 2 % of
	// a busy listener's CPU. Listeners and routes come from the config,
	// so it stays small.
	requestMu     sync.RWMutex
	requestSeries map[requestKey]requestSeries

	mu     sync.Mutex            // guards the fields below
	live   map[any]liveTunnel    // by the id given to TunnelUp
	series map[tunnelKey]*series // every (role, peer) kept
	downs  uint64                // TunnelDown calls, to order series by their last one

	certMu sync.Mutex         // guards certs
	certs  map[[2]string]bool // (key, file) of each series of certExpiry
}

type tunnelKey struct{ role, peer string }

func newTunnelKey(role, peer string) tunnelKey {
	// A peer's name is its Origin header, which may hold bytes that are
	// not UTF-8: Prometheus refuses such a label value, failing the whole
	// scrape for as long as the series is kept.
	return tunnelKey{role, strings.ToValidUTF8(peer, "\uFFFD")}
}

// series is what Metrics remembers of one (role, peer).
type series struct {
	ended       TunnelStats // bytes carried by its tunnels that have ended
	live        int         // its tunnels up now
	connects    int         // tunnels established
	disconnects int         // tunnels ended
	lastDown    uint64      // m.downs when its last tunnel ended
	forget      bool        // ForgetTunnel asked for it while a tunnel was up: it goes with the last
}

// DefaultMaxIdlePeers is how many peers without a live tunnel Metrics
// keeps series for.
const DefaultMaxIdlePeers = 256

type liveTunnel struct {
	key   tunnelKey
	stats func() TunnelStats
}

// NewMetrics returns Metrics with every west_ collector registered, plus
// the Go runtime and process collectors.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "west_requests_total",
			Help: "HTTP requests finished by proxy listeners, by listener, route and status class (1xx..5xx, or other).",
		}, []string{"listener", "route", "code_class"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "west_request_duration_seconds",
			Help:    "Time from an HTTP request's arrival at a proxy listener until its response ended.",
			Buckets: prometheus.DefBuckets,
		}, []string{"listener", "route"}),
		dialFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "west_dial_failures_total",
			Help: "Streams that could not be connected, by reason: peer_down (this west had no tunnel to a listener's peer), or why this west could not connect a peer's stream to its target (dial_failed, dial_timeout, forbidden, ...).",
		}, []string{"reason"}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "west_tunnel_handshakes_refused_total",
			Help: "Tunnel clients refused by the tunnel server's access list, tokens or certificate names.",
		}),
		tlsFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "west_tunnel_tls_handshake_failures_total",
			Help: "Connections to a wss:// tunnel server whose TLS handshake failed: a client certificate refused, a client refusing the server's, or anything else (scanners, plain HTTP).",
		}),
		shed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "west_tunnel_handshakes_shed_total",
			Help: "Connections the tunnel server closed on accept because too many were still in their handshake, from their address or in all.",
		}),
		tcpConns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "west_tcp_connections_total",
			Help: "Connections finished by tcp:// proxy listeners, by listener.",
		}, []string{"listener"}),
		udpDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "west_udp_datagrams_dropped_total",
			Help: "UDP datagrams dropped, by udp:// listener and reason; listener is empty for those of a peer's flows this west sent to their targets.",
		}, []string{"listener", "reason"}),
		certExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "west_certificate_expiry_timestamp_seconds",
			Help: "When each certificate this west presents (the wss:// tunnel server's, a tunnel client's) expires, in Unix seconds, by its config key and file: as loaded at start or at the last reload.",
		}, []string{"key", "file"}),
		requestSeries: make(map[requestKey]requestSeries),
		maxIdle:       DefaultMaxIdlePeers,
		live:          make(map[any]liveTunnel),
		series:        make(map[tunnelKey]*series),
	}
	m.reg.MustRegister(m.requests, m.duration, m.dialFailures, m.tcpConns, m.udpDropped, m.refused, m.tlsFailed, m.shed,
		m.certExpiry, tunnelCollector{m},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// TunnelUp records a tunnel that came up. id identifies it until
// TunnelDown (a session pointer, say); stats is read at every scrape, so
// that byte counts are exact.
func (m *Metrics) TunnelUp(id any, role, peer string, stats func() TunnelStats) {
	if m == nil {
		return
	}
	k := newTunnelKey(role, peer)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.live[id] = liveTunnel{key: k, stats: stats}
	sr := m.series[k]
	if sr == nil {
		sr = &series{}
		m.series[k] = sr
	}
	sr.live++
	sr.connects++
	sr.forget = false // the peer is back: its series stay
}

// TunnelDown records that the tunnel TunnelUp was told of as id has ended,
// keeping its final byte counts.
func (m *Metrics) TunnelDown(id any) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.live[id]
	if !ok {
		return
	}
	delete(m.live, id)
	st := t.stats()
	sr := m.series[t.key]
	sr.ended.BytesIn += st.BytesIn
	sr.ended.BytesOut += st.BytesOut
	sr.live--
	sr.disconnects++
	m.downs++
	sr.lastDown = m.downs
	if sr.live == 0 && sr.forget {
		delete(m.series, t.key)
	}
	m.pruneLocked()
}

// ForgetTunnel drops the series of (role, peer), as for a tunnel client a
// reload removed, once it has stopped: rather than wait to be one of the
// DefaultMaxIdlePeers idle longest, its west_tunnels_up would stay at 0,
// as for a tunnel that is down and should be up. Should a tunnel of it be
// up still (another client of that server, retiring), they go as the
// last one ends, unless one comes up before.
func (m *Metrics) ForgetTunnel(role, peer string) {
	if m == nil {
		return
	}
	k := newTunnelKey(role, peer)
	m.mu.Lock()
	defer m.mu.Unlock()
	sr := m.series[k]
	switch {
	case sr == nil:
	case sr.live > 0:
		sr.forget = true
	default:
		delete(m.series, k)
	}
}

// pruneLocked drops the series idle longest while more than maxIdle have
// no live tunnel.
func (m *Metrics) pruneLocked() {
	for {
		var oldest *tunnelKey
		var oldestDown uint64
		idle := 0
		for k, sr := range m.series {
			if sr.live > 0 {
				continue
			}
			idle++
			if oldest == nil || sr.lastDown < oldestDown {
				oldest, oldestDown = &k, sr.lastDown
			}
		}
		if idle <= m.maxIdle {
			return
		}
		delete(m.series, *oldest)
	}
}

// ObserveRequest records one finished HTTP request. route is the matched
// path prefix, "" when none matched.
func (m *Metrics) ObserveRequest(listener, route string, status int, d time.Duration) {
	if m == nil {
		return
	}
	key := requestKey{listener, route, codeClass(status)}
	m.requestMu.RLock()
	rs, ok := m.requestSeries[key]
	m.requestMu.RUnlock()
	if !ok {
		rs = requestSeries{
			count:    m.requests.WithLabelValues(listener, route, key.class),
			duration: m.duration.WithLabelValues(listener, route),
		}
		m.requestMu.Lock()
		m.requestSeries[key] = rs
		m.requestMu.Unlock()
	}
	rs.count.Inc()
	rs.duration.Observe(d.Seconds())
}

type requestKey struct{ listener, route, class string }

// requestSeries are the counter of one (listener, route, class) and the
// histogram of its (listener, route).
type requestSeries struct {
	count    prometheus.Counter
	duration prometheus.Observer
}

// ForgetListener drops the series of a listener that a reload removed,
// once its last request has ended, so that /metrics does not keep every
// listener a west ever had.
func (m *Metrics) ForgetListener(listener string) {
	if m == nil {
		return
	}
	m.forgetRequests(prometheus.Labels{"listener": listener}, func(k requestKey) bool { return k.listener == listener })
	m.tcpConns.DeleteLabelValues(listener)
	m.udpDropped.DeletePartialMatch(prometheus.Labels{"listener": listener})
}

// ForgetRoute drops the request series of one route of a listener, once
// a reload has taken the route away and the requests it was serving have
// ended.
func (m *Metrics) ForgetRoute(listener, route string) {
	if m == nil {
		return
	}
	m.forgetRequests(prometheus.Labels{"listener": listener, "route": route},
		func(k requestKey) bool { return k.listener == listener && k.route == route })
}

// forgetRequests drops the request series that labels match, and those
// that match kept in requestSeries, which would otherwise keep counting
// into series no longer registered.
func (m *Metrics) forgetRequests(labels prometheus.Labels, match func(requestKey) bool) {
	m.requestMu.Lock()
	for key := range m.requestSeries {
		if match(key) {
			delete(m.requestSeries, key)
		}
	}
	m.requestMu.Unlock()
	m.requests.DeletePartialMatch(labels)
	m.duration.DeletePartialMatch(labels)
}

// ObserveTCP records one finished connection of a tcp:// listener.
func (m *Metrics) ObserveTCP(listener string) {
	if m == nil {
		return
	}
	m.tcpConns.WithLabelValues(listener).Inc()
}

// UDPDropped records n datagrams that udp:// listener dropped for reason,
// one of a fixed set (such as "queue_full"). listener is "" for a
// datagram of a peer's flow that did not reach its target: the far side
// has no listener, and labelling it by peer would let a tunnel server's
// peers, which name themselves, grow the series without bound.
func (m *Metrics) UDPDropped(listener, reason string, n int) {
	if m == nil {
		return
	}
	m.udpDropped.WithLabelValues(listener, reason).Add(float64(n))
}

// TunnelTLSFailed records a connection to the tunnel server whose TLS
// handshake failed.
func (m *Metrics) TunnelTLSFailed() {
	if m == nil {
		return
	}
	m.tlsFailed.Inc()
}

// TunnelRefused records a tunnel handshake the server refused.
func (m *Metrics) TunnelRefused() {
	if m == nil {
		return
	}
	m.refused.Inc()
}

// TunnelShed records a connection the tunnel server closed on accept
// because too many were still in their handshake.
func (m *Metrics) TunnelShed() {
	if m == nil {
		return
	}
	m.shed.Inc()
}

// CertInForce is a certificate west presents: the config key that names
// its file, the file, and when it expires.
type CertInForce struct {
	Key, File string
	NotAfter  time.Time
}

// CertificatesInForce exports when each of certs expires, in place of
// those set before: west loads its certificates at start and at each
// reload, and warns of one near its end only then, which an alert on
// this sees coming however long west runs.
func (m *Metrics) CertificatesInForce(certs []CertInForce) {
	if m == nil {
		return
	}
	m.certMu.Lock()
	defer m.certMu.Unlock()
	// The new first, then the old that are gone: a scrape between a
	// Reset and the new values would see none, and mark each series
	// stale, which ends an alert on it for the next scrape to raise
	// again.
	inForce := make(map[[2]string]bool, len(certs))
	for _, c := range certs {
		inForce[[2]string{c.Key, c.File}] = true
		m.certExpiry.WithLabelValues(c.Key, c.File).Set(float64(c.NotAfter.Unix()))
	}
	for k := range m.certs {
		if !inForce[k] {
			m.certExpiry.DeleteLabelValues(k[0], k[1])
		}
	}
	m.certs = inForce
}

// WatchHealth exports problems, read at each scrape, as the gauge
// west_health_problems: the reasons /healthz answers 503, 0 when healthy,
// so that an alert needs no probe of /healthz of its own.
func (m *Metrics) WatchHealth(problems func() int) {
	if m == nil {
		return
	}
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "west_health_problems",
		Help: "Reasons /healthz answers 503 now, one per line of its body (a tunnel that should be up and is not, a listener not listening, a drain to stop); 0 when healthy.",
	}, func() float64 { return float64(problems()) }))
}

// DialFailed records a stream whose target this west could not connect
// to; reason is short and from a fixed set (such as "dial_failed").
func (m *Metrics) DialFailed(reason string) {
	if m == nil {
		return
	}
	m.dialFailures.WithLabelValues(reason).Inc()
}

// codeClass is "2xx" for 200..299 and so on; 499 (the client went away
// first) is "4xx".
func codeClass(status int) string {
	if status < 100 || status > 599 {
		return "other"
	}
	return codeClasses[status/100-1]
}

// codeClasses are the status classes' labels, made once: codeClass runs
// for every request.
var codeClasses = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

var (
	tunnelsUpDesc = prometheus.NewDesc("west_tunnels_up",
		"Tunnels up now, by role (server: a peer connected to us; client: we dialled) and peer.",
		[]string{"role", "peer"}, nil)
	streamsOpenDesc = prometheus.NewDesc("west_streams_open",
		"Streams open now through the tunnels, both directions, by role and peer.",
		[]string{"role", "peer"}, nil)
	connectsDesc = prometheus.NewDesc("west_tunnel_connects_total",
		"Tunnels established, by role and peer.",
		[]string{"role", "peer"}, nil)
	disconnectsDesc = prometheus.NewDesc("west_tunnel_disconnects_total",
		"Tunnels ended, by role and peer.",
		[]string{"role", "peer"}, nil)
	bytesDesc = prometheus.NewDesc("west_tunnel_bytes_total",
		"Payload bytes through the tunnels, by role, peer and direction (in: received from the peer; out: sent to it).",
		[]string{"role", "peer", "direction"}, nil)
)

// tunnelCollector reports every tunnel metric from one snapshot taken at
// scrape time, so that they agree with each other: the gauges and byte
// counts from the live tunnels, plus what ended tunnels carried.
type tunnelCollector struct{ m *Metrics }

func (c tunnelCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- tunnelsUpDesc
	ch <- streamsOpenDesc
	ch <- connectsDesc
	ch <- disconnectsDesc
	ch <- bytesDesc
}

func (c tunnelCollector) Collect(ch chan<- prometheus.Metric) {
	type sum struct {
		up, connects, disconnects int
		TunnelStats
	}
	c.m.mu.Lock()
	sums := make(map[tunnelKey]*sum, len(c.m.series))
	for k, sr := range c.m.series {
		sums[k] = &sum{
			connects: sr.connects, disconnects: sr.disconnects,
			TunnelStats: TunnelStats{BytesIn: sr.ended.BytesIn, BytesOut: sr.ended.BytesOut},
		}
	}
	for _, t := range c.m.live {
		s := t.stats()
		a := sums[t.key]
		a.up++
		a.BytesIn += s.BytesIn
		a.BytesOut += s.BytesOut
		a.StreamsOpen += s.StreamsOpen
	}
	c.m.mu.Unlock()
	for k, s := range sums {
		ch <- prometheus.MustNewConstMetric(tunnelsUpDesc, prometheus.GaugeValue, float64(s.up), k.role, k.peer)
		ch <- prometheus.MustNewConstMetric(streamsOpenDesc, prometheus.GaugeValue, float64(s.StreamsOpen), k.role, k.peer)
		ch <- prometheus.MustNewConstMetric(connectsDesc, prometheus.CounterValue, float64(s.connects), k.role, k.peer)
		ch <- prometheus.MustNewConstMetric(disconnectsDesc, prometheus.CounterValue, float64(s.disconnects), k.role, k.peer)
		ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.CounterValue, float64(s.BytesIn), k.role, k.peer, "in")
		ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.CounterValue, float64(s.BytesOut), k.role, k.peer, "out")
	}
}
