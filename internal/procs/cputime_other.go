//go:build !unix

package procs

import "time"

func cpuTime() time.Duration { return 0 }

func cpuTimeWorks() bool { return false }
