package config

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

// TestInvalidUTF8Refused: a file saved in another encoding than UTF-8
// (Latin-1, say) is refused where its first bad byte is, rather than
// having that byte silently turned into U+FFFD in a name that peers then
// never match.
func TestInvalidUTF8Refused(t *testing.T) {
	_, err := Parse([]byte("{\"west\": {\n  \"nm\": \"caf\xe9\"}}"))
	var ce *Error
	if !errors.As(err, &ce) || ce.Line != 2 || ce.Column != 13 || !strings.Contains(ce.Msg, "UTF-8") {
		t.Fatalf("Parse of a Latin-1 name: %v; want an error at line 2, column 13 about UTF-8", err)
	}
}

// TestTokenNamesAreNames: a tokens key is a peer name; one that no "nm"
// can be (empty, or with white space around it) is refused at load
// rather than refusing the peer at every handshake for a "wrong token".
func TestTokenNamesAreNames(t *testing.T) {
	for _, key := range []string{"", "L ", " L", "L\t"} {
		js := `{"west": {"nm": "n"}, "wsts": {"sp": "ws://127.0.0.1:0", "tokens": {` + strconv.Quote(key) + `: "env:T"}}}`
		_, err := Parse([]byte(js))
		want := `wsts.tokens[` + strconv.Quote(key) + `]: want a`
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("tokens key %q: %v; want an error starting %q", key, err, want)
		}
	}
}

// TestLongNamesRefused: a name longer than a tunnel server accepts as an
// Origin is refused at load, where it is named, not at every handshake.
func TestLongNamesRefused(t *testing.T) {
	long := strings.Repeat("n", 257)
	for _, c := range []struct{ js, path string }{
		{`{"west": {"nm": "` + long + `"}}`, "west.nm"},
		{`{"west": {"nm": "n"}, "wstc": {"ws://127.0.0.1:1": {"nm": "` + long + `"}}}`, `wstc["ws://127.0.0.1:1"].nm`},
		{`{"west": {"nm": "n"}, "wsts": {"sp": "ws://127.0.0.1:0", "tokens": {"` + long + `": "env:T"}}}`, "wsts.tokens"},
	} {
		_, err := Parse([]byte(c.js))
		if err == nil || !strings.Contains(err.Error(), c.path) || !strings.Contains(err.Error(), "at most 256 bytes, got 257") {
			t.Errorf("a name of 257 bytes at %s: %v; want an error there saying at most 256", c.path, err)
		}
	}
	if _, err := Parse([]byte(`{"west": {"nm": "` + long[:256] + `"}}`)); err != nil {
		t.Errorf("a name of 256 bytes: %v", err)
	}
}
