package proxy

import "syscall"

// icmpErrnosOS: Windows reports a port unreachable as WSAECONNRESET, and
// a time exceeded as WSAENETRESET.
var icmpErrnosOS = []syscall.Errno{syscall.WSAECONNRESET, 10052}
