package node

import (
	"log/slog"

	"github.com/west-tunnel/west/internal/proxy"
)

// LevelVerbose is the seed's "-v": info plus one line per proxied request.
const LevelVerbose = proxy.LevelAccess

// ReplaceLevelNames is a slog.HandlerOptions.ReplaceAttr that names
// LevelVerbose "VERBOSE" instead of "DEBUG+2".
func ReplaceLevelNames(_ []string, a slog.Attr) slog.Attr {
	if a.Key == slog.LevelKey {
		if l, ok := a.Value.Any().(slog.Level); ok && l == LevelVerbose {
			a.Value = slog.StringValue("VERBOSE")
		}
	}
	return a
}
