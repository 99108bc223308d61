package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"unicode/utf8"
)

// maxDepth bounds nesting. The format needs five levels; the bound keeps a
// hostile file from recursing deeply.
const maxDepth = 32

// kind is the JSON type of a value.
type kind int

const (
	kindObject kind = iota
	kindArray
	kindString
	kindNumber
	kindBool
	kindNull
)

// value is one parsed JSON value. Objects keep their members in document
// order so that errors come out in the order a reader meets them.
type value struct {
	kind    kind
	text    string   // kindString: the string; kindNumber: its literal; kindBool: "true" or "false"
	members []member // kindObject
	elems   []*value // kindArray
}

type member struct {
	key string
	val *value
}

// get returns the member named key, or nil.
func (v *value) get(key string) *value {
	for _, m := range v.members {
		if m.key == key {
			return m.val
		}
	}
	return nil
}

// describe says what v is, for "got ..." in error messages.
func (v *value) describe() string {
	switch v.kind {
	case kindObject:
		return "an object"
	case kindArray:
		return "an array"
	case kindString:
		return "string " + quote(v.text)
	case kindNumber:
		return "number " + v.text
	case kindBool:
		return v.text
	}
	return "null"
}

// quote quotes s for a message, shortened if long.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "..."
	}
	return strconv.Quote(s)
}

// readTree parses data as one JSON value. Syntax errors carry a line and
// column; a key repeated within one object is an error at its path.
func readTree(data []byte) (*value, error) {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // editors on Windows add a BOM
	// The decoder would silently turn bytes that are not UTF-8 (a file
	// saved as Latin-1, say) into U+FFFD, mangling names peers must match.
	if off := invalidUTF8(data); off >= 0 {
		line, col := position(data, off)
		return nil, &Error{Line: line, Column: col, Msg: "invalid JSON: not UTF-8 text; save the file as UTF-8"}
	}
	r := &reader{data: data, dec: json.NewDecoder(bytes.NewReader(data))}
	r.dec.UseNumber()
	tok, err := r.dec.Token()
	if err == io.EOF {
		return nil, &Error{Msg: "want a JSON object, got empty input"}
	}
	if err != nil {
		return nil, r.syntaxError(err)
	}
	v, err := r.value(tok, "", 1)
	if err != nil {
		return nil, err
	}
	start := int(r.dec.InputOffset())
	if _, err := r.dec.Token(); err != io.EOF {
		if err != nil {
			return nil, r.syntaxError(err)
		}
		// Token accepts a stream of values; a config is one.
		start += len(data[start:]) - len(bytes.TrimLeft(data[start:], " \t\r\n"))
		line, col := position(data, start)
		return nil, &Error{Line: line, Column: col, Msg: "invalid JSON: unexpected data after the top-level value"}
	}
	return v, nil
}

// invalidUTF8 returns the offset of the first byte of data that is not
// part of a UTF-8 character, or -1.
func invalidUTF8(data []byte) int {
	for off := 0; off < len(data); {
		r, size := utf8.DecodeRune(data[off:])
		if r == utf8.RuneError && size == 1 {
			return off
		}
		off += size
	}
	return -1
}

type reader struct {
	data []byte
	dec  *json.Decoder
}

// value builds the value that starts with tok, found at path.
func (r *reader) value(tok json.Token, path string, depth int) (*value, error) {
	switch t := tok.(type) {
	case string:
		return &value{kind: kindString, text: t}, nil
	case json.Number:
		return &value{kind: kindNumber, text: t.String()}, nil
	case bool:
		return &value{kind: kindBool, text: strconv.FormatBool(t)}, nil
	case nil:
		return &value{kind: kindNull}, nil
	}
	if depth > maxDepth {
		return nil, errf(path, "want at most %d levels of nesting", maxDepth)
	}
	if tok == json.Delim('[') {
		v := &value{kind: kindArray}
		for i := 0; ; i++ {
			tok, err := r.next()
			if err != nil {
				return nil, err
			}
			if tok == json.Delim(']') {
				return v, nil
			}
			e, err := r.value(tok, index(path, i), depth+1)
			if err != nil {
				return nil, err
			}
			v.elems = append(v.elems, e)
		}
	}
	// The decoder hands out only well-formed token sequences, so this is '{'.
	v := &value{kind: kindObject}
	seen := make(map[string]bool)
	for {
		tok, err := r.next()
		if err != nil {
			return nil, err
		}
		if tok == json.Delim('}') {
			return v, nil
		}
		key := tok.(string) // object keys are always strings
		if seen[key] {
			return nil, errf(field(path, key), "duplicate key; want each key once per object")
		}
		seen[key] = true
		if tok, err = r.next(); err != nil {
			return nil, err
		}
		m, err := r.value(tok, field(path, key), depth+1)
		if err != nil {
			return nil, err
		}
		v.members = append(v.members, member{key, m})
	}
}

// next returns the next token; running out of input is a syntax error.
func (r *reader) next() (json.Token, error) {
	tok, err := r.dec.Token()
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return nil, r.syntaxError(err)
	}
	return tok, nil
}

// syntaxError places err at the decoder's position, which after a failed
// Token is the start of the offending token (json.SyntaxError's own
// Offset is not reliable in token mode).
func (r *reader) syntaxError(err error) *Error {
	off := int(r.dec.InputOffset())
	if errors.Is(err, io.ErrUnexpectedEOF) {
		off = len(r.data)
		err = errors.New("unexpected end of input")
	}
	line, col := position(r.data, off)
	return &Error{Line: line, Column: col, Msg: "invalid JSON: " + err.Error(), Err: err}
}

// position turns a byte offset into a 1-based line and column, counting
// columns in characters.
func position(data []byte, off int) (line, col int) {
	off = min(max(off, 0), len(data))
	before := data[:off]
	line = 1 + bytes.Count(before, []byte("\n"))
	lineStart := bytes.LastIndexByte(before, '\n') + 1
	return line, 1 + utf8.RuneCount(before[lineStart:])
}

// field appends an object key to a JSON path: .key for plain names,
// ["key"] for the rest (URLs, paths).
func field(path, key string) string {
	if isIdent(key) {
		if path == "" {
			return key
		}
		return path + "." + key
	}
	return path + "[" + strconv.Quote(key) + "]"
}

// index appends an array index to a JSON path.
func index(path string, i int) string {
	return fmt.Sprintf("%s[%d]", path, i)
}

func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		if c != '_' && !('a' <= c && c <= 'z') && !('A' <= c && c <= 'Z') && (i == 0 || !('0' <= c && c <= '9')) {
			return false
		}
	}
	return true
}
