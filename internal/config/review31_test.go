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
