package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/west-tunnel/west/internal/testutil"
)

// lineBackend answers every request with 200 and notes its request line.
func lineBackend(t *testing.T) (addr string, last func() string) {
	var mu sync.Mutex
	var line string
	addr = rawHTTPBackend(t, func(c net.Conn, req *http.Request) bool {
		mu.Lock()
		line = req.Method + " " + req.RequestURI
		mu.Unlock()
		io.Copy(io.Discard, req.Body)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		return true
	})
	return addr, func() string {
		mu.Lock()
		defer mu.Unlock()
		return line
	}
}

// TestRouteACLPathReadings: backends differ in how they read a path, and
// a route's ca must hold for each: servlet containers drop path
// parameters ("/admin;x", "/x/..;/admin" are their /admin), IIS reads "\"
// as "/" and "/ADMIN" as "/admin", Apache or Tomcat may keep "%2F" in a
// segment's name, and WSGI servers decode a path but keep its dot
// segments ("/%61dmin/../x" is Flask's and Django's "/admin/../x"), and
// Windows drops a segment's trailing dots and spaces ("/admin./x"), and
// some backends decode a path twice ("/%2561dmin"). On
// the loop (GET) and net/http (POST) alike; ";" stays usable elsewhere.
func TestRouteACLPathReadings(t *testing.T) {
	be, last := lineBackend(t)
	refuse := func(a netip.Addr) bool { return !a.IsLoopback() }
	h := NewHTTP(HTTPOptions{Dialer: tunnelPair(t), Routes: []Route{
		{Path: "/", Target: mustURL(t, "http://"+be+"/")},
		{Path: "/admin", Target: mustURL(t, "http://"+be+"/admin"), Allow: refuse},
		{Path: "/app", Target: mustURL(t, "http://"+be+"/v1")},
		{Path: "/app/admin", Target: mustURL(t, "http://"+be+"/v1/admin"), Allow: refuse},
	}})
	_, addr := startServer(t, h)
	send := func(method, target string) string {
		c := testutil.DialClient(t, addr)
		defer c.Close()
		req := method + " " + target + " HTTP/1.1\r\nHost: h\r\nConnection: close\r\n"
		if method == http.MethodPost {
			req += "Content-Length: 2\r\n\r\nhi"
		} else {
			req += "\r\n"
		}
		io.WriteString(c, req)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%s %s: %v", method, target, err)
		}
		resp.Body.Close()
		return resp.Status
	}
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		for _, target := range []string{
			"/admin;x", "/admin;jsessionid=1/x", "/admin;/", "//admin;x", "/%61dmin;x", "/;x/admin",
			"/.;/admin", "/x/..;/admin", "/x/..;x=1/admin", "/%2e%2e;/admin", "/x/%2E%2E;/admin",
			"http://h/x/..;/admin", "/app/..;/v1/admin/x",
			`/x\..\admin`, "/x%5c..%5cadmin", "/x/..%5Cadmin", `/admin\x`, "/x;y%5c..%5cadmin",
			"/x/../admin/y%2F..%2F../..",
			"/%61dmin/../x", "/admin%2F..%2Fx", "/%61dmin/%2e%2e/x", "/admin%5C..%5Cx",
			"/ADMIN", "/Admin/x", "/%41dmin", "/x/..%5CADMIN", "/app/../V1/ADMIN", "/APP/ADMIN;x",
			"/admin./x", "/admin%20/x", "/admin.", "/admin...", "/ADMIN.%20/x", "/admin%2E", "/admin.%20.",
			"/x/..%20/admin", "/admin.;x/y", `/x\..\admin.`, "/x%5C..%5Cadmin%20", "/app/admin./x",
			"/app/..%20/v1/admin/x", "/x/.../../admin",
			"/%2561dmin", "/%2561dmin/x", "/x/%252e%252e/admin", "/x/%252E%252E%252Fadmin", "/%25%36%31dmin",
			"/x%255c..%255cadmin", "/%2541DMIN", "/%2561dmin%252e", "/app/%252e%252e/v1/admin/x",
			"/%2561dmin;x/y", "/%2561dmin/%25zz", "/admin%20%252Fx", "/admin%20%255Cx", "/x/..%20%252Fadmin",
		} {
			if got := send(method, target); !strings.HasPrefix(got, "403") {
				t.Errorf("%s %s: %s (backend got %q), want 403", method, target, got, last())
			}
		}
		for _, target := range []string{"/docs;v=1", "/a;b/c", "/x/..;/y", "/x%5Cy", "/x%2Fy", "/app;v=1/x",
			"/admin.html", "/administrator", "/admin.html.", "/x./y", "/x%20/y", "/adminx.", "/admin%20x", "/.well-known/x",
			"/100%25", "/x/%2561", "/%2525admin", "/x%25zz", "/%2561dministrator"} {
			if got := send(method, target); !strings.HasPrefix(got, "200") {
				t.Errorf("%s %s: %s, want 200", method, target, got)
			}
		}
	}
	// The common path is read one way, with no allocation.
	rt, client := h.match("/pub/x"), netip.MustParseAddr("127.0.0.1")
	if n := testing.AllocsPerRun(1000, func() { h.allows(rt, "/pub/x", client) }); n != 0 {
		t.Errorf("allows allocates %v times for a plain path", n)
	}
}

