package testutil

import (
	"crypto/sha256"
	"io"
	"sync"
)

// Pattern is an endless deterministic byte stream, for bodies whose
// arrival intact is checked against PatternSum. The zero value starts at
// its beginning.
type Pattern struct{ off int64 }

func (p *Pattern) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte((p.off + int64(i)) % 251)
	}
	p.off += int64(len(b))
	return len(b), nil
}

var patternSums sync.Map // size -> SHA-256 of the pattern's first size bytes

// PatternSum is the SHA-256 of the pattern's first n bytes, as a string.
func PatternSum(n int64) string {
	if s, ok := patternSums.Load(n); ok {
		return s.(string)
	}
	h := sha256.New()
	io.CopyN(h, &Pattern{}, n)
	s := string(h.Sum(nil))
	patternSums.Store(n, s)
	return s
}
