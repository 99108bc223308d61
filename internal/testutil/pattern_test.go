package testutil

import (
	"crypto/sha256"
	"testing"
)

func TestPatternSum(t *testing.T) {
	for _, n := range []int64{0, 1, 250, 251, 252, 65537, cachedPatternSum - 1, cachedPatternSum, cachedPatternSum + 3} {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i % 251)
		}
		want := sha256.Sum256(b)
		for range 2 { // the second time from the cache, where there is one
			if got := PatternSum(n); got != string(want[:]) {
				t.Fatalf("PatternSum(%d) is not the SHA-256 of the pattern's first %d bytes", n, n)
			}
		}
	}
}

// TestPatternSumCacheBounded guards the soak's memory: sizes drawn at
// random below the cached ones must not pile up in the cache.
func TestPatternSumCacheBounded(t *testing.T) {
	count := func() (n int) {
		patternSums.Range(func(_, _ any) bool { n++; return true })
		return n
	}
	before := count()
	for n := int64(1); n <= 2000; n++ {
		PatternSum(n * 7)
	}
	if after := count(); after != before {
		t.Fatalf("2000 small sizes left %d entries in the cache, want none", after-before)
	}
	// The cache outlives the test (go test -count=2 runs it again), so the
	// large size starts out of it.
	large := int64(cachedPatternSum + 11)
	patternSums.Delete(large)
	before = count()
	PatternSum(large)
	if after := count(); after != before+1 {
		t.Fatalf("a large size left %d entries in the cache, want 1", after-before)
	}
	if _, ok := patternSums.Load(large); !ok {
		t.Fatalf("the large size %d is not in the cache", large)
	}
}