// TestRouteACLCaseSpeltRoutes: routes that differ only in case tell that
// their backend reads case, so the route spelt as sent decides; a path
// spelt as neither is refused if either refuses, as a backend that folds
// case would read it as the guarded one.
func TestRouteACLCaseSpeltRoutes(t *testing.T) {
	be, last := lineBackend(t)
	for _, order := range [][2]string{{"/Docs", "/docs"}, {"/docs", "/Docs"}} {
		routes := caseTwins(t, be, order, Route{Path: "/", Target: mustURL(t, "http://"+be+"/")})
		h := NewHTTP(HTTPOptions{Dialer: tunnelPair(t), Routes: routes})
		_, addr := startServer(t, h)
		checkStatuses(t, addr, fmt.Sprintf("routes %v", order), last, map[string]string{
			"/Docs/x": "200", "/Docs": "200", "/docs/x": "403", "/DOCS/x": "403", "/dOcs": "403", "/x/../DOCS": "403",
		})
	}
}

// TestRouteACLCaseSpeltRoutesTwoBackends: routes spelt in two cases to
// two backends tell nothing of how the guarded one's backend reads case.
// A path spelt as the open route's, sent through a wider route to the
// guarded route's backend, is refused: a backend that folds case reads
// "/%44ocs/x" as /docs/x. Through the open route itself, it is served.
func TestRouteACLCaseSpeltRoutesTwoBackends(t *testing.T) {
	guardedBE, last := lineBackend(t)
	openBE, _ := lineBackend(t)
	refuse := func(a netip.Addr) bool { return !a.IsLoopback() }
	for _, order := range [][2]string{{"/Docs", "/docs"}, {"/docs", "/Docs"}} {
		routes := []Route{{Path: "/", Target: mustURL(t, "http://"+guardedBE+"/")}}
		for _, p := range order {
			rt := Route{Path: p, Target: mustURL(t, "http://"+openBE+p)}
			if p == "/docs" {
				rt = Route{Path: p, Target: mustURL(t, "http://"+guardedBE+p), Allow: refuse}
			}
			routes = append(routes, rt)
		}
		h := NewHTTP(HTTPOptions{Dialer: tunnelPair(t), Routes: routes})
		_, addr := startServer(t, h)
		checkStatuses(t, addr, fmt.Sprintf("routes %v", order), last, map[string]string{
			"/%44ocs/x": "403", "//Docs/x": "403", "/Docs;a/x": "403", "/DOCS/x": "403",
			"/Docs/x": "200", "/Docs": "200", "/Docs/%78": "200", "/other": "200",
		})
	}
}

// TestRouteACLCaseSpeltOutgoingPaths: outgoing paths to one backend spelt
// in two cases tell that it reads case, whatever the routes' order: a
// path with dot segments sent as the open one's is served, and one sent
// as neither is refused, as refusedFold reads the table's paths.
func TestRouteACLCaseSpeltOutgoingPaths(t *testing.T) {
	be, last := lineBackend(t)
	for _, order := range [][2]string{{"/Docs", "/docs"}, {"/docs", "/Docs"}} {
		routes := caseTwins(t, be, order,
			Route{Path: "/", Target: mustURL(t, "http://"+be+"/")},
			Route{Path: "/app", Target: mustURL(t, "http://"+be+"/")})
		h := NewHTTP(HTTPOptions{Dialer: tunnelPair(t), Routes: routes})
		_, addr := startServer(t, h)
		checkStatuses(t, addr, fmt.Sprintf("routes %v", order), last, map[string]string{
			"/Docs/./x": "200", "/Docs/y/../x": "200", "/x/../Docs/x": "200", "/app/./Docs/x": "200",
			"/app/./DOCS/x": "403", "/app/./docs/x": "403", "/x/../DOCS/x": "403",
		})
	}
}

