package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/west-tunnel/west/internal/acl"
	"github.com/west-tunnel/west/internal/config"
)

// Source provides the live state. The node implements it; tests use fakes.
type Source interface {
	State() State
}

// Options configures the control port's handler.
type Options struct {
	// Config returns the configuration in force, rendered by GET / in the
	// seed's four sections with the live fields of Source added. Required.
	Config func() *config.Config
	// Source provides the live state. Required.
	Source Source
	// Metrics is served by GET /metrics; nil means /metrics answers 404.
	Metrics *Metrics
	// Allow decides whether a client at addr may read the control port
	// (West.ControlACL); others get 403. Nil allows everyone.
	Allow func(addr netip.Addr) bool
	// Reload, if set, is called by POST /api/reload: it re-reads the
	// configuration and applies it, or returns why it did not. An error
	// with an Applied() bool method that says true was applied in part.
	Reload func() error
	// Logger receives refusals at debug level; nil discards them.
	Logger *slog.Logger
}

// Handler is the control port's http.Handler: GET / (text), GET
// /api/state (JSON), GET /metrics (Prometheus) and GET /healthz. HEAD works
// wherever GET does; other methods get 405.
type Handler struct {
	opts Options
	log  *slog.Logger
	mux  *http.ServeMux
}

var _ http.Handler = (*Handler)(nil)

// New returns the control port's handler.
func New(opts Options) *Handler {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Handler{opts: opts, log: log, mux: http.NewServeMux()}
	// A "GET" pattern also matches HEAD.
	h.mux.HandleFunc("GET /{$}", h.serveText)
	h.mux.HandleFunc("GET /api/state", h.serveJSON)
	h.mux.HandleFunc("GET /healthz", h.serveHealth)
	if opts.Metrics != nil {
		h.mux.Handle("GET /metrics", opts.Metrics.Handler())
	}
	if opts.Reload != nil {
		h.mux.HandleFunc("POST /api/reload", h.serveReload)
	}
	return h
}

// crossOrigin refuses browser requests sent from another site.
var crossOrigin = http.NewCrossOriginProtection()

// serveReload applies the configuration file anew. A rejected one leaves
// the running configuration in force; the answer says why.
func (h *Handler) serveReload(w http.ResponseWriter, r *http.Request) {
	// A web page in a browser on a host inside control_ca could otherwise
	// post here; curl and scripts send neither Sec-Fetch-Site nor Origin.
	if err := crossOrigin.Check(r); err != nil {
		h.log.Warn("reload through the control port refused", "remote", r.RemoteAddr, "err", err)
		http.Error(w, "west: "+err.Error(), http.StatusForbidden)
		return
	}
	// A page that rebinds its own name to this port is same-origin to
	// the browser: its Host and Origin agree. Browsers send Origin or
	// Sec-Fetch-Site with a POST; from them, take only an address (or
	// localhost) for the host, which a page of another site cannot be.
	if (r.Header.Get("Origin") != "" || r.Header.Get("Sec-Fetch-Site") != "") && !addressHost(r.Host) {
		h.log.Warn("reload through the control port refused", "remote", r.RemoteAddr, "host", r.Host)
		http.Error(w, "west: a browser may reload only through the control port's address, not a name", http.StatusForbidden)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err := h.opts.Reload(); err != nil {
		var partial interface{ Applied() bool }
		if errors.As(err, &partial) && partial.Applied() {
			// Applied but for some part: not a refusal.
			h.log.Error("reload through the control port applied in part", "err", err)
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprintf(w, "west: %v\n", err)
			return
		}
		h.log.Warn("reload through the control port rejected", "err", err)
		w.WriteHeader(http.StatusUnprocessableEntity)
		fmt.Fprintf(w, "west: reload rejected, the running configuration stays: %v\n", err)
		return
	}
	w.Write([]byte("reloaded\n"))
}

// addressHost reports whether host (a Host header) is an IP address or
// localhost, with or without a port.
func addressHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	_, err := netip.ParseAddr(host)
	return err == nil || strings.EqualFold(host, "localhost")
}

// ServeHTTP checks the access list and the method, then serves.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.opts.Allow != nil && !h.opts.Allow(acl.PeerAddr(r.RemoteAddr)) {
		h.log.Debug("control port: client not in the access list", "remote", r.RemoteAddr, "path", r.URL.Path)
		http.Error(w, "west: forbidden", http.StatusForbidden)
		return
	}
	// A page that rebinds its own name to this port reads it as its own
	// origin. Browsers say where a request comes from: one a page made
	// (not a typed or bookmarked address, "none") may read only through
	// an address or localhost, which a page of another site cannot have.
	// curl and scrapers send no Sec-Fetch-Site, and read by any name.
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "none" && !addressHost(r.Host) {
		h.log.Warn("control port: a browser page's request by name refused", "remote", r.RemoteAddr, "host", r.Host, "path", r.URL.Path)
		http.Error(w, "west: a browser page may use the control port only through its address, not a name", http.StatusForbidden)
		return
	}
	reload := r.URL.Path == "/api/reload" && h.opts.Reload != nil
	switch {
	case reload && r.Method != http.MethodPost:
		w.Header().Set("Allow", "POST")
		http.Error(w, "west: /api/reload takes POST", http.StatusMethodNotAllowed)
		return
	case !reload && r.Method != http.MethodGet && r.Method != http.MethodHead:
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "west: the control port is read-only but for POST /api/reload: GET or HEAD", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	h.mux.ServeHTTP(w, r)
}

func (h *Handler) serveText(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte(Render(h.opts.Config(), h.opts.Source.State())))
}

func (h *Handler) serveJSON(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(normalize(h.opts.Source.State()))
}

func (h *Handler) serveHealth(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	problems := h.opts.Source.State().Problems()
	if len(problems) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(strings.Join(problems, "\n") + "\n"))
		return
	}
	w.Write([]byte("ok\n"))
}

// normalize makes empty lists [] rather than null in JSON.
func normalize(s State) State {
	if s.Clients == nil {
		s.Clients = []Client{}
	}
	if s.Proxies == nil {
		s.Proxies = []Proxy{}
	}
	if s.Server != nil && s.Server.Peers == nil {
		srv := *s.Server
		srv.Peers = []Peer{}
		s.Server = &srv
	}
	return s
}
