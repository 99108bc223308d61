package config

import "fmt"

// Error is a configuration error. Path names the offending value as a JSON
// path such as `proxy["http://127.0.0.1:9911"]["/px"].ou`; it is empty for
// syntax errors, which give Line and Column instead, and for a document
// that is not an object at all.
type Error struct {
	File   string // the file read, when Load read one
	Path   string
	Msg    string // what was expected and what was found
	Line   int    // 1-based; JSON syntax errors only
	Column int    // 1-based, in characters; JSON syntax errors only
	Err    error  // the underlying error, if any
}

func (e *Error) Error() string {
	// The file is named: an operator may run several wests, and a reload's
	// error reaches the log and /healthz far from the command that started
	// west.
	prefix := "config: "
	if e.File != "" {
		prefix = "config " + e.File + ": "
	}
	switch {
	case e.Path != "":
		return prefix + e.Path + ": " + e.Msg
	case e.Line > 0:
		return fmt.Sprintf("%sline %d, column %d: %s", prefix, e.Line, e.Column, e.Msg)
	}
	return prefix + e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

func errf(path, format string, args ...any) *Error {
	return &Error{Path: path, Msg: fmt.Sprintf(format, args...)}
}
