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

// patternSums caches the sums of large sizes, which tests and the soak
// ask for again and again and which take milliseconds to hash. Smaller
// sizes are hashed each time: the soak draws them at random from over a
// million, and caching every one grew its heap for as long as it ran.
var patternSums sync.Map // size -> SHA-256 of the pattern's first size bytes

// cachedPatternSum is the least size whose sum is cached.
const cachedPatternSum = 2 << 20

// PatternSum is the SHA-256 of the pattern's first n bytes, as a string.
func PatternSum(n int64) string {
	if n < cachedPatternSum {
		return patternSum(n)
	}
	if s, ok := patternSums.Load(n); ok {
		return s.(string)
	}
	s := patternSum(n)
	patternSums.Store(n, s)
	return s
}

func patternSum(n int64) string {
	h := sha256.New()
	io.CopyN(h, &Pattern{}, n)
	return string(h.Sum(nil))
}
