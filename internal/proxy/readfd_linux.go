package proxy

import "github.com/west-tunnel/west/internal/sockio"

// readFD reads the socket once, as a raw system call (see sockio).
func readFD(fd uintptr, p []byte) (int, error) {
	n, errno := sockio.Read(fd, p)
	if errno != 0 {
		return n, errno
	}
	return n, nil
}
