// Package testutil holds helpers for west's tests and for the westsoak
// program: a goroutine-leak check for TestMain and single tests, a count of
// open file descriptors, a fault-injecting TCP relay, and a slog handler
// that writes to t.Log.
//
// It imports only the standard library and no west package, so that the
// in-package tests of tunnel, proxy and node can use it without an import
// cycle. Only _test.go files and cmd/westsoak may import it.
package testutil
