package sockio

import (
	"fmt"
	"net"
)

// ShedError is the error of an Accept that failed for want of a file
// descriptor (EMFILE, ENFILE) after ShedListener turned away the clients
// then waiting. Like the error it wraps, it is temporary: the servers
// behind the listener wait and accept again.
type ShedError struct {
	Err     error
	Clients int // turned away
}

func (e *ShedError) Error() string {
	return fmt.Sprintf("%v (clients turned away: %d)", e.Err, e.Clients)
}

func (e *ShedError) Unwrap() error   { return e.Err }
func (e *ShedError) Timeout() bool   { return false }
func (e *ShedError) Temporary() bool { return true }

var _ net.Error = (*ShedError)(nil)
