package node

import (
	"net/http"
	"testing"
)

// TestControlPortOptionsStar: "OPTIONS *" is a request like any other to
// the control port: outside control_ca it gets 403, as every path does,
// and inside it 405, as every method but GET, HEAD and the reload's POST
// does. net/http's server answered it 200 itself, before the access list.
func TestControlPortOptionsStar(t *testing.T) {
	for _, tc := range []struct {
		acl  string
		want int
	}{
		{`["10.0.0.0/8"]`, http.StatusForbidden},
		{`["127.0.0.1"]`, http.StatusMethodNotAllowed},
	} {
		n, _ := runNode(t, `{"west": {"nm": "x", "cp": "127.0.0.1:0", "control_ca": `+tc.acl+`}}`, Options{})
		if code, _ := rawRequest(t, n.Addrs().Control, http.MethodOptions, "*"); code != tc.want {
			t.Errorf("control_ca %s: OPTIONS *: %d, want %d", tc.acl, code, tc.want)
		}
	}
}

// TestListenerOptionsStar: on an http:// listener too, "OPTIONS *" is
// west's to answer, and no route takes "*", where net/http's server
// answered 200 for a backend that was never asked.
func TestListenerOptionsStar(t *testing.T) {
	addr := guardedAdmin(t)
	if code, seen := rawRequest(t, addr, http.MethodOptions, "*"); code != http.StatusNotFound {
		t.Fatalf("OPTIONS * on a listener: %d (backend saw %q), want 404", code, seen)
	}
}
