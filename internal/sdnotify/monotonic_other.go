//go:build !linux

package sdnotify

// reloading has no MONOTONIC_USEC: systemd runs on Linux alone.
func reloading() []string { return []string{"RELOADING=1"} }
