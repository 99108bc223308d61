package config

import "fmt"

// Error is a configuration error. Path names the offending value as a JSON
// path such as `proxy["http://127.0.0.1:9911"]["/px"].ou`; it is empty for
// syntax errors, which give Line and Column instead, and for a document
// that is not an object at all.
type Error struct {
	Path   string
	Msg    string // what was expected and what was found
	Line   int    // 1-based; JSON syntax errors only
	Column int    // 1-based, in characters; JSON syntax errors only
	Err    error  // the underlying error, if any
}

func (e *Error) Error() string {
	switch {
	case e.Path != "":
		return "config: " + e.Path + ": " + e.Msg
	case e.Line > 0:
		return fmt.Sprintf("config: line %d, column %d: %s", e.Line, e.Column, e.Msg)
	}
	return "config: " + e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

func errf(path, format string, args ...any) *Error {
	return &Error{Path: path, Msg: fmt.Sprintf(format, args...)}
}
