package proxy

import (
	"net/netip"
	"strings"
	"testing"
)

// FuzzReadingsOf: readingsOf picks, from a path's spelling, the readings
// the access check tries, so that most paths cost one. Every reading of a
// path that would refuse a client must be among them: here each path is
// also read every way (but twice-decoded only with a "%25" in it, which
// alone calls for that reading), and any refusal those find, refusedBy
// must find too.
func FuzzReadingsOf(f *testing.F) {
	for _, s := range []string{
		"/admin", "/x/../admin", "/admin;x", "/x\\..\\admin", "/x/..%2Fadmin", "/x%5C..%5Cadmin",
		"/admin./x", "/admin%20/x", "/%2561dmin", "/x/%252e%252e/admin", "/admin%20%252Fx",
		"/app/./admin", "/app/..;/v1/admin", "/DOCS", "/docs.", "/x/..%2e/docs/", "/%64ocs/",
	} {
		f.Add(s)
	}
	h := readingRoutes()
	client := netip.MustParseAddr("127.0.0.1")
	f.Fuzz(func(t *testing.T, path string) {
		if !strings.HasPrefix(path, "/") || len(path) > 256 {
			return
		}
		rt := h.match(path)
		if rt == nil || rt.Allow != nil {
			return // refused or served on its route alone
		}
		every := params | backslash | rawSlash | trailing
		if strings.Contains(path, "%25") {
			every |= double
		}
		for r := range every + 1 {
			if r&^every != 0 {
				continue
			}
			if by := h.refusedRead(rt, path, client, r); by != nil && h.refusedBy(rt, path, client) == nil {
				t.Fatalf("%q, read as reading %05b does, reaches %s, whose ca refuses the client; readingsOf gave %05b and the path was served",
					path, r, by.Path, readingsOf(path))
			}
		}
	})
}

// readingsOf returns the readings that may read escaped otherwise than
// cleanPath does, as refusedBy finds them (triggers, then those of the
// first decoding).
func readingsOf(escaped string) reading {
	return decodedTriggers(escaped, triggers(escaped))
}
