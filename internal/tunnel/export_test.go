package tunnel

import (
	"context"

	"github.com/libp2p/go-yamux/v5"
)

// OpenRaw opens a stream without sending a header, so tests can send
// whatever bytes they like.
func (s *Session) OpenRaw() (*yamux.Stream, error) { return s.mux.OpenStream(context.Background()) }

// MuxStreams is how many streams the multiplexer still tracks.
func (s *Session) MuxStreams() int { return s.mux.NumStreams() }