// TestRouteACLDirRoute: a guarded route written with a final slash,
// "/docs/", does not match "/docs", which an open "/" then serves; many
// backends serve "/docs" as "/docs/", so it is refused too, unless a
// route of its own routes it apart.
func TestRouteACLDirRoute(t *testing.T) {
	be, last := lineBackend(t)
	refuse := func(a netip.Addr) bool { return !a.IsLoopback() }
	for _, apart := range []bool{false, true} {
		routes := []Route{
			{Path: "/", Target: mustURL(t, "http://"+be+"/")},
			{Path: "/docs/", Target: mustURL(t, "http://"+be+"/docs/"), Allow: refuse},
		}
		want := map[string]string{"/docs": "403", "/DOCS": "403", "/%64ocs": "403", "/x/../docs": "403",
			"/docs/x": "403", "/docsx": "200", "/doc": "200"}
		if apart {
			routes = append(routes, Route{Path: "/docs", Target: mustURL(t, "http://"+be+"/about-docs")})
			want["/docs"] = "200"
		}
		h := NewHTTP(HTTPOptions{Dialer: tunnelPair(t), Routes: routes})
		_, addr := startServer(t, h)
		checkStatuses(t, addr, fmt.Sprintf("route /docs apart %v", apart), last, want)
	}
}

// checkStatuses sends GET for each target of want, as written, to addr
// and checks the status each gets; last tells what a backend got.
func checkStatuses(t *testing.T, addr, label string, last func() string, want map[string]string) {
	t.Helper()
	for target, code := range want {
		if got := getStatus(t, addr, target); !strings.HasPrefix(got, code) {
			t.Errorf("%s: GET %s: %s (backend got %q), want %s", label, target, got, last(), code)
		}
	}
}

// caseTwins is routes and then, in order, "/Docs" to be's /Docs, open
// to all, and "/docs" to be's /docs, refusing loopback clients.
func caseTwins(t *testing.T, be string, order [2]string, routes ...Route) []Route {
	for _, p := range order {
		rt := Route{Path: p, Target: mustURL(t, "http://"+be+p)}
		if p == "/docs" {
			rt.Allow = func(a netip.Addr) bool { return !a.IsLoopback() }
		}
		routes = append(routes, rt)
	}
	return routes
}

// TestNULPathRefused: a backend written in C ends a path at a decoded
// NUL ("/admin%00.png" is its /admin), so a path with one, decoded once
// or twice, is answered 400 on every listener, guarded or not, by the
// loop (GET) and net/http (POST) alike; "%" and other escapes go on.
func TestNULPathRefused(t *testing.T) {
	be, last := lineBackend(t)
	for _, guarded := range []bool{false, true} {
		addr := openOrGuarded(t, be, guarded)
		label := fmt.Sprintf("guarded %v", guarded)
		want := map[string]string{
			"/admin%00.png": "400", "/admin%00/x": "400", "/x%00": "400", "/%00": "400",
			"/x/..%00/admin": "400", "/admin%2500.png": "400", "/x/%25%30%30": "400",
			"/x%01": "200", "/100%25": "200", "/x/%2541": "200", "/x/%25100": "200",
		}
		checkStatuses(t, addr, label, last, want)
		for target, code := range want {
			if got := postStatus(t, addr, target); !strings.HasPrefix(got, code) {
				t.Errorf("%s: POST %s: %s (backend got %q), want %s", label, target, got, last(), code)
			}
		}
	}
}

// TestLongPathOnGuardedListener: a listener with a route's access list
// reads a path every way a backend may, at a cost that grows with its
// length, so it answers a path over maxGuardedPath 414, as nginx and
// Apache do by default; one without reads none and passes it on.
func TestLongPathOnGuardedListener(t *testing.T) {
	be, last := lineBackend(t)
	atBound := "/x/" + strings.Repeat("a;%5C.", maxGuardedPath/8) // calls for readings
	atBound += strings.Repeat("b", maxGuardedPath-len(atBound))
	over := atBound + "c"
	for _, guarded := range []bool{false, true} {
		addr := openOrGuarded(t, be, guarded)
		want := map[string]string{atBound: "200", over: "200"}
		if guarded {
			want[over] = "414"
		}
		for target, code := range want {
			label := fmt.Sprintf("guarded %v, a path of %d bytes", guarded, len(target))
			if got := getStatus(t, addr, target); !strings.HasPrefix(got, code) {
				t.Errorf("%s: GET: %s, want %s", label, got, code)
			}
			if got := postStatus(t, addr, target); !strings.HasPrefix(got, code) {
				t.Errorf("%s: POST: %s, want %s", label, got, code)
			}
			if code == "200" && !strings.HasSuffix(last(), " "+target) {
				t.Errorf("%s: the backend got %.40q..., not the path", label, last())
			}
		}
	}
}

