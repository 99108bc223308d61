package tunnel

import "github.com/xtaci/smux"

// OpenRaw opens a stream without sending a header, so tests can send
// whatever bytes they like.
func (s *Session) OpenRaw() (*smux.Stream, error) { return s.mux.OpenStream() }
