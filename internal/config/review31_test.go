package config

import (
	"errors"
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