// openOrGuarded starts a listener whose route "/" goes to be, open to
// all, with, if guarded, a route "/admin" that refuses loopback clients;
// it returns the listener's address.
func openOrGuarded(t *testing.T, be string, guarded bool) string {
	routes := []Route{{Path: "/", Target: mustURL(t, "http://"+be+"/")}}
	if guarded {
		refuse := func(a netip.Addr) bool { return !a.IsLoopback() }
		routes = append(routes, Route{Path: "/admin", Target: mustURL(t, "http://"+be+"/admin"), Allow: refuse})
	}
	_, addr := startServer(t, NewHTTP(HTTPOptions{Dialer: tunnelPair(t), Routes: routes}))
	return addr
}

// getStatus sends a GET for target, as written, to addr and returns the
// status it gets.
func getStatus(t *testing.T, addr, target string) string {
	return sendStatus(t, addr, "GET "+target+" HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
}

// postStatus sends a POST for target, as written, to addr and returns
// the status it gets.
func postStatus(t *testing.T, addr, target string) string {
	return sendStatus(t, addr, "POST "+target+" HTTP/1.1\r\nHost: h\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi")
}

// sendStatus sends request to addr and returns the status it gets.
func sendStatus(t *testing.T, addr, request string) string {
	t.Helper()
	c := testutil.DialClient(t, addr)
	defer c.Close()
	io.WriteString(c, request)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%.60q: %v", request, err)
	}
	resp.Body.Close()
	return resp.Status
}

// BenchmarkAllowsEveryReading: a path that calls for every reading is
// read in each of their combinations (32 with five readings), short and
// as long as a listener reads (maxGuardedPath; it answers a longer one
// 414), through a route that renames its prefix (/app) and one that does
// not (/), for a client the guarded routes refuse (loopback), whom no
// reading of these paths sends to them, the worst case, and for one every
// route allows.
func BenchmarkAllowsEveryReading(b *testing.B) {
	h := readingRoutes()
	for _, every := range []string{"/app/x;a/y.%5Cz%2F%2561/..%20/", "/pub/x;a/y.%5Cz%2F%2561/..%20/"} {
		if w := readingsOf(every); w != params|backslash|rawSlash|trailing|double {
			b.Fatalf("readingsOf(%q) = %b, want every reading", every, w)
		}
		for _, size := range []int{len(every), maxGuardedPath} {
			path := every + strings.Repeat("a/", (size-len(every))/2)
			rt := h.match(path)
			for _, client := range []string{"127.0.0.1", "192.0.2.1"} {
				addr := netip.MustParseAddr(client)
				if !h.allows(rt, path, addr) {
					b.Fatalf("%s refused %.40s", client, path)
				}
				b.Run(fmt.Sprintf("%s/%dB/%s", every[1:4], len(path), client), func(b *testing.B) {
					for b.Loop() {
						h.allows(rt, path, addr)
					}
				})
			}
		}
	}
}

// readingRoutes is a table of routes, some guarded against loopback
// clients, for the access check alone: its backend is never dialled.
func readingRoutes() *HTTP {
	refuse := func(a netip.Addr) bool { return !a.IsLoopback() }
	target := func(p string) *url.URL { u, _ := url.Parse("http://be:80" + p); return u }
	return NewHTTP(HTTPOptions{Routes: []Route{
		{Path: "/", Target: target("/")},
		{Path: "/admin", Target: target("/admin"), Allow: refuse},
		{Path: "/app", Target: target("/v1")},
		{Path: "/app/admin", Target: target("/v1/admin"), Allow: refuse},
		{Path: "/docs/", Target: target("/docs/"), Allow: refuse},
		{Path: "/static", Target: target("/static")},
	}})
}

// TestRouteACLSentTies: two routes that send to one outgoing path, one
// open and one guarded, tell nothing of which the backend serves, in
// either order: a request with dot segments through the open one is
// judged by it, as the same without them is served, and one through a
// third route that reaches that path is refused, as the guarded route
// would refuse it.
func TestRouteACLSentTies(t *testing.T) {
	be, last := lineBackend(t)
	refuse := func(a netip.Addr) bool { return !a.IsLoopback() }
	open := Route{Path: "/a/", Target: mustURL(t, "http://"+be+"/x/")}
	guarded := Route{Path: "/b/", Target: mustURL(t, "http://"+be+"/x/"), Allow: refuse}
	for _, order := range [][2]Route{{open, guarded}, {guarded, open}} {
		h := NewHTTP(HTTPOptions{Dialer: tunnelPair(t), Routes: []Route{
			{Path: "/", Target: mustURL(t, "http://"+be+"/")}, order[0], order[1],
		}})
		_, addr := startServer(t, h)
		checkStatuses(t, addr, fmt.Sprintf("routes %s, %s", order[0].Path, order[1].Path), last, map[string]string{
			"/a/y": "200", "/a/./y": "200", "/a/z/../y": "200", "/a/%2e/y": "200",
			"/b/y": "403", "/b/./y": "403",
			"/./x/y": "403", "/z/../x/y": "403", "/x/./y": "403",
		})
	}
}
