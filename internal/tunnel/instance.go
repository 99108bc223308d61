package tunnel

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
)

// InstanceHeader carries, in a client's handshake, the ID its west gives
// all its tunnel clients and the client's own, as "west/client". A west
// that reaches one server by two URLs (127.0.0.1 and localhost) has two
// clients under one name; with the IDs the server keeps both tunnels,
// where without them each would replace the other. The same client
// coming back, or another west under the name, still replaces the old one.
const InstanceHeader = "West-Instance"

// AttemptHeader carries, beside InstanceHeader, the number of the
// client's connection attempt, counted from 1 over its life. A server
// stopped or paused (SIGSTOP, a VM suspended) keeps the handshakes the
// client sent meanwhile in its backlog, each given up on in turn, and
// reads them all once it runs again; without the count, those it reads
// after the client's latest attempt took the name from it, and the client
// took that for another client under its name.
const AttemptHeader = "West-Attempt"

// HopsHeader, sent as "1" in a client's handshake, says that the client
// reads stream header version 2 (wire.VersionHops), with its hop count; a
// server that reads it too answers with the same response header. Each
// side then sends that version to the other, and otherwise version 1: a
// west that predates it refuses any other version as a bad header, and
// ignores the HTTP header.
const HopsHeader = "West-Hops"

// announcesHops reports whether h, a handshake's request or response
// headers, has HopsHeader as a west that reads version 2 sends it.
func announcesHops(h http.Header) bool { return h.Get(HopsHeader) == "1" }

// maxSessionsPerName bounds the tunnels one west may hold under one
// name; beyond it the oldest is replaced.
const maxSessionsPerName = 8

// NewID returns a random ID for InstanceHeader: 64 bits in hex.
func NewID() string {
	var b [8]byte
	rand.Read(b[:]) // never fails (crypto/rand's promise)
	return hex.EncodeToString(b[:])
}

// instance is a client's InstanceHeader, parsed, and its AttemptHeader;
// zero without them.
type instance struct {
	west, client string
	attempt      uint64
}

// parseInstance parses an InstanceHeader value: two IDs of 1 to 64
// letters, digits, '-' or '_', joined by '/'. An empty value is no ID.
func parseInstance(v string) (instance, error) {
	if v == "" {
		return instance{}, nil
	}
	west, client, ok := strings.Cut(v, "/")
	if !ok || !validID(west) || !validID(client) {
		return instance{}, fmt.Errorf("%w: a %s header of %q; want two IDs of 1 to 64 letters, digits, '-' or '_', as west/client",
			errHandshake, InstanceHeader, truncate(v, 80))
	}
	return instance{west: west, client: client}, nil
}

func validID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// sibling reports whether a and b are two tunnel clients of one west.
func (a instance) sibling(b instance) bool {
	return a.west != "" && a.west == b.west && a.client != b.client
}

// outlivedBy reports whether b is a later attempt of the client that
// sent a: a handshake that client has given up on.
func (a instance) outlivedBy(b instance) bool {
	return a.sameClient(b) && a.attempt < b.attempt
}

// sameClient reports whether a and b are handshakes of one tunnel client.
func (a instance) sameClient(b instance) bool {
	return a.client != "" && a.west == b.west && a.client == b.client
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
